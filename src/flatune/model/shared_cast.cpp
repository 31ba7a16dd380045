#include "flatune/model/shared_cast.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/util/BFloat16.h>

#include "flatune/core/compat.h"

namespace flatune {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Elements a task of the parallel loop takes.
constexpr int64_t kGrain = 16384;

// out = Σ_k in[k], bf16 inputs added in float32 in the order given.
FLATUNE_CPU_CLONES void sum_bf16_range(const c10::BFloat16* const* in, int64_t count, float* out, int64_t begin,
                                       int64_t end) {
  for (int64_t i = begin; i < end; ++i) out[i] = static_cast<float>(in[0][i]);
  for (int64_t k = 1; k < count; ++k) {
    const c10::BFloat16* src = in[k];
    for (int64_t i = begin; i < end; ++i) out[i] += static_cast<float>(src[i]);
  }
}

// The float32 sum of the defined gradients, in their order.
torch::Tensor sum_in_float(const variable_list& grads, const torch::ScalarType dtype) {
  std::vector<torch::Tensor> defined;
  for (const auto& g : grads)
    if (g.defined()) defined.push_back(g.contiguous());
  if (defined.empty()) return {};
  const bool kernel = !torch::GradMode::is_enabled() && dtype == torch::kFloat && defined[0].device().is_cpu() &&
                      defined[0].scalar_type() == torch::kBFloat16;
  bool same = true;
  for (const auto& g : defined) same = same && g.scalar_type() == defined[0].scalar_type();
  if (!kernel || !same) {
    // Differentiable (a recorded backward) or another device or dtype: the ordinary ops.
    torch::Tensor sum = defined[0].to(dtype);
    for (size_t k = 1; k < defined.size(); ++k) sum = sum + defined[k].to(dtype);
    return sum;
  }
  std::vector<const c10::BFloat16*> in;
  for (const auto& g : defined) in.push_back(reinterpret_cast<const c10::BFloat16*>(g.data_ptr()));
  torch::Tensor out = torch::empty(defined[0].sizes(), defined[0].options().dtype(torch::kFloat));
  float* o = out.data_ptr<float>();
  at::parallel_for(0, out.numel(), kGrain, [&](int64_t begin, int64_t end) {
    sum_bf16_range(in.data(), static_cast<int64_t>(in.size()), o, begin, end);
  });
  return out;
}

struct SharedCast : torch::autograd::Function<SharedCast> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x, int64_t n, c10::ScalarType to) {
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    const torch::Tensor y = x.to(to);
    variable_list out{y};
    // Each projection gets its own tensor (its own gradient comes back) over the one cast.
    for (int64_t k = 1; k < n; ++k) out.push_back(y.alias());
    return out;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const auto dtype = static_cast<c10::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {sum_in_float(grads, dtype), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::vector<torch::Tensor> shared_autocast_input(const torch::Tensor& x, int64_t n) {
  const auto device = x.device().type();
  if (n < 2 || x.scalar_type() != torch::kFloat || !at::autocast::is_autocast_enabled(device))
    return std::vector<torch::Tensor>(static_cast<size_t>(n), x);
  const auto to = at::autocast::get_autocast_dtype(device);
  if (!(torch::GradMode::is_enabled() && x.requires_grad()))
    return std::vector<torch::Tensor>(static_cast<size_t>(n), x.to(to));
  return SharedCast::apply(x, n, to);
}

}  // namespace flatune
