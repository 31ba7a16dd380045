#pragma once
// RMSNorm as transformers' LlamaRMSNorm computes it: statistics in float32 (float64 for float64
// input), the weight applied after casting back to the input dtype.
#include <torch/torch.h>

namespace flatune {

// y = weight · (x / sqrt(mean(x², last dim) + eps)). On the CPU, for float32 and float64 input
// with a weight of the same dtype, forward and backward are one pass each over the rows (instead
// of about five kernels forward and eight backward, each a pass over the activations); its
// backward is itself differentiable through ordinary ops, for Hessian-vector products. Elsewhere
// (CUDA, bf16 weights) it is those ordinary ops.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// The ordinary-op formulation: the reference the fused kernel is tested against.
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace flatune
