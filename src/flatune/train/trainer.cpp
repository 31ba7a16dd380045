// A training run, read top to bottom as a recipe: set_up() builds the tokenizer, model, data,
// optimizer and schedule; start() resumes or begins; train_step() is one optimizer step;
// train() is the loop with logging, checkpoints and stopping; finish() writes the final model.
// Everything a run writes goes to its run folder.
#include "flatune/train/trainer.h"

#include <cmath>
#include <filesystem>
#include <thread>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/core/log.h"
#include "flatune/core/progress.h"
#include "flatune/core/version.h"
#include "flatune/data/batching.h"
#include "flatune/data/dataset.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/llama.h"
#include "flatune/model/lora.h"
#include "flatune/model/loss.h"
#include "flatune/optim/optimizer.h"
#include "flatune/optim/sam.h"
#include "flatune/retain/penalty.h"
#include "flatune/retain/replay.h"
#include "flatune/train/distributed.h"
#include "flatune/train/resume_check.h"
#include "flatune/train/run_folder.h"
#include "flatune/train/signals.h"
#include "flatune/train/watch_history.h"

namespace flatune {

namespace {

void validate(const TrainOptions& o) {
  if (o.model.empty() == o.init_config.empty())
    fail("--model", "give exactly one of --model DIR and --init CONFIG.json");
  if (!o.init_config.empty() && o.tokenizer.empty())
    fail("--tokenizer", "a model started from --init needs --tokenizer DIR");
  if (o.data.empty()) fail("--data", "no training data given");
  if (o.out.empty()) fail("--out", "no run folder given");
  if (!(o.lr > 0)) fail("--lr", "must be positive");
  if (o.batch_size < 1) fail("--batch-size", "must be at least 1");
  if (o.grad_accum < 1) fail("--grad-accum", "must be at least 1");
  if (o.max_steps <= 0 && !(o.epochs > 0)) fail("--epochs", "give --max-steps or a positive --epochs");
  if (o.max_length != 0 && o.max_length < 2)
    fail("--max-length", "must be at least 2 (0: the model's window, at most 2048)");
  if (o.replay_ratio < 0 || o.replay_ratio >= 1) fail("--replay-ratio", "must be in [0, 1)");
  if (o.replay_ratio > 0 && o.replay.empty()) fail("--replay", "--replay-ratio needs a --replay FILE");
  if (o.save_dtype != "float32" && o.save_dtype != "bfloat16") fail("--save-dtype", "float32 or bfloat16");
  if (o.watch.empty() && (!o.watch_target.empty() || o.watch_every > 0 || !o.keep_best.empty()))
    fail("--watch", "--watch-target, --watch-every and --keep-best need the general suites to watch (--watch FILE...)");
  if (o.watch_every < 0) fail("--watch-every", "must be 0 (start and end only) or positive");
  if (o.watch_batch_size < 0) fail("--watch-batch-size", "must be 0 (evaluation's default) or positive");
  if (o.watch_max_new_tokens < 0) fail("--watch-max-new-tokens", "must be 0 (evaluation's default) or positive");
  check_keep_best(o.keep_best, !o.watch_target.empty());
  if (o.max_forgetting < 0) fail("--max-forgetting", "must be at least 0");
  if (o.shard != "none" && o.shard != "optimizer" && o.shard != "gradients")
    fail("--shard", "unknown sharding '" + o.shard + "' (none, optimizer, gradients)");
  if (o.shard == "gradients" && o.sam == "looksam")
    fail("--shard", "gradients: LookSAM keeps a whole-model vector between steps, which sharded gradients do not give");
}

torch::ScalarType save_dtype(const std::string& s) { return s == "bfloat16" ? torch::kBFloat16 : torch::kFloat32; }

std::vector<Example> load_examples(const std::string& path, const std::string& format, const std::string& tpl,
                                   const TrainOptions& o, const Tokenizer& tok, TokenizeStats* stats) {
  if (format == "text") {
    auto blocks = text_blocks(path, tok, o.max_length);
    stats->examples = static_cast<int64_t>(blocks.size());
    return blocks;
  }
  auto conv = read_conversations(path, format);
  auto ex = tokenize_conversations(conv, tok, {tpl, o.max_length, o.train_on_prompt}, stats);
  if (ex.empty()) fail(path, "no example survives truncation to " + std::to_string(o.max_length) + " tokens");
  return ex;
}

// Mean token loss of examples, no gradient.
double validation_loss(LlamaForCausalLM& model, const std::vector<Example>& val, int64_t batch_size, int64_t pad_id,
                       const Distributed& dist) {
  torch::NoGradGuard ng;
  bool was_training = model->is_training();
  model->eval();
  torch::Tensor sum =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(model->lm_head_weight().device()));
  int64_t count = 0;
  auto [begin, end] = shard_range(static_cast<int64_t>(val.size()), dist.rank, dist.world_size);
  for (int64_t i = begin; i < end; i += batch_size) {
    std::vector<const Example*> ptrs;
    for (int64_t k = i; k < std::min(end, i + batch_size); ++k) ptrs.push_back(&val[k]);
    Batch b = collate(ptrs, pad_id);
    ForwardInput in;
    in.input_ids = b.input_ids;
    in.attention_mask = b.attention_mask;
    auto [s, n] = fused_causal_lm_loss_sum(model, in, b.labels);
    sum += s.detach().to(torch::kDouble);
    count += n;
  }
  model->train(was_training);
  double total_sum = dist.mean(sum.item<double>()) * dist.world_size;
  double total_count = dist.mean(static_cast<double>(count)) * dist.world_size;
  return total_count > 0 ? total_sum / total_count : std::nan("");
}

// Everything a run is made of. Built once by set_up() and never copied: the optimizer and the
// stepper refer to the model's parameters, the closure of a step to the batches.
struct Recipe {
  TrainOptions o;  // as resolved (max_length filled in)
  torch::Device device{torch::kCPU};
  Distributed dist;
  RunFolder run;
  std::string tokenizer_dir;
  std::unique_ptr<Tokenizer> tokenizer;
  LlamaForCausalLM model{nullptr};
  RetainPenalty penalty;
  std::string tpl;
  TokenizeStats stats;
  std::vector<Example> train_set, val_set;
  ReplayMix replay;
  int64_t pad_id = 0;
  int64_t target_per_micro = 0;   // target rows in each micro-batch (the rest is replay)
  int64_t examples_per_step = 0;  // target examples in one optimizer step, over all ranks
  int64_t total_steps = 0;
  std::unique_ptr<DataOrder> order, replay_order;
  std::vector<torch::Tensor> param_tensors;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<SamStepper> stepper;
  Schedule schedule;
  // --shard optimizer: the rank that owns each trainable parameter (holds its AdamW state and
  // steps it); empty when every rank steps everything.
  std::vector<int> owner;
};

// Parameters in order, each to the rank with the fewest bytes so far: deterministic, and within
// one tensor of an even split.
std::vector<int> assign_owners(const std::vector<torch::Tensor>& params, int ranks) {
  std::vector<int64_t> bytes(ranks, 0);
  std::vector<int> owner;
  for (const auto& p : params) {
    const int r = static_cast<int>(std::min_element(bytes.begin(), bytes.end()) - bytes.begin());
    owner.push_back(r);
    bytes[r] += p.nbytes();
  }
  return owner;
}

// After a sharded step each parameter is current only on its owner: every rank broadcasts its
// share, one collective per rank.
void share_stepped_parameters(Recipe& r) {
  for (int root = 0; root < r.dist.world_size; ++root) {
    std::vector<torch::Tensor> owned;
    for (size_t i = 0; i < r.param_tensors.size(); ++i)
      if (r.owner[i] == root) owned.push_back(r.param_tensors[i].detach());
    r.dist.broadcast_from(owned, root);
  }
}

std::string optimizer_file(const Recipe& r) {
  return r.owner.empty() ? "optimizer.pt" : "optimizer.rank-" + std::to_string(r.dist.rank) + ".pt";
}

// Tokenizer, model (and LoRA), and the anti-forgetting penalty, which needs the weights before
// any change and before LoRA freezes them.
void set_up_model(Recipe& r) {
  TrainOptions& o = r.o;
  r.tokenizer_dir = o.tokenizer.empty() ? o.model : o.tokenizer;
  r.tokenizer = load_tokenizer(r.tokenizer_dir);
  r.model = o.init_config.empty() ? load_llama(o.model) : LlamaForCausalLM(load_llama_config(o.init_config));
  if (!o.init_config.empty()) r.model->init_weights(o.seed);
  // On the device before anything keeps a reference to a weight: the penalty's anchors, LoRA
  // (made like the weights), the optimizer's parameters.
  r.model->to(r.device);
  const LlamaConfig& config = r.model->config();
  if (o.max_length == 0) o.max_length = std::min<int64_t>(config.max_position_embeddings, 2048);
  if (o.max_length > config.max_position_embeddings)
    fail("--max-length", std::to_string(o.max_length) + " exceeds the model's max_position_embeddings (" +
                             std::to_string(config.max_position_embeddings) + ")");
  if (config.sliding_window && o.max_length > *config.sliding_window)
    fail("--max-length", "longer than the model's sliding window, which flatune does not implement");
  r.penalty = make_retain_penalty(r.model, o.ewc, o.ewc_lambda, o.l2_base, o.penalty_on_adapters);
  if (o.lora_rank > 0) {
    LoraOptions lo;
    lo.rank = o.lora_rank;
    lo.alpha = o.lora_alpha;
    lo.dropout = o.lora_dropout;
    lo.targets = o.lora_targets;
    r.model->add_lora(lo);
    bind_lora_terms(r.penalty, r.model);
  }
  r.model->set_checkpoint_activations(o.checkpoint_activations);
  r.model->train();
}

// Training, validation and replay examples, and how many of them make one step.
void set_up_data(Recipe& r) {
  const TrainOptions& o = r.o;
  r.tpl = o.format == "text" ? "plain" : resolve_template(o.template_name, *r.tokenizer);
  r.train_set = load_examples(o.data, o.format, r.tpl, o, *r.tokenizer, &r.stats);
  split_validation(r.train_set, r.val_set, o.val_count, o.seed);
  if (r.stats.dropped > 0)
    log_warn(o.data + ": " + std::to_string(r.stats.dropped) + " of " + std::to_string(r.stats.examples) +
             " examples dropped: truncation to " + std::to_string(o.max_length) +
             " tokens would cut away the whole response");
  r.replay = make_replay(o.replay, o.replay_ratio, o.batch_size, [&](const std::string& path) {
    TokenizeStats replay_stats;
    std::string fmt = path.size() > 4 && path.compare(path.size() - 4, 4, ".txt") == 0 ? "text" : "auto";
    return load_examples(path, fmt, r.tpl, o, *r.tokenizer, &replay_stats);
  });
  r.pad_id = r.tokenizer->special().pad_id.value_or(r.tokenizer->special().eos_id.value_or(0));
  r.target_per_micro = o.batch_size - r.replay.per_batch;
  r.examples_per_step = r.target_per_micro * o.grad_accum * r.dist.world_size;
  r.order = std::make_unique<DataOrder>(r.train_set.size(), o.seed);
  if (!r.replay.examples.empty()) r.replay_order = std::make_unique<DataOrder>(r.replay.examples.size(), o.seed + 7919);
}

// AdamW wrapped by the SAM family, with the gradient all-reduce under data parallelism, and the
// learning-rate schedule over the run's steps.
void set_up_optimizer(Recipe& r) {
  const TrainOptions& o = r.o;
  auto params = r.model->trainable_parameters();
  for (auto& [name, p] : params) r.param_tensors.push_back(p);
  NamedParams stepped = params;
  if (o.shard != "none" && r.dist.active()) {
    r.owner = assign_owners(r.param_tensors, r.dist.world_size);
    stepped.clear();
    for (size_t i = 0; i < params.size(); ++i)
      if (r.owner[i] == r.dist.rank) stepped.push_back(params[i]);
    if (stepped.empty()) fail("--shard", "more ranks than trainable parameters to share out");
  }
  r.optimizer = make_adamw(stepped, AdamWSettings{o.lr, o.beta1, o.beta2, o.adam_eps, o.weight_decay, o.decay_all});
  std::function<void()> grad_sync;
  SamShardHooks shard_hooks;
  auto all_grads = [&r] {
    std::vector<torch::Tensor> grads;
    for (auto& p : r.param_tensors) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
    }
    return grads;
  };
  if (r.dist.active() && o.shard == "gradients") {
    // ZeRO stage 2: each parameter's gradient is reduced to its owner only; the norms SAM and
    // clipping need are totalled over the ranks, and the owners share the perturbed weights.
    grad_sync = [&r, all_grads] {
      auto grads = all_grads();
      for (int root = 0; root < r.dist.world_size; ++root) {
        std::vector<torch::Tensor> owned;
        for (size_t i = 0; i < grads.size(); ++i)
          if (r.owner[i] == root) owned.push_back(grads[i]);
        r.dist.reduce_mean_to(owned, root);
      }
    };
    shard_hooks.sum_across = [&r](const torch::Tensor& partial) {
      torch::Tensor sum = partial.clone();
      r.dist.allreduce_sum({sum});
      return sum;
    };
    shard_hooks.share_perturbed = [&r] { share_stepped_parameters(r); };
  } else if (r.dist.active()) {
    grad_sync = [&r, all_grads] { r.dist.allreduce_mean(all_grads()); };
  }
  r.stepper = std::make_unique<SamStepper>(
      params, *r.optimizer, SamSettings{o.sam, o.rho, o.asam_eta, o.looksam_k, o.looksam_alpha, o.sam_subset},
      o.max_grad_norm, grad_sync, shard_hooks);
  const int64_t steps_per_epoch =
      std::max<int64_t>(1, static_cast<int64_t>(r.train_set.size()) / std::max<int64_t>(1, r.examples_per_step));
  r.total_steps = o.max_steps > 0 ? o.max_steps : static_cast<int64_t>(std::ceil(o.epochs * steps_per_epoch));
  r.schedule.kind = o.schedule;
  r.schedule.warmup_steps = o.warmup_steps;
  r.schedule.total_steps = r.total_steps;
  r.schedule.min_lr_ratio = o.min_lr_ratio;
  r.schedule.steps_per_epoch = steps_per_epoch;
  r.schedule.decay_every_epochs = o.step_every_epochs;
  r.schedule.gamma = o.step_gamma;
  learning_rate_at(r.schedule, o.lr, 0);  // rejects an unknown schedule before any work
}

