#pragma once
// The cross-entropy of rows of logits, and its gradient written over them, in one pass a row on
// the CPU: the fused loss's inner step, in place of about ten ATen kernels each a pass over the
// chunk (a cast to float32, the label's logit, the maximum, subtract, exp, sum, log, divide,
// the one-hot, a cast back).
#include <torch/torch.h>

namespace flatune {

// Whether cross_entropy_rows takes these logits: a contiguous CPU matrix of float32, float64 or
// bf16.
bool cross_entropy_rows_applies(const torch::Tensor& logits);

// For each row z of logits [n, V] with label y (labels [n], int64, each in [0, V)):
// rows_out[i] = log Σ_j exp(z_j) − z_y, computed in float32 (float64 for float64 logits) from the
// logits' values, written to rows_out [n] (float32, or float64 for float64 logits). With
// write_gradient, z_j becomes softmax(z)_j − [j = y], the gradient of that loss, rounded once to
// the logits' type. A label outside [0, V) is an error before anything is written.
void cross_entropy_rows(torch::Tensor& logits, const torch::Tensor& labels, torch::Tensor& rows_out,
                        bool write_gradient);

}  // namespace flatune
