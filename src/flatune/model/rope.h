#pragma once
// Rotary position embedding as transformers' apply_rotary_pos_emb applies it:
// x·cos + rotate_half(x)·sin, rotate_half(x) = [−x_hi, x_lo] over the halves of the last dim.
#include <torch/torch.h>

namespace flatune {

// x [B, heads, T, D] (any strides with a unit last one, as the projection's [B, T, heads, D]
// output transposed); cos and sin [B or 1, 1, T, D]. The result has x's dtype. With cos and sin
// in float32 (float64 for float64 x) on the CPU it is one pass forward and one backward, computed
// in the cos dtype and rounded once: bit for bit what the ordinary ops give, which promote a bf16
// x to float32 (the cast back to bf16 is the one autocast does before attention anyway). The
// backward needs neither x nor a saved activation, and is itself differentiable (Hessian-vector
// products). Elsewhere (CUDA, bf16 cos) it is the ordinary ops.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// The ordinary-op formulation, cast to x's dtype: the reference the fused kernel is tested against.
torch::Tensor apply_rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace flatune