// Fills `r` in place: the closures it holds refer to its members.
void set_up(Recipe& r, const TrainOptions& options) {
  r.o = options;
  validate(r.o);
  r.device = r.o.device.empty() ? compat::process_device() : compat::resolve_device(r.o.device);
  r.o.device = r.device.is_cpu() ? "cpu" : "cuda";
  compat::use_device(r.device);
  r.dist = init_distributed(r.device);
  if (r.o.threads > 0) at::set_num_threads(r.o.threads);
  if (r.o.bf16 && r.device.is_cpu() && !compat::cpu_has_bf16())
    log_warn(
        "--bf16: this CPU has no bf16 instructions (AVX512-BF16, AMX): the numerics are bf16's, the speed will "
        "be lower than fp32");
  r.run = RunFolder{r.o.out};
  torch::manual_seed(r.o.seed);
  set_up_model(r);
  set_up_data(r);
  set_up_optimizer(r);
}

// A checkpoint is the weights (or the adapter), the optimizer state, the SAM family's carried
// state, the RNG and the data position; trainer_state.json, written last, marks it complete.
void save_checkpoint_at(Recipe& r, int64_t step) {
  write_folder_atomic(r.run.checkpoint_dir(step), [&](const std::string& dir) {
    if (r.model->has_lora()) {
      save_lora_adapter(r.model, dir, r.o.model);
    } else {
      write_safetensors(join_path(dir, "model.safetensors"), r.model->weights(), {{"format", "pt"}});
      json cfg = llama_config_to_json(r.model->config());
      cfg["torch_dtype"] = cfg["dtype"] = "float32";  // the fp32 master weights, whatever the base was stored as
      write_file_atomic(join_path(dir, "config.json"), cfg.dump(2) + "\n");
      copy_tokenizer_files(r.tokenizer_dir, dir);
    }
    if (r.owner.empty()) {
      save_optimizer_state(*r.optimizer, join_path(dir, "optimizer.pt"));
    } else {
      // Each rank wrote its share beside the folder (save_checkpoint_everywhere); in it goes.
      for (int rank = 0; rank < r.dist.world_size; ++rank) {
        const std::string name = "optimizer.rank-" + std::to_string(rank) + ".pt";
        std::filesystem::rename(join_path(r.run.checkpoints_dir(), ".step-" + std::to_string(step) + "." + name),
                                join_path(dir, name));
      }
    }
    NamedTensors extra = r.stepper->state();
    extra.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    // LoRA dropout on a GPU draws from that GPU's generator.
    if (!r.device.is_cpu()) extra.emplace_back("rng.device", compat::default_generator(r.device).get_state());
    write_safetensors(join_path(dir, "trainer_tensors.safetensors"), extra);
    json state = {{"step", step},
                  {"epoch", r.order->epoch()},
                  {"position", r.order->position()},
                  {"shard", r.owner.empty() ? "none" : r.o.shard},
                  {"world_size", r.dist.world_size}};
    if (r.replay_order)
      state["replay"] = {{"epoch", r.replay_order->epoch()}, {"position", r.replay_order->position()}};
    write_file_atomic(join_path(dir, "trainer_state.json"), state.dump(2) + "\n");
  });
  prune_checkpoints(r.run, r.o.keep_last);
}

