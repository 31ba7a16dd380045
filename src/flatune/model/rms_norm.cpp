#include "flatune/model/rms_norm.h"

#include <ATen/Parallel.h>

#include "flatune/core/compat.h"
#include "flatune/model/vector_math.h"

#include <cmath>

namespace flatune {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto compute = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  torch::Tensor h = x.to(compute);
  h = h * torch::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * h.to(x.scalar_type());
}

namespace {

// Rows a task of the parallel loops takes; also the rows whose weight gradient is summed into one
// partial, so the sum's order (and its rounding) does not depend on the thread count.
constexpr int64_t kRowsPerTask = 16;

template <typename T>
__attribute__((always_inline)) inline T dot_row(const T* a, const T* b, int64_t n) {
  T acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[j + l] * b[j + l];
  T s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

// Rows [begin, end): y = w · (x · rstd), rstd kept for backward.
template <typename T>
__attribute__((always_inline)) inline void forward_range(const T* x, const T* w, T* y, T* rstd, int64_t begin,
                                                         int64_t end, int64_t n, double eps) {
  for (int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const T s = static_cast<T>(1) / std::sqrt(dot_row(xr, xr, n) / static_cast<T>(n) + static_cast<T>(eps));
    for (int64_t j = 0; j < n; ++j) yr[j] = w[j] * (xr[j] * s);
    rstd[r] = s;
  }
}

// Rows [begin, end), with g = dy · w and s = rstd: dx = s · g − x · s³ · (g · x) / n, and
// dw += Σ_rows dy · x · s unless dw is null (a frozen weight); g is a row of scratch.
template <typename T>
__attribute__((always_inline)) inline void backward_range(const T* x, const T* w, const T* rstd, const T* dy, T* dx,
                                                          T* dw, T* g, int64_t begin, int64_t end, int64_t n) {
  for (int64_t r = begin; r < end; ++r) {
    const T* xr = x + r * n;
    const T* dyr = dy + r * n;
    T* dxr = dx + r * n;
    const T s = rstd[r];
    for (int64_t j = 0; j < n; ++j) g[j] = dyr[j] * w[j];
    if (dw)
      for (int64_t j = 0; j < n; ++j) dw[j] += dyr[j] * (xr[j] * s);
    const T c = dot_row(g, xr, n) * s * s * s / static_cast<T>(n);
    for (int64_t j = 0; j < n; ++j) dxr[j] = s * g[j] - xr[j] * c;
  }
}

// float32, the training case, for each CPU capability; float64 (tests, analysis) at the baseline.
FLATUNE_CPU_CLONES void forward_range_of(const float* x, const float* w, float* y, float* rstd, int64_t begin,
                                         int64_t end, int64_t n, double eps) {
  forward_range(x, w, y, rstd, begin, end, n, eps);
}
FLATUNE_CPU_CLONES void backward_range_of(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                          float* dw, float* g, int64_t begin, int64_t end, int64_t n) {
  backward_range(x, w, rstd, dy, dx, dw, g, begin, end, n);
}
void forward_range_of(const double* x, const double* w, double* y, double* rstd, int64_t begin, int64_t end, int64_t n,
                      double eps) {
  forward_range(x, w, y, rstd, begin, end, n, eps);
}
void backward_range_of(const double* x, const double* w, const double* rstd, const double* dy, double* dx, double* dw,
                       double* g, int64_t begin, int64_t end, int64_t n) {
  backward_range(x, w, rstd, dy, dx, dw, g, begin, end, n);
}

template <typename T>
void forward_rows(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t n, double eps) {
  at::parallel_for(0, rows, kRowsPerTask,
                   [&](int64_t begin, int64_t end) { forward_range_of(x, w, y, rstd, begin, end, n, eps); });
}

// The weight gradient goes into one partial sum a task (dw_partial [tasks, n]), or nowhere when
// dw_partial is null.
template <typename T>
void backward_rows(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw_partial, int64_t rows, int64_t n) {
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  at::parallel_for(0, tasks, 1, [&](int64_t task_begin, int64_t task_end) {
    std::vector<T> g(static_cast<size_t>(n));
    for (int64_t t = task_begin; t < task_end; ++t)
      backward_range_of(x, w, rstd, dy, dx, dw_partial ? dw_partial + t * n : nullptr, g.data(), t * kRowsPerTask,
                        std::min(rows, (t + 1) * kRowsPerTask), n);
  });
}

struct FusedRmsNorm : torch::autograd::Function<FusedRmsNorm> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& weight,
                               double eps) {
    const torch::Tensor x = x_in.contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(n, 1);
    torch::Tensor y = torch::empty_like(x);
    torch::Tensor rstd = torch::empty({rows}, x.options());
    const torch::Tensor w = weight.contiguous();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm", [&] {
      forward_rows(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(),
                   rows, n, eps);
    });
    ctx->save_for_backward({x_in, weight, rstd});
    ctx->saved_data["eps"] = eps;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x_in = saved[0], &weight = saved[1], &rstd = saved[2];
    const double eps = ctx->saved_data["eps"].toDouble();
    if (torch::GradMode::is_enabled()) {
      // A backward that is itself differentiated (Hessian-vector products): the ordinary ops'
      // gradient, recorded.
      torch::Tensor y = rms_norm_reference(x_in, weight, eps);
      std::vector<torch::Tensor> inputs, grads(2);
      if (x_in.requires_grad()) inputs.push_back(x_in);
      if (weight.requires_grad()) inputs.push_back(weight);
      auto got = torch::autograd::grad({y}, inputs, {grad_out[0]}, /*retain_graph=*/true, /*create_graph=*/true,
                                       /*allow_unused=*/true);
      size_t k = 0;
      if (x_in.requires_grad()) grads[0] = got[k++];
      if (weight.requires_grad()) grads[1] = got[k++];
      return {grads[0], grads[1], torch::Tensor()};
    }
    const torch::Tensor x = x_in.contiguous(), dy = grad_out[0].contiguous(), w = weight.contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / std::max<int64_t>(n, 1);
    const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
    torch::Tensor dx = torch::empty_like(x);
    const bool weight_grad = ctx->needs_input_grad(1);
    torch::Tensor dw_partial = weight_grad ? torch::zeros({tasks, n}, x.options()) : torch::Tensor();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm_backward", [&] {
      backward_rows(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>(),
                    dx.data_ptr<scalar_t>(), weight_grad ? dw_partial.data_ptr<scalar_t>() : nullptr, rows, n);
    });
    return {dx, weight_grad ? dw_partial.sum(0) : torch::Tensor(), torch::Tensor()};
  }
};

bool fused_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  const auto t = x.scalar_type();
  return x.device().is_cpu() && weight.device().is_cpu() && (t == torch::kFloat || t == torch::kDouble) &&
         weight.scalar_type() == t && weight.dim() == 1 && x.dim() >= 1 && x.size(-1) == weight.size(0) &&
         x.numel() > 0;
}

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (!fused_applies(x, weight)) return rms_norm_reference(x, weight, eps);
  return FusedRmsNorm::apply(x, weight, eps);
}

}  // namespace flatune
