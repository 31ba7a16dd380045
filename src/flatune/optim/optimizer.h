// The base optimizer (AdamW with parameter groups), learning-rate schedules and global-norm
// gradient clipping.
#pragma once
#include <torch/torch.h>

#include <functional>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace flatune {

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;

struct AdamWSettings {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Weight decay on norms, biases and embeddings too (off: they form a group without decay).
  bool decay_all = false;
};

// Whether a parameter is exempt from weight decay: norms, biases, embeddings, any 1-D tensor.
bool exempt_from_decay(const std::string& name, const torch::Tensor& p);

// AdamW with two groups (decayed, exempt): torch::optim::AdamW's options and state, its update
// torch.optim.AdamW's computed by the fused multi-tensor kernel (torch.optim.AdamW(fused=True)).
std::unique_ptr<torch::optim::Optimizer> make_adamw(const NamedParams& params, const AdamWSettings& s);

void set_learning_rate(torch::optim::Optimizer& opt, double lr);

// Optimizer state to/from a file (torch archives); a resumed run continues bit-identically.
void save_optimizer_state(const torch::optim::Optimizer& opt, const std::string& path);
void load_optimizer_state(torch::optim::Optimizer& opt, const std::string& path);

struct Schedule {
  std::string kind = "constant";  // constant linear cosine step
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;    // linear/cosine end at base_lr * min_lr_ratio
  int64_t steps_per_epoch = 1;  // step: decay every `decay_every_epochs` epochs
  int64_t decay_every_epochs = 1;
  double gamma = 0.1;
};

// Learning rate for the optimizer step `step` (0-based), as transformers' schedulers compute it
// (warmup: lr·(step/warmup); linear: decays to the floor at total_steps; cosine: half a cosine
// to the floor) and StepLR for `step`: lr·gamma^(epoch / decay_every_epochs).
double learning_rate_at(const Schedule& s, double base_lr, int64_t step);

// Totals a partial sum held by each process (a 0-dim tensor, on the gradients' device) over the
// processes that each hold part of the gradients (sharded gradients). Empty: one process, or
// whole gradients everywhere.
using SumAcross = std::function<torch::Tensor(const torch::Tensor&)>;

// Scales every gradient so their global L2 norm is at most max_norm; returns the norm before, a
// 0-dim float64 tensor on the gradients' device. Nothing waits for the device: the scale is
// applied as a tensor (1 when under the limit), so a training step reads the norm only when it
// logs it.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm,
                             const SumAcross& sum_across = nullptr);
torch::Tensor global_grad_norm(const std::vector<torch::Tensor>& params, const SumAcross& sum_across = nullptr);
// What clipping multiplies every gradient by, as torch.nn.utils.clip_grad_norm_: max_norm /
// (norm + 1e-6) when the norm is finite and above max_norm, else exactly 1 (a non-finite norm
// stops the run later). A 0-dim float64 tensor on the norm's device.
torch::Tensor clip_scale(const torch::Tensor& norm, double max_norm);

// opt.step() with every gradient first multiplied by grad_scale (a 0-dim tensor: clip_scale's;
// undefined: 1), the gradients left scaled as clip_grad_norm leaves them. make_adamw's optimizer
// does it inside its one pass over the gradients instead of a pass of its own (54M float32
// gradients, 2 cores: 7 ms a step), dividing by 1/grad_scale as the fused kernel's grad_scale
// does (an ulp from multiplying, now and then); on the CPU a scale of exactly 1 costs nothing.
void step_with_scaled_grads(torch::optim::Optimizer& opt, const torch::Tensor& grad_scale);

// The sum of the squares of every element of `tensors`, a 0-dim float64 tensor on `device`
// (zero for no tensors). Nothing waits for the device.
torch::Tensor sum_of_squares(const std::vector<torch::Tensor>& tensors, const torch::Device& device);

}  // namespace flatune
