#pragma once
// One autocast cast of an input that several projections read (a norm's output: q, k and v; gate
// and up), instead of one cast a projection.
#include <torch/torch.h>

#include <vector>

namespace flatune {

// n tensors to feed n projections of x. Under autocast (on x's device, x float32) they are x cast
// once to the autocast dtype, which the projections then take as it is; recorded, the n
// gradients that come back are summed in float32 as the separate casts' gradients would be (on
// the CPU in one pass over bf16 ones). Otherwise x itself, n times.
std::vector<torch::Tensor> shared_autocast_input(const torch::Tensor& x, int64_t n);

}  // namespace flatune