// Rank 0 writes the checkpoint; with sharded optimizer state every rank first writes its share
// beside it, for rank 0 to move in.
void save_checkpoint_everywhere(Recipe& r, int64_t step) {
  if (!r.owner.empty()) {
    if (r.dist.is_main()) make_dirs(r.run.checkpoints_dir());
    r.dist.barrier();
    save_optimizer_state(*r.optimizer,
                         join_path(r.run.checkpoints_dir(), ".step-" + std::to_string(step) + "." + optimizer_file(r)));
    r.dist.barrier();
  }
  if (r.dist.is_main()) save_checkpoint_at(r, step);
  r.dist.barrier();
}

// Loads checkpoint `step` into the recipe; returns the step it holds.
int64_t restore_checkpoint(Recipe& r, int64_t step) {
  std::string dir = r.run.checkpoint_dir(step);
  torch::NoGradGuard ng;
  if (r.model->has_lora()) {
    auto params = r.model->named_parameters(true);
    for (auto& [name, t] : read_safetensors(join_path(dir, "adapter_model.safetensors"))) {
      std::string ours = ours_from_peft_name(name, dir);
      if (!params.contains(ours)) fail(dir, "adapter tensor '" + name + "' does not fit this model");
      params[ours].copy_(t);
    }
  } else {
    r.model->load_weights(read_safetensors(join_path(dir, "model.safetensors")), dir);
  }
  const json state = read_json_file(join_path(dir, "trainer_state.json"));
  const std::string shard = state.value("shard", "none");
  const int world = state.value("world_size", 1);
  if (shard != "none" && (r.owner.empty() || world != r.dist.world_size))
    fail(dir, "its optimizer state is sharded over " + std::to_string(world) + " ranks: resume with --shard " + shard +
                  " under flatune launch --nproc " + std::to_string(world));
  if (shard == "none" && !r.owner.empty()) fail(dir, "its optimizer state is not sharded: resume without --shard");
  load_optimizer_state(*r.optimizer, join_path(dir, optimizer_file(r)));
  NamedTensors sam_state;
  for (auto& [name, t] : read_safetensors(join_path(dir, "trainer_tensors.safetensors"))) {
    if (name == "rng.cpu") {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      gen.set_state(t);
    } else if (name == "rng.device") {
      if (!r.device.is_cpu()) compat::default_generator(r.device).set_state(t);
    } else {
      sam_state.emplace_back(name, t);
    }
  }
  r.stepper->load_state(sam_state, dir);
  r.order->restore(state.at("epoch").get<int64_t>(), state.at("position").get<int64_t>());
  if (r.replay_order && state.contains("replay"))
    r.replay_order->restore(state["replay"].at("epoch").get<int64_t>(), state["replay"].at("position").get<int64_t>());
  return state.at("step").get<int64_t>();
}

