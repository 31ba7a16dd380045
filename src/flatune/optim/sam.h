// The SAM family as one wrapper around any base optimizer.
//
// One optimizer step is `step(closure)`. The closure runs forward and backward over all the
// micro-batches of the step (accumulating .grad, already scaled by the caller so the sum is the
// mean gradient) and returns the mean loss as a 0-dim tensor. Norms, scales and the
// perturbation stay tensors on the parameters' device: a step waits for the device once, at its
// end, to read the numbers StepStats reports. What is perturbed: every trainable parameter the
// wrapper was given (for `sam-subset`, those whose name matches a pattern), along the gradient
// of the whole objective the closure computes (penalties such as EWC or L2 included).
//   none        g(w), base step.
//   sam         e = rho * g / ||g||; gradient at w + e; restore w exactly; base step with it
//               (Foret et al. 2021).
//   asam        e = rho * T^2 g / ||T g||, T = |w| + eta, elementwise (Kwon et al. 2021).
//   looksam     every k-th step a full SAM step that also keeps g_v = g_s - (g_s.g / ||g||^2) g,
//               the part of the SAM gradient g_s orthogonal to g; in between one pass, stepping
//               with g + alpha * (||g|| / ||g_v||) * g_v (Liu et al. 2022; one global projection).
//   sam-subset  sam, perturbing only the selected parameters; all are stepped. The first pass
//               differentiates the selected ones only: the closure sees the others with
//               requires_grad off there (their first-pass gradient would be thrown away).
// Clipping applies to the gradient that is stepped; grad_norm is its norm before clipping.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <regex>
#include <string>
#include <vector>

#include "flatune/io/safetensors.h"
#include "flatune/optim/optimizer.h"

namespace flatune {

struct SamSettings {
  std::string kind = "none";  // none sam asam looksam sam-subset
  double rho = 0.05;
  double eta = 0.01;                // asam
  int64_t k = 5;                    // looksam: full SAM step every k steps
  double alpha = 0.7;               // looksam
  std::vector<std::string> subset;  // sam-subset: ECMAScript regexes matched against whole names
};

struct StepStats {
  double loss = 0;
  double perturbed_loss = std::nan("");  // NaN on steps without a second pass
  double e_norm = 0;
  double grad_norm = 0;  // of the stepped gradient, before clipping
  double lr = 0;         // of the base optimizer's first group, as stepped
  bool second_pass = false;
};

// With sharded gradients (ZeRO stage 2) each process holds the gradients of its share of the
// parameters only (zeros elsewhere): every norm and dot product is a partial sum that
// `sum_across` totals over the processes, and after the perturbation `share_perturbed` gives every
// process the perturbed weights their owners computed. Empty: one process, or whole gradients.
struct SamShardHooks {
  SumAcross sum_across;
  std::function<void()> share_perturbed;
};

class SamStepper {
 public:
  // grad_sync runs after every backward pass (data parallel all-reduce); may be empty.
  SamStepper(NamedParams params, torch::optim::Optimizer& base, SamSettings settings, double max_grad_norm,
             std::function<void()> grad_sync = {}, SamShardHooks shard = {});

  StepStats step(const std::function<torch::Tensor()>& closure);

  // LookSAM's carried state (g_v and the step counter) for checkpoints.
  NamedTensors state() const;
  void load_state(const NamedTensors& state, const std::string& where);

  const std::vector<bool>& perturbed() const { return perturbed_; }

 private:
  void zero_grads();
  std::vector<torch::Tensor> grads_of(const std::vector<size_t>& idx) const;

  NamedParams params_;
  std::vector<torch::Tensor> tensors_;
  torch::optim::Optimizer& base_;
  SamSettings s_;
  double max_grad_norm_;
  std::function<void()> grad_sync_;
  SamShardHooks shard_;
  std::vector<bool> perturbed_;
  std::vector<size_t> perturbed_idx_;
  std::vector<torch::Tensor> looksam_gv_;
  torch::Tensor looksam_gv_norm_;  // ||g_v||, fixed until the next full step
  int64_t steps_ = 0;
};

}  // namespace flatune
