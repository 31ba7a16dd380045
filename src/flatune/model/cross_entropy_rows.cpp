#include "flatune/model/cross_entropy_rows.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/util/BFloat16.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "flatune/core/compat.h"
#include "flatune/model/vector_math.h"

namespace flatune {

namespace {

template <typename C>
__attribute__((always_inline)) inline C row_max(const C* z, int64_t n) {
  C lane[kLanes];
  for (auto& l : lane) l = -std::numeric_limits<C>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], z[j + l]);
  C m = -std::numeric_limits<C>::infinity();
  for (const C l : lane) m = std::max(m, l);
  for (; j < n; ++j) m = std::max(m, z[j]);
  return m;  // a NaN is skipped here; it reaches the loss through the sum of exponentials
}

// The sum of exp(z[j] − m), in float64 lanes (a float32 running sum over tens of thousands of
// terms would lose digits); with kStore each exp(z[j] − m) also goes to e[j].
template <bool kStore, typename C>
__attribute__((always_inline)) inline double exp_and_sum(const C* z, C* e, C m, int64_t n, ExpClamp clamp) {
  double lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) {
      const C v = exp_fast(z[j + l] - m, clamp);
      if constexpr (kStore) e[j + l] = v;
      lane[l] += static_cast<double>(v);
    }
  double s = 0;
  for (const double l : lane) s += l;
  for (; j < n; ++j) {
    const C v = exp_fast(z[j] - m, clamp);
    if constexpr (kStore) e[j] = v;
    s += static_cast<double>(v);
  }
  return s;
}

// The loss of row z (compute type C); with kGrad, exp(z_j − m) is left in z and its sum in *sum.
template <bool kGrad, typename C>
__attribute__((always_inline)) inline C row_loss(C* z, int64_t n, int64_t y, ExpClamp clamp, C* sum) {
  const C picked = z[y];
  const C m = row_max(z, n);
  const C s = static_cast<C>(exp_and_sum<kGrad>(z, z, m, n, clamp));
  if (sum) *sum = s;
  return std::log(s) + m - picked;
}

// out_j = e_j / s − [j = y], the rounding points of the ordinary ops (the quotient, then the one
// subtracted, then the store in out's type), except that the quotient is a product by 1/s: a vector
// division costs about twenty products, a quarter of the kernel, and differs from it by at most
// an ulp. out may be e.
template <typename C, typename S>
__attribute__((always_inline)) inline void row_gradient(const C* e, S* out, C s, int64_t n, int64_t y) {
  const C inv = C(1) / s;
  const C at_label = e[y] * inv - C(1);
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<S>(e[j] * inv);
  out[y] = static_cast<S>(at_label);
}

// float32 (and bf16 widened to it) for each CPU capability; float64 (tests, analysis) at the
// baseline.
FLATUNE_CPU_CLONES float loss_of(float* z, int64_t n, int64_t y, ExpClamp clamp, float* sum) {
  return sum ? row_loss<true>(z, n, y, clamp, sum) : row_loss<false>(z, n, y, clamp, sum);
}
double loss_of(double* z, int64_t n, int64_t y, ExpClamp clamp, double* sum) {
  return sum ? row_loss<true>(z, n, y, clamp, sum) : row_loss<false>(z, n, y, clamp, sum);
}
FLATUNE_CPU_CLONES void gradient_of(const float* e, float* out, float s, int64_t n, int64_t y) {
  row_gradient(e, out, s, n, y);
}
FLATUNE_CPU_CLONES void gradient_of(const float* e, c10::BFloat16* out, float s, int64_t n, int64_t y) {
  row_gradient(e, out, s, n, y);  // BFloat16(float): to nearest even, as .to(kBFloat16)
}
void gradient_of(const double* e, double* out, double s, int64_t n, int64_t y) { row_gradient(e, out, s, n, y); }

// Rows a task of the parallel loop takes (rows are tens of thousands of elements).
constexpr int64_t kRowsPerTask = 1;

template <typename S>
void run_rows(torch::Tensor& logits, const int64_t* y, torch::Tensor& rows_out, bool grad) {
  using C = std::conditional_t<std::is_same_v<S, double>, double, float>;
  const int64_t n = logits.size(0), V = logits.size(1);
  S* z = reinterpret_cast<S*>(logits.data_ptr());
  C* out = reinterpret_cast<C*>(rows_out.data_ptr());
  at::parallel_for(0, n, kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<C> row;  // a bf16 row widened; float and double rows are worked on where they are
    if constexpr (std::is_same_v<S, c10::BFloat16>) row.resize(static_cast<size_t>(V));
    for (int64_t i = begin; i < end; ++i) {
      S* zi = z + i * V;
      C* work = nullptr;
      if constexpr (std::is_same_v<S, c10::BFloat16>) {
        widen_bf16(zi, row.data(), V);
        work = row.data();
      } else {
        work = zi;
      }
      C sum = 0;
      out[i] = loss_of(work, V, y[i], ExpClamp{}, grad ? &sum : nullptr);
      if (grad) gradient_of(work, zi, sum, V, y[i]);
    }
  });
}

}  // namespace

bool cross_entropy_rows_applies(const torch::Tensor& logits) {
  const auto t = logits.scalar_type();
  return logits.device().is_cpu() && logits.dim() == 2 && logits.is_contiguous() &&
         (t == torch::kFloat || t == torch::kDouble || t == torch::kBFloat16);
}

void cross_entropy_rows(torch::Tensor& logits, const torch::Tensor& labels, torch::Tensor& rows_out,
                        bool write_gradient) {
  // Named in profiles (`flatune bench train --profile`), where it is not an ATen op of its own.
  RECORD_FUNCTION("flatune::cross_entropy_rows", std::vector<c10::IValue>());
  TORCH_CHECK(cross_entropy_rows_applies(logits), "cross_entropy_rows: a contiguous CPU [n, V] float matrix");
  const int64_t n = logits.size(0), V = logits.size(1);
  const auto row_type = logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  TORCH_CHECK(rows_out.dim() == 1 && rows_out.size(0) == n && rows_out.is_contiguous() &&
                  rows_out.scalar_type() == row_type && rows_out.device().is_cpu(),
              "cross_entropy_rows: rows_out [n] of the rows' float type");
  const torch::Tensor y = labels.to(torch::kCPU, torch::kLong).contiguous();
  TORCH_CHECK(y.dim() == 1 && y.size(0) == n, "cross_entropy_rows: labels [n]");
  if (n == 0) return;
  TORCH_CHECK(V > 0, "cross_entropy_rows: no classes");
  const int64_t* yp = y.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(yp[i] >= 0 && yp[i] < V, "cross_entropy_rows: label ", yp[i], " is out of bounds for ", V, " classes");
  switch (logits.scalar_type()) {
    case torch::kFloat:
      return run_rows<float>(logits, yp, rows_out, write_gradient);
    case torch::kDouble:
      return run_rows<double>(logits, yp, rows_out, write_gradient);
    default:
      return run_rows<c10::BFloat16>(logits, yp, rows_out, write_gradient);
  }
}

}  // namespace flatune
