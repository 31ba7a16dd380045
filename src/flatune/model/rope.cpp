#include "flatune/model/rope.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include "flatune/core/compat.h"

namespace flatune {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// The transpose of rotate_half: [y_hi, −y_lo].
torch::Tensor rotate_half_transposed(const torch::Tensor& y) {
  const int64_t half = y.size(-1) / 2;
  return torch::cat({y.narrow(-1, half, half), -y.narrow(-1, 0, half)}, -1);
}

}  // namespace

torch::Tensor apply_rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return (x * cos + rotate_half(x) * sin).to(x.scalar_type());
}

namespace {

// Rows (of D) a task of the parallel loop takes: a row is only 2·D multiply-adds.
constexpr int64_t kRowsPerTask = 256;

inline float widen(c10::BFloat16 v) { return static_cast<float>(v); }
inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
template <typename T, typename C>
inline T narrow_to(C v) {
  return static_cast<T>(v);  // c10::BFloat16's constructor rounds to nearest even, as .to(kBFloat16)
}

// One row of D = 2·half, lo = x[0, half) and hi = x[half, D). Forward: lo' = lo·c_lo − hi·s_lo,
// hi' = hi·c_hi + lo·s_hi. Backward, the transpose: lo' = lo·c_lo + hi·s_hi, hi' = hi·c_hi − lo·s_lo.
// Each product and sum is rounded as the ordinary ops round it (this file is built without
// contracting them into fused multiply-adds), so the results match them bit for bit.
template <bool kBackward, typename T, typename C>
__attribute__((always_inline)) inline void rotate_row(const T* __restrict x, const C* __restrict c,
                                                      const C* __restrict s, T* __restrict y, int64_t half) {
  for (int64_t j = 0; j < half; ++j) {
    const C lo = widen(x[j]), hi = widen(x[j + half]);
    if (kBackward) {
      y[j] = narrow_to<T>(lo * c[j] + hi * s[j + half]);
      y[j + half] = narrow_to<T>(hi * c[j + half] - lo * s[j]);
    } else {
      y[j] = narrow_to<T>(lo * c[j] - hi * s[j]);
      y[j + half] = narrow_to<T>(hi * c[j + half] + lo * s[j + half]);
    }
  }
}

// Where rows start: rows run over (b, head, t); strides in elements, 0 along a broadcast dim.
struct RowLayout {
  int64_t batch_stride, head_stride, t_stride;
  int64_t offset(int64_t b, int64_t head, int64_t t) const {
    return b * batch_stride + head * head_stride + t * t_stride;
  }
};

// Rows [begin, end) of the (b, head, t) order.
template <typename T, typename C>
__attribute__((always_inline)) inline void rotate_rows(bool backward, const T* x, RowLayout xl, const C* c, const C* s,
                                                       RowLayout cl, T* y, RowLayout yl, int64_t heads, int64_t T_len,
                                                       int64_t begin, int64_t end, int64_t half) {
  // Decoded once, then counted: a division per row would cost as much as the row's arithmetic.
  int64_t t = begin % T_len, head = begin / T_len % heads, b = begin / (T_len * heads);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t co = cl.offset(b, head, t), xo = xl.offset(b, head, t), yo = yl.offset(b, head, t);
    if (backward) rotate_row<true>(x + xo, c + co, s + co, y + yo, half);
    else rotate_row<false>(x + xo, c + co, s + co, y + yo, half);
    if (++t == T_len) {
      t = 0;
      if (++head == heads) head = 0, ++b;
    }
  }
}
// float32 and bf16 (training) for each CPU capability; float64 (tests, analysis) at the baseline.
FLATUNE_CPU_CLONES void rotate_range(bool backward, const float* x, RowLayout xl, const float* c, const float* s,
                                     RowLayout cl, float* y, RowLayout yl, int64_t heads, int64_t T_len, int64_t begin,
                                     int64_t end, int64_t half) {
  rotate_rows(backward, x, xl, c, s, cl, y, yl, heads, T_len, begin, end, half);
}
FLATUNE_CPU_CLONES void rotate_range(bool backward, const c10::BFloat16* x, RowLayout xl, const float* c,
                                     const float* s, RowLayout cl, c10::BFloat16* y, RowLayout yl, int64_t heads,
                                     int64_t T_len, int64_t begin, int64_t end, int64_t half) {
  rotate_rows(backward, x, xl, c, s, cl, y, yl, heads, T_len, begin, end, half);
}
void rotate_range(bool backward, const double* x, RowLayout xl, const double* c, const double* s, RowLayout cl,
                  double* y, RowLayout yl, int64_t heads, int64_t T_len, int64_t begin, int64_t end, int64_t half) {
  rotate_rows(backward, x, xl, c, s, cl, y, yl, heads, T_len, begin, end, half);
}