// How a run begins: where it continues from, and what --resume changed.
struct Start {
  int64_t step = 0;
  bool finished = false;  // the run is complete and nothing extends it
  int64_t finished_step = 0;
  std::vector<OptionChange> changes;                 // allowed changes of options on resume
  nlohmann::json resumes = nlohmann::json::array();  // earlier resumes' changes, from config.yaml
};

// On --resume: the run's config.yaml against the options given now. Refuses changes that would
// alter what the run computes; a finished run stays finished unless the new length extends it.
void check_resume(const Recipe& r, const json& stored, Start& s) {
  if (stored.is_null()) return;
  if (stored.contains("resumes") && stored["resumes"].is_array()) s.resumes = stored["resumes"];
  const auto* resolved = stored.contains("resolved") ? &stored["resolved"] : nullptr;
  int64_t stored_total = -1;
  if (resolved && resolved->contains("total-steps"))
    stored_total = std::stoll((*resolved)["total-steps"].get<std::string>());
  // A shorter run changes the learning rate of the steps left when the schedule decays toward
  // the last step; under a constant or step schedule it only stops earlier.
  const bool schedule_spans_run = r.o.schedule == "linear" || r.o.schedule == "cosine";
  const bool shorter = stored_total >= 0 && r.total_steps < stored_total;
  std::vector<OptionChange> refused;
  for (auto& c : changed_options(stored, train_options_to_json(r.o))) {
    const bool allowed = change_keeps_result(c.key) || (change_sets_length(c.key) && !(shorter && schedule_spans_run));
    (allowed ? s.changes : refused).push_back(c);
  }
  if (!refused.empty())
    fail(r.run.config_path(), "--resume with options that change the run: " + describe_changes(refused) +
                                  "; resume with the run's options (only a longer run, logging, checkpoint cadence "
                                  "and --threads may change; a shorter one under a constant or step schedule) or "
                                  "choose a new --out");
  if (stored.contains("finished-at-step") && file_exists(join_path(r.run.final_dir(), "config.json"))) {
    s.finished_step = std::stoll(stored["finished-at-step"].get<std::string>());
    s.finished = r.total_steps <= s.finished_step;
  }
}

// Resumes from the newest complete checkpoint or starts at step 0, then gives every rank rank
// 0's weights.
Start start(Recipe& r) {
  Start s;
  if (r.o.resume) {
    check_resume(r, read_run_config(r.run), s);
    if (s.finished) return s;
    if (auto newest = newest_checkpoint(r.run)) {
      s.step = restore_checkpoint(r, *newest);
      log_info("resumed " + r.o.out + " from step " + std::to_string(s.step) +
               (s.changes.empty() ? "" : " with " + describe_changes(s.changes)));
    } else if (s.finished_step > 0) {
      fail(r.o.out,
           "cannot extend the finished run: it has no checkpoint to continue from (trained with --save-every 0)");
    } else {
      log_info(r.o.out + ": no complete checkpoint to resume from; starting at step 0");
      s.changes.clear();
    }
  } else if (r.dist.is_main() && newest_checkpoint(r.run)) {
    fail(r.o.out, "the run folder already has checkpoints; pass --resume to continue it or choose a new --out");
  }
  std::vector<torch::Tensor> all;
  for (auto& p : r.model->parameters()) all.push_back(p.detach());
  r.dist.broadcast(all);
  return s;
}

