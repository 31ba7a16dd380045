// The causal LM loss computed from hidden states without materialising the [B, T, vocab]
// logits: the head and the cross-entropy run together over chunks of rows, and only rows whose
// label counts go through the head at all (the prompt of a response-only example costs no head
// FLOPs). When a gradient is wanted the chunk's gradient is formed right there (softmax minus
// one-hot), so backward is two scalings; peak memory holds one chunk of logits and a group of
// chunks' gradients in the products' type (about 32 MiB, summed into the weight's gradient by one
// product) instead of logits, their shifted copy, log-probabilities and two gradients of that size.
//
// Single backward only: this is for training and evaluation. Hessian-vector products (landscape)
// need double backward and use forward() + causal_lm_loss_sum, which give the same value.
#pragma once
#include <torch/torch.h>

#include <utility>

#include "flatune/model/llama.h"

namespace flatune {

struct FusedLossOptions {
  // Rows of logits formed at once; chunk_rows x vocab floats is the working set.
  int64_t chunk_rows = 512;
  // Rows whose logit gradients are gathered for one product of the weight's gradient (0: about
  // 32 MiB of them and at most half the rows; rounded down to whole chunks, at least one).
  int64_t grad_w_rows = 0;
  // Under autocast, vocabulary rows of that product formed at once before they are summed in fp32
  // (0: about a million elements).
  int64_t grad_w_block_rows = 0;
};

// Σ over counted tokens of -log softmax(h Wᵀ)[label], as causal_lm_loss_sum(forward(in), labels)
// (labels shifted left by one, -100 ignored), and the number of counted tokens. When per_token
// is given it receives the detached per-token losses [B, T-1] (0 where not counted).
std::pair<torch::Tensor, int64_t> fused_causal_lm_loss_sum(LlamaForCausalLM& model, const ForwardInput& in,
                                                           const torch::Tensor& labels,
                                                           torch::Tensor* per_token = nullptr,
                                                           const FusedLossOptions& o = {});

// The building block: Σ_i -log softmax(h_i Wᵀ)[y_i] over rows h [N, H], weight W [V, H], labels
// y [N] (all counted), with per-row losses into *rows when given. Differentiable once in h and W.
torch::Tensor linear_cross_entropy_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels,
                                       torch::Tensor* rows = nullptr, const FusedLossOptions& o = {});

}  // namespace flatune