RowLayout layout_of(const torch::Tensor& t4) {
  auto step = [&](int64_t d) { return t4.size(d) == 1 ? 0 : t4.stride(d); };
  return {step(0), step(1), step(2)};
}

// y = rope(x) (or its transpose) with cos/sin [B or 1, 1, T, D] of dtype C; x's last stride is 1.
template <typename T, typename C>
torch::Tensor rotate(bool backward, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t B = x.size(0), heads = x.size(1), T_len = x.size(2), D = x.size(3);
  torch::Tensor y = torch::empty_like(x);  // keeps x's layout, as the ordinary ops' output does
  const RowLayout xl = layout_of(x), yl = layout_of(y), cl = layout_of(cos);
  const T* xp = reinterpret_cast<const T*>(x.data_ptr());
  const C* cp = cos.data_ptr<C>();
  const C* sp = sin.data_ptr<C>();
  T* yp = reinterpret_cast<T*>(y.data_ptr());
  at::parallel_for(0, B * heads * T_len, kRowsPerTask, [&](int64_t begin, int64_t end) {
    rotate_range(backward, xp, xl, cp, sp, cl, yp, yl, heads, T_len, begin, end, D / 2);
  });
  return y;
}

torch::Tensor rotate_any(bool backward, const torch::Tensor& x_in, const torch::Tensor& cos, const torch::Tensor& sin) {
  const torch::Tensor x = x_in.stride(-1) == 1 ? x_in : x_in.contiguous();
  switch (x.scalar_type()) {
    case torch::kFloat:
      return rotate<float, float>(backward, x, cos, sin);
    case torch::kBFloat16:
      return rotate<c10::BFloat16, float>(backward, x, cos, sin);
    default:
      return rotate<double, double>(backward, x, cos, sin);
  }
}

struct FusedRope : torch::autograd::Function<FusedRope> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return rotate_any(/*backward=*/false, x, cos, sin);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const torch::Tensor cos = ctx->saved_data["cos"].toTensor(), sin = ctx->saved_data["sin"].toTensor();
    const torch::Tensor& g = grad_out[0];
    // A backward that is itself differentiated (Hessian-vector products): recorded ordinary ops.
    torch::Tensor gx = torch::GradMode::is_enabled() ? (g * cos + rotate_half_transposed(g * sin)).to(g.scalar_type())
                                                     : rotate_any(/*backward=*/true, g, cos, sin);
    return {gx, torch::Tensor(), torch::Tensor()};
  }
};

bool fused_applies(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const auto t = x.scalar_type();
  const auto compute = t == torch::kDouble ? torch::kDouble : torch::kFloat;
  if (!(x.device().is_cpu() && cos.device().is_cpu() && sin.device().is_cpu())) return false;
  if (!(t == torch::kFloat || t == torch::kBFloat16 || t == torch::kDouble)) return false;
  if (cos.scalar_type() != compute || sin.scalar_type() != compute) return false;
  if (cos.requires_grad() || sin.requires_grad()) return false;
  if (x.dim() != 4 || cos.dim() != 4 || !cos.sizes().equals(sin.sizes()) || !cos.strides().equals(sin.strides()))
    return false;
  const int64_t D = x.size(3);
  return D % 2 == 0 && x.numel() > 0 && (cos.size(0) == 1 || cos.size(0) == x.size(0)) && cos.size(1) == 1 &&
         cos.size(2) == x.size(2) && cos.size(3) == D && cos.stride(3) == 1;
}

}  // namespace

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (!fused_applies(x, cos, sin)) return apply_rope_reference(x, cos, sin);
  return FusedRope::apply(x, cos, sin);
}

}  // namespace flatune