// config.yaml: the options as resolved, what they resolved to, the changes each resume made,
// and (at the end) the step the run finished at.
json run_config(const Recipe& r, const Start& s) {
  int64_t trainable = 0;
  for (auto& t : r.param_tensors) trainable += t.numel();
  json cfg = train_options_to_json(r.o);
  cfg["resolved"] = {{"template", r.tpl},
                     {"total-steps", r.total_steps},
                     {"train-examples", r.train_set.size()},
                     {"val-examples", r.val_set.size()},
                     {"dropped-examples", r.stats.dropped},
                     {"world-size", r.dist.world_size},
                     {"torch-version", compat::torch_version()},
                     {"flatune-version", flatune_version()},
                     {"threads", at::get_num_threads()},
                     {"device", r.model->parameters().front().device().str()},
                     {"parameters", r.model->config().num_parameters()},
                     {"trainable-parameters", trainable}};
  json resumes = s.resumes;
  if (!s.changes.empty()) resumes.push_back({{"at-step", s.step}, {"changed", changes_to_json(s.changes)}});
  if (!resumes.empty()) cfg["resumes"] = resumes;
  return cfg;
}

// One step's micro-batches on this rank: its share of the step's target examples, each
// micro-batch topped up with replayed general examples.
struct StepBatches {
  std::vector<Batch> batches;
  int64_t label_tokens = 0, tokens = 0;
};

StepBatches next_batches(Recipe& r) {
  const TrainOptions& o = r.o;
  const Distributed& dist = r.dist;
  auto idx = r.order->take(static_cast<size_t>(r.examples_per_step));
  StepBatches s;
  for (int64_t m = 0; m < o.grad_accum; ++m) {
    std::vector<const Example*> ptrs;
    int64_t base = (m * dist.world_size + dist.rank) * r.target_per_micro;
    for (int64_t k = 0; k < r.target_per_micro; ++k) ptrs.push_back(&r.train_set[idx[base + k]]);
    if (r.replay_order) {
      const int64_t per_batch = r.replay.per_batch;
      auto ridx = r.replay_order->take(static_cast<size_t>(per_batch * dist.world_size));
      for (int64_t k = 0; k < per_batch; ++k) ptrs.push_back(&r.replay.examples[ridx[dist.rank * per_batch + k]]);
    }
    Batch b = o.pack ? collate_packed(ptrs, o.max_length, r.pad_id) : collate(ptrs, r.pad_id);
    s.label_tokens += b.label_tokens;
    s.tokens += b.tokens;
    s.batches.push_back(std::move(b));
  }
  return s;
}

struct StepOutcome {
  StepStats stats;
  double tokens = 0;         // non-padding tokens of the step, all ranks
  double replay_loss = NAN;  // mean token loss of the replayed rows (first pass), when logged
};

// One optimizer step: forward and backward over the micro-batches (twice for SAM), the penalty,
// the all-reduce, the AdamW update. A non-finite loss or gradient stops the run.
StepOutcome train_step(Recipe& r, int64_t step, double lr) {
  const TrainOptions& o = r.o;
  const Distributed& dist = r.dist;
  set_learning_rate(*r.optimizer, lr);
  StepBatches sb = next_batches(r);
  // Every rank scales its loss so that the all-reduced mean gradient is the gradient of the
  // mean token loss over the whole step, as one process with the whole batch would compute.
  const double global_labels = dist.mean(static_cast<double>(sb.label_tokens)) * dist.world_size;
  const double scale = dist.world_size / std::max(1.0, global_labels);
  const int64_t replay_rows = r.replay.per_batch;
  bool first_pass = true;
  // The losses stay on the model's device as float64 sums; SamStepper reads them once, at the
  // end of the step, with the other logged numbers. (The label counts above and the replay rows'
  // counts come from the CPU-side labels: no wait for the device.)
  const auto on_model = torch::TensorOptions().dtype(torch::kDouble).device(r.device);
  torch::Tensor replay_sum = torch::zeros({}, on_model);
  int64_t replay_count = 0;
  auto closure = [&]() -> torch::Tensor {
    torch::Tensor loss_sum = torch::zeros({}, on_model);
    for (const auto& b : sb.batches) {
      ForwardInput in;
      in.input_ids = b.input_ids;
      in.position_ids = b.position_ids;
      if (o.pack) in.segment_ids = b.segment_ids;
      else in.attention_mask = b.attention_mask;
      const bool log_replay = first_pass && replay_rows > 0 && !o.pack;
      torch::Tensor per_token, sum;
      {
        compat::Bf16Autocast autocast(o.bf16, r.device.type());
        sum = fused_causal_lm_loss_sum(r.model, in, b.labels, log_replay ? &per_token : nullptr).first;
      }
      if (log_replay) {
        // The replayed rows are the last ones of each micro-batch: their loss, for the log.
        const int64_t first = b.labels.size(0) - replay_rows;
        replay_sum += per_token.narrow(0, first, replay_rows).sum().to(torch::kDouble);
        auto replay_labels = b.labels.narrow(0, first, replay_rows).narrow(1, 1, b.labels.size(1) - 1);
        replay_count += (replay_labels != -100).sum().item<int64_t>();
      }
      (sum * scale).backward();
      loss_sum += sum.detach().to(torch::kDouble);
    }
    first_pass = false;
    torch::Tensor loss = loss_sum * scale / dist.world_size;
    if (r.penalty.active()) {
      auto p = r.penalty.value(r.model);
      if (p.requires_grad()) p.backward();  // not in sam-subset's first pass if no penalised weight is perturbed
      // Every process adds the whole penalty and the logged loss is summed over processes
      // below: count it once. (Its gradient is counted once already: gradients are averaged.)
      loss += p.detach().to(torch::kDouble) / dist.world_size;
    }
    return loss;
  };
  StepOutcome out;
  out.stats = r.stepper->step(closure);
  if (!r.owner.empty()) share_stepped_parameters(r);
  out.stats.loss = dist.mean(out.stats.loss) * dist.world_size;
  if (!std::isfinite(out.stats.loss) || !std::isfinite(out.stats.grad_norm)) {
    auto last = newest_checkpoint(r.run);
    const bool nan = std::isnan(out.stats.loss) || std::isnan(out.stats.grad_norm);
    fail("step " + std::to_string(step + 1),
         std::string("loss or gradient is ") + (nan ? "NaN" : "infinite") +
             "; stopping (last good checkpoint: " + (last ? r.run.checkpoint_dir(*last) : std::string("none")) + ")");
  }
  if (out.stats.second_pass) out.stats.perturbed_loss = dist.mean(out.stats.perturbed_loss) * dist.world_size;
  out.tokens = dist.mean(static_cast<double>(sb.tokens)) * dist.world_size;
  if (replay_count > 0) out.replay_loss = replay_sum.item<double>() / static_cast<double>(replay_count);
  return out;
}

