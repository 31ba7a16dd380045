// `flatune train`: fine-tune (or pretrain) into a run folder. The anti-forgetting verbs (fisher,
// merge, wiseft-sweep) are in cmd_retain.cpp.
#include <cstdio>
#include <cstdlib>

#include "commands.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/report/watch.h"
#include "flatune/train/trainer.h"

namespace flatune::cli {

void add_device_option(CLI::App* sub, std::string& spec) {
  sub->add_option("--device", spec, "cpu | cuda | cuda:N (default cpu; under flatune launch, cuda is the rank's GPU)");
}

c10::Device use_device_option(const std::string& spec) {
  const torch::Device device = compat::resolve_device(spec.empty() ? "cpu" : spec);
  compat::set_process_device(device);
  compat::use_device(device);
  return device;
}

void add_train_options(CLI::App* sub, TrainOptions& o) {
  sub->add_option("--model", o.model, "Hugging Face model folder to fine-tune");
  sub->add_option("--init", o.init_config, "config.json of a fresh model to pretrain (with --tokenizer)");
  sub->add_option("--tokenizer", o.tokenizer, "tokenizer folder (default: the model folder)");
  sub->add_option("--data", o.data, "training data file");
  sub->add_option("--format", o.format, "alpaca | sharegpt | metamath | jsonl | text | auto");
  sub->add_option("--template", o.template_name, "alpaca | llama2 | chatml | llama3 | vicuna | plain | auto");
  sub->add_option("--max-length", o.max_length, "tokens per example (text: block size)");
  sub->add_flag("--train-on-prompt", o.train_on_prompt, "loss on every token, not only responses");
  sub->add_flag("--pack", o.pack, "pack several examples into each row");
  sub->add_option("--val-count", o.val_count, "examples held out for validation loss");
  sub->add_option("--lora-rank", o.lora_rank, "LoRA rank (0: full fine-tuning)");
  sub->add_option("--lora-alpha", o.lora_alpha, "LoRA alpha");
  sub->add_option("--lora-dropout", o.lora_dropout, "LoRA dropout");
  sub->add_option("--lora-targets", o.lora_targets,
                  "projections to adapt: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj");
  sub->add_option("--lr", o.lr, "peak learning rate");
  sub->add_option("--weight-decay", o.weight_decay, "AdamW weight decay");
  sub->add_option("--beta1", o.beta1, "AdamW beta1");
  sub->add_option("--beta2", o.beta2, "AdamW beta2");
  sub->add_option("--adam-eps", o.adam_eps, "AdamW epsilon");
  sub->add_flag("--decay-all", o.decay_all, "weight decay on norms, biases and embeddings too");
  sub->add_option("--schedule", o.schedule, "constant | linear | cosine | step");
  sub->add_option("--warmup-steps", o.warmup_steps, "linear warmup steps");
  sub->add_option("--min-lr-ratio", o.min_lr_ratio, "final lr as a share of the peak (linear, cosine)");
  sub->add_option("--step-every-epochs", o.step_every_epochs, "step schedule: decay every N epochs");
  sub->add_option("--step-gamma", o.step_gamma, "step schedule: decay factor");
  sub->add_option("--batch-size", o.batch_size, "examples per micro-batch");
  sub->add_option("--grad-accum", o.grad_accum, "micro-batches per optimizer step");
  sub->add_option("--max-steps", o.max_steps, "optimizer steps (0: from --epochs)");
  sub->add_option("--epochs", o.epochs, "passes over the data");
  sub->add_option("--max-grad-norm", o.max_grad_norm, "global gradient-norm clip (0: off)");
  sub->add_option("--sam", o.sam, "none | sam | asam | looksam | sam-subset");
  sub->add_option("--rho", o.rho, "SAM radius");
  sub->add_option("--asam-eta", o.asam_eta, "ASAM eta");
  sub->add_option("--looksam-k", o.looksam_k, "LookSAM: full SAM step every k steps");
  sub->add_option("--looksam-alpha", o.looksam_alpha, "LookSAM: weight of the reused component");
  sub->add_option("--sam-subset", o.sam_subset, "sam-subset: regexes of parameter names to perturb");
  sub->add_option("--replay", o.replay, "general data to replay during fine-tuning");
  sub->add_option("--replay-ratio", o.replay_ratio, "share of each micro-batch that is replay");
  sub->add_option("--ewc", o.ewc, "Fisher file (flatune fisher) for EWC");
  sub->add_option("--ewc-lambda", o.ewc_lambda, "EWC strength");
  sub->add_option("--l2-base", o.l2_base, "strength of L2 toward the base weights");
  sub->add_flag("--penalty-on-adapters", o.penalty_on_adapters, "with LoRA: penalise adapters, not effective weights");
  sub->add_option("--out", o.out, "run folder");
  sub->add_option("--log-every", o.log_every, "metrics line every N steps");
  sub->add_option("--eval-every", o.eval_every, "validation loss every N steps");
  sub->add_option("--save-every", o.save_every, "checkpoint every N steps (0: only the final model)");
  sub->add_option("--keep-last", o.keep_last, "checkpoints kept");
  sub->add_option("--seed", o.seed, "seed for data order, initialisation and sampling");
  sub->add_flag("--resume", o.resume, "continue from the newest complete checkpoint");
  sub->add_option("--threads", o.threads, "intra-op threads (default: all cores)");
  sub->add_option("--watch", o.watch,
                  "general suites (task files) evaluated during training; scores to watch.csv and metrics.jsonl");
  sub->add_option("--watch-target", o.watch_target, "the target's test (task file), watched with the suites");
  sub->add_option("--watch-every", o.watch_every, "watch every N steps (also at the start and the end; 0: only those)");
  sub->add_option("--watch-categories", o.watch_categories,
                  "YAML {category: [task prefixes]} for the general score (default: the seed paper's four)");
  sub->add_option("--watch-template", o.watch_template, "template for a generative target test (default: raw prompts)");
  sub->add_option("--watch-limit", o.watch_limit, "items per watched suite (0: all)");
  sub->add_option("--watch-batch-size", o.watch_batch_size,
                  "contexts per forward (prompts decoded together) when watching (default: eval's 4)");
  sub->add_option("--watch-max-new-tokens", o.watch_max_new_tokens,
                  "tokens generated per answer of a generative --watch-target (default: eval's 64)");
  sub->add_option("--keep-best", o.keep_best,
                  "keep best/ by a rule: forgetting (least), target (highest score), tradeoff (highest target gain "
                  "with forgetting at most --max-forgetting)");
  sub->add_option("--max-forgetting", o.max_forgetting, "tradeoff: the largest allowed drop of the overall score");
  sub->add_flag("--checkpoint-activations", o.checkpoint_activations,
                "keep only each decoder layer's input and recompute the layer in the backward pass: less memory, "
                "about a third more compute (gradients as without)");
  sub->add_option("--shard", o.shard,
                  "none | optimizer | gradients: under flatune launch, each rank keeps the AdamW state of 1/N of "
                  "the parameters (ZeRO stage 1); gradients: also reduces each gradient to its owner only (stage "
                  "2; not with LookSAM); checkpoints hold one optimizer file per rank");
  sub->add_option("--save-dtype", o.save_dtype, "float32 | bfloat16 for the final weights");
  sub->add_option("--device", o.device,
                  "cpu | cuda | cuda:N (default cpu; under flatune launch, cuda is the rank's GPU): model, optimizer "
                  "state and SAM's perturbation live there");
  sub->add_flag("--bf16", o.bf16,
                "bf16 autocast for the forward passes (matmuls in bf16 on CPUs with AVX512-BF16/AMX, or on the GPU); "
                "weights, gradients, optimizer state and validation stay fp32");
}

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* sub =
      app.add_subcommand("train", "fine-tune a model (full or LoRA, AdamW with the SAM family) or pretrain one");
  add_train_options(sub, *o);
  sub->callback([o] {
    TrainResult r = train(*o, make_watch_hooks(*o));
    // Under `flatune launch` every rank returns the same result: rank 0 reports it.
    const char* rank = std::getenv("RANK");
    if (rank && std::string(rank) != "0") return;
    if (r.already_finished) {
      std::printf(
          "%s: the run is finished (step %lld); final model in %s; a larger --max-steps or --epochs "
          "trains it further\n",
          o->out.c_str(), static_cast<long long>(r.steps), r.final_dir.c_str());
      return;
    }
    if (r.watch_seconds > 0)
      std::printf("watching took %.1f s (%.0f%% of training time, not counted in tokens/s)\n", r.watch_seconds,
                  100.0 * r.watch_seconds / std::max(1e-9, r.train_seconds));
    std::printf("steps %lld  final train loss %.4f%s  %.0f tokens/s  %s\n", static_cast<long long>(r.steps),
                r.final_train_loss,
                r.final_val_loss >= 0 ? (" val loss " + std::to_string(r.final_val_loss)).c_str() : "",
                r.tokens_per_second, r.final_dir.c_str());
  });
}

}  // namespace flatune::cli
