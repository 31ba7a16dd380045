#pragma once
// The gated activation of Llama's MLP: silu(gate) · up, silu(g) = g / (1 + exp(−g)).
#include <torch/torch.h>

namespace flatune {

// gate and up of one shape and dtype. On the CPU in float32, bf16 and float64 it is one pass
// forward and one backward (instead of two kernels forward and three backward, each a pass over
// the [tokens, intermediate] activations), keeping gate and up for the backward but not
// silu(gate), with the ordinary ops' rounding points (a bf16 silu(gate) is rounded before the
// product, and the product's gradient before silu's backward). float32 and bf16 use an
// exponential of its own (within 2 ulp of std::exp, vectorised by the compiler), so they agree
// with ATen's to rounding, not bit for bit. The backward is itself differentiable (Hessian-vector
// products). Elsewhere (CUDA) it is the ordinary ops.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up);

// The ordinary-op formulation: the reference the fused kernel is tested against.
torch::Tensor swiglu_reference(const torch::Tensor& gate, const torch::Tensor& up);

}  // namespace flatune