// The final model as a Hugging Face folder (LoRA merged, plus the adapter on its own).
void finish(Recipe& r) {
  if (r.dist.is_main()) {
    save_checkpoint(r.run.final_dir(), llama_config_to_json(r.model->config()), r.model->weights(/*merge_lora=*/true),
                    SaveOptions{save_dtype(r.o.save_dtype), 0}, r.tokenizer_dir);
    if (r.model->has_lora()) save_lora_adapter(r.model, join_path(r.run.final_dir(), "adapter"), r.o.model);
  }
  r.dist.barrier();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

json train_options_to_json(const TrainOptions& o) {
  return {{"model", o.model},
          {"init", o.init_config},
          {"tokenizer", o.tokenizer},
          {"data", o.data},
          {"format", o.format},
          {"template", o.template_name},
          {"max-length", o.max_length},
          {"train-on-prompt", o.train_on_prompt},
          {"pack", o.pack},
          {"val-count", o.val_count},
          {"lora-rank", o.lora_rank},
          {"lora-alpha", o.lora_alpha},
          {"lora-dropout", o.lora_dropout},
          {"lora-targets", o.lora_targets},
          {"lr", o.lr},
          {"weight-decay", o.weight_decay},
          {"beta1", o.beta1},
          {"beta2", o.beta2},
          {"adam-eps", o.adam_eps},
          {"decay-all", o.decay_all},
          {"schedule", o.schedule},
          {"warmup-steps", o.warmup_steps},
          {"min-lr-ratio", o.min_lr_ratio},
          {"step-every-epochs", o.step_every_epochs},
          {"step-gamma", o.step_gamma},
          {"batch-size", o.batch_size},
          {"grad-accum", o.grad_accum},
          {"max-steps", o.max_steps},
          {"epochs", o.epochs},
          {"max-grad-norm", o.max_grad_norm},
          {"sam", o.sam},
          {"rho", o.rho},
          {"asam-eta", o.asam_eta},
          {"looksam-k", o.looksam_k},
          {"looksam-alpha", o.looksam_alpha},
          {"sam-subset", o.sam_subset},
          {"replay", o.replay},
          {"replay-ratio", o.replay_ratio},
          {"ewc", o.ewc},
          {"ewc-lambda", o.ewc_lambda},
          {"l2-base", o.l2_base},
          {"penalty-on-adapters", o.penalty_on_adapters},
          {"out", o.out},
          {"log-every", o.log_every},
          {"eval-every", o.eval_every},
          {"save-every", o.save_every},
          {"keep-last", o.keep_last},
          {"seed", o.seed},
          {"threads", o.threads},
          {"device", o.device},
          {"bf16", o.bf16},
          {"checkpoint-activations", o.checkpoint_activations},
          {"shard", o.shard},
          {"save-dtype", o.save_dtype},
          {"watch", o.watch},
          {"watch-target", o.watch_target},
          {"watch-categories", o.watch_categories},
          {"watch-template", o.watch_template},
          {"watch-every", o.watch_every},
          {"watch-limit", o.watch_limit},
          {"watch-batch-size", o.watch_batch_size},
          {"watch-max-new-tokens", o.watch_max_new_tokens},
          {"keep-best", o.keep_best},
          {"max-forgetting", o.max_forgetting}};
}

namespace {

// The steps watched so far and the time they took (apart from training time).
struct WatchLog {
  std::vector<WatchRow> rows;
  double seconds = 0;
};

bool watching(const TrainOptions& o) { return !o.watch.empty(); }

bool watch_due(const TrainOptions& o, int64_t step, int64_t total_steps) {
  return watching(o) && (step == 0 || step == total_steps || (o.watch_every > 0 && step % o.watch_every == 0));
}

// The general suites (and the target test) on the current weights, in eval mode and without
// gradients, then back to training; the row goes to watch.csv and metrics.jsonl, and best/ is
// rewritten when the step is the best by --keep-best.
void watch_now(Recipe& r, const TrainHooks& hooks, WatchLog& log, int64_t step, MetricsLog* metrics) {
  const auto t0 = std::chrono::steady_clock::now();
  WatchScore score;
  {
    torch::NoGradGuard no_grad;
    r.model->eval();
    score = step == 0 && hooks.start_score ? *hooks.start_score : hooks.watch(r.model, r.dist);
    r.model->train();
  }
  const double seconds = seconds_since(t0);
  log.seconds += seconds;
  log.rows.push_back(make_watch_row(step, score, seconds, log.rows.empty() ? nullptr : &log.rows.front()));
  if (!r.dist.is_main()) return;
  const WatchRow& row = log.rows.back();
  write_watch_csv(r.run.watch_csv_path(), log.rows);
  json line = {
      {"step", step},       {"event", "watch"},        {"overall", row.score.overall}, {"forgetting", row.forgetting},
      {"seconds", seconds}, {"scores", json::object()}};
  if (row.score.target) {
    line["target"] = *row.score.target;
    line["target_gain"] = row.target_gain;
  }
  for (const auto& [name, v] : row.score.columns) line["scores"][name] = v;
  metrics->write(line);
  if (r.o.keep_best.empty()) return;
  auto best = choose_best(log.rows, r.o.keep_best, r.o.max_forgetting);
  if (!best || log.rows[best->index].step != step) return;
  json why = {{"rule", r.o.keep_best},
              {"step", step},
              {"why", best->why},
              {"overall", row.score.overall},
              {"forgetting", row.forgetting}};
  if (r.o.keep_best == "tradeoff") why["max_forgetting"] = r.o.max_forgetting;
  if (row.score.target) {
    why["target"] = *row.score.target;
    why["target_gain"] = row.target_gain;
  }
  write_folder_atomic(r.run.best_dir(), [&](const std::string& dir) {
    save_checkpoint(dir, llama_config_to_json(r.model->config()), r.model->weights(/*merge_lora=*/true),
                    SaveOptions{save_dtype(r.o.save_dtype), 0}, r.tokenizer_dir);
    write_file_atomic(join_path(dir, "best.json"), why.dump(2) + "\n");
  });
}

// One metrics.jsonl line and the progress bar's status for a step. Throughput counts training
// time only (watching is reported apart).
void log_step(Recipe& r, MetricsLog* metrics, Progress& progress, const StepOutcome& out, int64_t step, double lr,
              double tokens_done, double train_seconds, TrainResult& result) {
  const TrainOptions& o = r.o;
  json line = {{"step", step},
               {"loss", out.stats.loss},
               {"lr", lr},
               {"grad_norm", out.stats.grad_norm},
               {"tokens", tokens_done},
               {"tokens_per_s", tokens_done / train_seconds},
               {"epoch", r.order->epoch()}};
  if (!std::isnan(out.replay_loss)) line["replay_loss"] = out.replay_loss;
  if (out.stats.second_pass) {
    line["perturbed_loss"] = out.stats.perturbed_loss;
    line["e_norm"] = out.stats.e_norm;
  }
  if (o.eval_every > 0 && !r.val_set.empty() && (step % o.eval_every == 0 || step == r.total_steps))
    line["val_loss"] = result.final_val_loss = validation_loss(r.model, r.val_set, o.batch_size, r.pad_id, r.dist);
  if (metrics && (step % std::max<int64_t>(1, o.log_every) == 0 || line.contains("val_loss") || step == r.total_steps))
    metrics->write(line);
  char status[96];
  std::snprintf(status, sizeof status, "loss %.4f lr %.2e %.0f tok/s", out.stats.loss, lr, tokens_done / train_seconds);
  progress.update(step, status);
}

// The signal any rank got (the first rank's), so that every rank stops at the same step.
int agreed_stop_signal(const Distributed& dist, const StopRequest& stop) {
  for (double sig : dist.all_gather(static_cast<double>(stop.signal())))
    if (sig != 0) return static_cast<int>(sig);
  return 0;
}

Interrupted interrupted(const Recipe& r, int sig, int64_t step) {
  const std::string what = "interrupted by " + signal_name(sig) + " at step " + std::to_string(step) + " of " +
                           std::to_string(r.total_steps);
  if (!r.dist.is_main()) return Interrupted(sig, "rank " + std::to_string(r.dist.rank) + ": " + what);
  return Interrupted(
      sig, what + "; saved " + r.run.checkpoint_dir(step) + "; to continue, run the same command with --resume");
}

}  // namespace

TrainResult train(const TrainOptions& options, const TrainHooks& hooks) {
  Recipe r;
  set_up(r, options);
  const TrainOptions& o = r.o;
  if (watching(o) && !hooks.watch) fail("--watch", "this caller of train() cannot evaluate during training");
  Start begun = start(r);
  TrainResult result;
  if (begun.finished) {
    result.already_finished = true;
    result.steps = begun.finished_step;
    result.final_dir = r.run.final_dir();
    return result;
  }
  int64_t step = begun.step;
  json config = run_config(r, begun);
  std::unique_ptr<MetricsLog> metrics;
  if (r.dist.is_main()) {
    make_dirs(o.out);
    write_file_atomic(r.run.config_path(), json_to_yaml(config));
    metrics = std::make_unique<MetricsLog>(r.run.metrics_path(), /*truncate_after_step=*/true, step);
    if (!begun.changes.empty())
      metrics->write({{"step", step}, {"event", "resume"}, {"changed", changes_to_json(begun.changes)}});
  }
  // A resumed run keeps the watch history up to its checkpoint, so that it ends with the
  // watch.csv an uninterrupted run writes.
  WatchLog watch;
  if (watching(o)) watch.rows = read_watch_csv(r.run.watch_csv_path(), step);
  if (watching(o) && (watch.rows.empty() || watch.rows.back().step < step) && watch_due(o, step, r.total_steps))
    watch_now(r, hooks, watch, step, metrics.get());

  // From here a signal stops the run at the end of a step, with a checkpoint; every rank stops
  // at the same step.
  StopRequest stop;
  Progress progress("train", r.total_steps, "step");
  double tokens_done = 0, last_loss = std::nan("");
  const auto started = std::chrono::steady_clock::now();
  const double watched_before = watch.seconds;
  auto train_seconds = [&] { return std::max(1e-9, seconds_since(started) - (watch.seconds - watched_before)); };
  while (step < r.total_steps) {
    const double lr = learning_rate_at(r.schedule, o.lr, step);
    StepOutcome out = train_step(r, step, lr);
    ++step;
    tokens_done += out.tokens;
    last_loss = out.stats.loss;
    log_step(r, metrics.get(), progress, out, step, lr, tokens_done, train_seconds(), result);
    if (watch_due(o, step, r.total_steps)) watch_now(r, hooks, watch, step, metrics.get());
    const int stop_signal = agreed_stop_signal(r.dist, stop);
    // The run's last step is checkpointed too, so that a longer run can continue from it.
    const bool last = step == r.total_steps && o.save_every > 0;
    if ((o.save_every > 0 && step % o.save_every == 0) || last || stop_signal != 0) {
      save_checkpoint_everywhere(r, step);
    }
    if (stop_signal != 0) throw interrupted(r, stop_signal, step);
  }
  progress.finish();

  if (!r.val_set.empty() && result.final_val_loss < 0)
    result.final_val_loss = validation_loss(r.model, r.val_set, o.batch_size, r.pad_id, r.dist);
  finish(r);
  if (r.dist.is_main()) {
    config["finished-at-step"] = step;
    write_file_atomic(r.run.config_path(), json_to_yaml(config));
  }
  result.steps = step;
  result.final_train_loss = last_loss;
  result.wall_seconds = seconds_since(started);
  result.train_seconds = train_seconds();
  result.watch_seconds = watch.seconds;
  result.tokens_per_second = tokens_done / result.train_seconds;
  result.final_dir = r.run.final_dir();
  return result;
}

}  // namespace flatune

