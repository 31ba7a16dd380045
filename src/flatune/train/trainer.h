// The training run, from settings to final model: data, model (a Hugging Face folder, or fresh
// from a config for pretraining), AdamW wrapped by the SAM family, the loop with accumulation,
// clipping, schedules, validation, checkpoints that survive a crash, resume, and the final
// model. One function, readable top to bottom in trainer.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>
#include "flatune/model/llama.h"
#include "flatune/train/distributed.h"
#include "flatune/train/watch_history.h"

namespace flatune {

struct TrainOptions {
  // Model: a folder to fine-tune, or a config.json to start from scratch (then `tokenizer`).
  std::string model;
  std::string init_config;
  std::string tokenizer;  // defaults to the model folder

  // Data.
  std::string data;
  std::string format = "auto";  // alpaca sharegpt metamath jsonl text auto
  std::string template_name = "auto";
  int64_t max_length = 0;        // 0: the model's window, at most 2048
  bool train_on_prompt = false;  // loss on every token, not only responses
  bool pack = false;
  double val_fraction = 0.0;
  int64_t val_count = 0;

  // LoRA (rank 0: full fine-tuning).
  int64_t lora_rank = 0;
  double lora_alpha = 16;
  double lora_dropout = 0.0;
  std::vector<std::string> lora_targets = {"q_proj", "v_proj"};

  // Optimisation.
  double lr = 2e-5;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  bool decay_all = false;           // weight decay on norms, biases and embeddings too
  std::string schedule = "cosine";  // constant linear cosine step
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;
  int64_t step_every_epochs = 1;  // `step` schedule
  double step_gamma = 0.1;
  int64_t batch_size = 8;  // examples per micro-batch
  int64_t grad_accum = 1;
  int64_t max_steps = 0;  // 0: from epochs
  double epochs = 1;
  double max_grad_norm = 1.0;  // 0: off

  // SAM family.
  std::string sam = "none";  // none sam asam looksam sam-subset
  double rho = 0.05;
  double asam_eta = 0.01;
  int64_t looksam_k = 5;
  double looksam_alpha = 0.7;
  std::vector<std::string> sam_subset;  // parameter-name patterns

  // Anti-forgetting (retain/).
  std::string replay;
  double replay_ratio = 0.0;
  std::string ewc;  // Fisher file
  double ewc_lambda = 0.0;
  double l2_base = 0.0;
  bool penalty_on_adapters = false;  // with LoRA: penalties on adapters instead of effective weights

  // Run.
  std::string out;
  int64_t log_every = 1;
  int64_t eval_every = 0;
  int64_t save_every = 0;  // 0: only the final model
  int64_t keep_last = 2;
  uint64_t seed = 1;
  bool resume = false;
  int threads = 0;
  // cpu, cuda or cuda:N (under `flatune launch`, cuda is cuda:$LOCAL_RANK): where the model, the
  // optimizer state, SAM's perturbation and the penalties' anchors live. Empty: the process's
  // device (compat::process_device(), the CPU unless a verb's --device set it). Resolved, it is
  // recorded as its kind (cpu, cuda): ranks on different GPUs train one run.
  std::string device;
  bool bf16 = false;  // bf16 autocast for the forward passes; weights, gradients and optimizer in fp32
  bool checkpoint_activations = false;
  // "optimizer": ZeRO stage 1 under `flatune launch`: each rank keeps the AdamW state of its share
  // of the parameters (about 1/N of it), steps that share and broadcasts it to the others.
  // "gradients": stage 2: besides, each gradient is reduced to its owner only.
  std::string shard = "none";  // recompute each decoder layer in the backward pass (memory for time)
  std::string save_dtype = "float32";

  // Forgetting watched during training (the evaluation comes through TrainHooks): the general
  // suites, the target's test, the category grouping, how often, and which step is kept as best/.
  std::vector<std::string> watch;
  std::string watch_target;
  std::string watch_categories;      // YAML {category: [task prefixes]}; default: the seed paper's four
  std::string watch_template;        // template for a generative target test ("": raw prompts)
  int64_t watch_every = 0;           // 0: at the start and the end only
  int64_t watch_limit = 0;           // items per suite (0: all)
  int64_t watch_batch_size = 0;      // contexts (or prompts generated together) per forward; 0: evaluation's default
  int64_t watch_max_new_tokens = 0;  // generative target test: tokens per answer; 0: evaluation's default
  std::string keep_best;             // "" | forgetting | target | tradeoff
  double max_forgetting = 0.0;       // tradeoff: the largest allowed drop of the overall general score
};

// What train() cannot do itself. train/ does not depend on eval/, so the evaluation a watch
// runs comes from the caller (report/watch.h makes it from the options).
struct TrainHooks {
  // Scores the live model (in eval mode, without gradients) on the watched suites; every rank
  // calls it and must get the same scores.
  std::function<WatchScore(LlamaForCausalLM& model, const Distributed& dist)> watch;
  // The step-0 score when the caller has it already (an experiment's runs all start from the
  // same before model): train() writes it as step 0's row instead of evaluating again.
  std::optional<WatchScore> start_score;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0, final_val_loss = -1;
  double wall_seconds = 0;
  double tokens_per_second = 0;
  std::string final_dir;
  double train_seconds = 0;       // wall_seconds without the watches: what tokens_per_second divides by
  double watch_seconds = 0;       // time the watches took (step 0's included)
  bool already_finished = false;  // --resume of a run that had finished: nothing was trained
};

// Runs (or resumes) a training run into options.out. Errors a user can cause are
// flatune::Error; a NaN/Inf loss stops the run naming the step, keeping the last checkpoint.
// SIGINT/SIGTERM save a checkpoint at the end of the step and throw Interrupted; --resume
// refuses options that would change what the run computes (see resume_check.h).
TrainResult train(const TrainOptions& options, const TrainHooks& hooks = {});

// The resolved settings as JSON (what config.yaml holds).
nlohmann::json train_options_to_json(const TrainOptions& o);

}  // namespace flatune

namespace flatune {
// Sets one option by its long flag name ("lr", "sam", "lora-rank", …) from text, as the CLI and
// YAML files spell them. Unknown names and unparsable values are errors naming the key.
void set_train_option(TrainOptions& o, const std::string& key, const std::string& value);
}  // namespace flatune
