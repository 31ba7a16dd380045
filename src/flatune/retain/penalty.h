// Penalties that hold fine-tuning near the base model:
//   EWC (Kirkpatrick et al. 2017)   lambda/2 * sum F * (theta - theta_base)^2, F a diagonal Fisher
//   L2-SP (Li et al. 2018)           lambda/2 * ||theta - theta_base||^2
// With LoRA the penalties apply to the effective weights W + s*B*A (default; the frozen W is
// theta_base, so theta - theta_base = s*B*A), or, with on_adapters, L2 to the adapters' initial
// values (EWC has no Fisher for adapters and is refused there).
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "flatune/model/llama.h"

namespace flatune {

struct RetainPenalty {
  struct Term {
    std::string name;
    torch::Tensor param;                   // the parameter (full fine-tuning or adapter) or undefined (LoRA effective)
    torch::Tensor base;                    // theta_base (or the adapter's initial value)
    torch::Tensor fisher;                  // EWC weight, undefined for L2 only
    ProjectionImpl* projection = nullptr;  // LoRA effective-weight terms
  };
  std::vector<Term> terms;
  double ewc_lambda = 0, l2_lambda = 0;
  bool on_adapters = false;

  bool active() const { return !terms.empty() && (ewc_lambda > 0 || l2_lambda > 0); }
  // The penalty at the model's current weights, with a graph to its trainable parameters.
  torch::Tensor value(LlamaForCausalLM& model) const;
};

// Snapshots the base weights now (call before LoRA is added and before training). The Fisher
// file must hold a tensor of the right shape for every model weight (errors name the file).
// LoRA terms are bound later by bind_lora_terms once adapters exist.
RetainPenalty make_retain_penalty(LlamaForCausalLM& model, const std::string& fisher_path, double ewc_lambda,
                                  double l2_lambda, bool on_adapters);

// After add_lora: re-targets the penalty at the effective weights (or the adapters).
void bind_lora_terms(RetainPenalty& penalty, LlamaForCausalLM& model);

}  // namespace flatune