namespace flatune {

void set_train_option(TrainOptions& o, const std::string& key, const std::string& value) {
  auto num = [&](double* out) {
    try {
      size_t used = 0;
      *out = std::stod(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::exception&) { fail(key, "expected a number, got '" + value + "'"); }
  };
  auto integer = [&](int64_t* out) {
    double d = 0;
    num(&d);
    if (d != std::floor(d)) fail(key, "expected a whole number, got '" + value + "'");
    *out = static_cast<int64_t>(d);
  };
  auto flag = [&](bool* out) {
    if (value == "true" || value == "1" || value == "yes") *out = true;
    else if (value == "false" || value == "0" || value == "no") *out = false;
    else fail(key, "expected true or false, got '" + value + "'");
  };
  auto list = [&](std::vector<std::string>* out) {
    out->clear();
    std::string cur;
    for (char c : value + ",") {
      if (c == ',' || c == ' ') {
        if (!cur.empty()) out->push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
  };
  int64_t i64 = 0;
  double d = 0;
  if (key == "model") o.model = value;
  else if (key == "init") o.init_config = value;
  else if (key == "tokenizer") o.tokenizer = value;
  else if (key == "data") o.data = value;
  else if (key == "format") o.format = value;
  else if (key == "template") o.template_name = value;
  else if (key == "max-length") integer(&o.max_length);
  else if (key == "train-on-prompt") flag(&o.train_on_prompt);
  else if (key == "pack") flag(&o.pack);
  else if (key == "val-count") integer(&o.val_count);
  else if (key == "lora-rank") integer(&o.lora_rank);
  else if (key == "lora-alpha") num(&o.lora_alpha);
  else if (key == "lora-dropout") num(&o.lora_dropout);
  else if (key == "lora-targets") list(&o.lora_targets);
  else if (key == "lr") num(&o.lr);
  else if (key == "weight-decay") num(&o.weight_decay);
  else if (key == "beta1") num(&o.beta1);
  else if (key == "beta2") num(&o.beta2);
  else if (key == "adam-eps") num(&o.adam_eps);
  else if (key == "decay-all") flag(&o.decay_all);
  else if (key == "schedule") o.schedule = value;
  else if (key == "warmup-steps") integer(&o.warmup_steps);
  else if (key == "min-lr-ratio") num(&o.min_lr_ratio);
  else if (key == "step-every-epochs") integer(&o.step_every_epochs);
  else if (key == "step-gamma") num(&o.step_gamma);
  else if (key == "batch-size") integer(&o.batch_size);
  else if (key == "grad-accum") integer(&o.grad_accum);
  else if (key == "max-steps") integer(&o.max_steps);
  else if (key == "epochs") num(&o.epochs);
  else if (key == "max-grad-norm") num(&o.max_grad_norm);
  else if (key == "sam") o.sam = value;
  else if (key == "rho") num(&o.rho);
  else if (key == "asam-eta") num(&o.asam_eta);
  else if (key == "looksam-k") integer(&o.looksam_k);
  else if (key == "looksam-alpha") num(&o.looksam_alpha);
  else if (key == "sam-subset") list(&o.sam_subset);
  else if (key == "replay") o.replay = value;
  else if (key == "replay-ratio") num(&o.replay_ratio);
  else if (key == "ewc") o.ewc = value;
  else if (key == "ewc-lambda") num(&o.ewc_lambda);
  else if (key == "l2-base") num(&o.l2_base);
  else if (key == "penalty-on-adapters") flag(&o.penalty_on_adapters);
  else if (key == "log-every") integer(&o.log_every);
  else if (key == "eval-every") integer(&o.eval_every);
  else if (key == "save-every") integer(&o.save_every);
  else if (key == "keep-last") integer(&o.keep_last);
  else if (key == "seed") {
    integer(&i64);
    o.seed = static_cast<uint64_t>(i64);
  } else if (key == "threads") {
    integer(&i64);
    o.threads = static_cast<int>(i64);
  } else if (key == "save-dtype") o.save_dtype = value;
  else if (key == "device") o.device = value;
  else if (key == "bf16") flag(&o.bf16);
  else if (key == "checkpoint-activations") flag(&o.checkpoint_activations);
  else if (key == "shard") o.shard = value;
  else if (key == "watch") list(&o.watch);
  else if (key == "watch-target") o.watch_target = value;
  else if (key == "watch-categories") o.watch_categories = value;
  else if (key == "watch-template") o.watch_template = value;
  else if (key == "watch-every") integer(&o.watch_every);
  else if (key == "watch-limit") integer(&o.watch_limit);
  else if (key == "watch-batch-size") integer(&o.watch_batch_size);
  else if (key == "watch-max-new-tokens") integer(&o.watch_max_new_tokens);
  else if (key == "keep-best") o.keep_best = value;
  else if (key == "max-forgetting") num(&o.max_forgetting);
  else fail(key, "unknown training option");
  (void)d;
}

}  // namespace flatune
