#include "flatune/model/swiglu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "flatune/core/compat.h"
#include "flatune/model/vector_math.h"

namespace flatune {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

torch::Tensor swiglu_reference(const torch::Tensor& gate, const torch::Tensor& up) { return torch::silu(gate) * up; }

namespace {

// Elements a task of the parallel loops takes.
constexpr int64_t kGrain = 8192;

template <bool kBf16, typename C>
inline C rounded(C v) {
  if constexpr (kBf16) return round_to_bf16(v);
  else return v;
}

// y = silu(g) · u, silu(g) = g / (1 + exp(−g)) as ATen computes it; with kBf16 the values are bf16
// ones in floats, silu(g) rounded to bf16 before the product as the bf16 ops round it.
template <bool kBf16, typename C>
__attribute__((always_inline)) inline void forward_range(const C* __restrict g, const C* __restrict u, C* __restrict y,
                                                         int64_t n, ExpClamp clamp) {
  for (int64_t i = 0; i < n; ++i) {
    const C gi = g[i];
    y[i] = rounded<kBf16>(gi / (C(1) + exp_fast(-gi, clamp))) * u[i];
  }
}

// du = dy · silu(g); dg = silu'(g) · (dy · u), the latter rounded first (the product's gradient
// as MulBackward leaves it), silu' as ATen's silu_backward: σ · (1 + g · (1 − σ)).
template <bool kBf16, typename C>
__attribute__((always_inline)) inline void backward_range(const C* __restrict g, const C* __restrict u,
                                                          const C* __restrict dy, C* __restrict dg, C* __restrict du,
                                                          int64_t n, ExpClamp clamp) {
  for (int64_t i = 0; i < n; ++i) {
    const C gi = g[i], dyi = dy[i];
    const C denom = C(1) + exp_fast(-gi, clamp);
    const C sig = C(1) / denom;
    du[i] = dyi * rounded<kBf16>(gi / denom);
    dg[i] = rounded<kBf16>(dyi * u[i]) * sig * (C(1) + gi * (C(1) - sig));
  }
}

// float32 (and bf16 held in floats) for each CPU capability; float64 (tests, analysis) at the
// baseline.
FLATUNE_CPU_CLONES void forward_of(const float* g, const float* u, float* y, int64_t n, ExpClamp clamp) {
  forward_range<false>(g, u, y, n, clamp);
}
FLATUNE_CPU_CLONES void forward_of_bf16(const float* g, const float* u, float* y, int64_t n, ExpClamp clamp) {
  forward_range<true>(g, u, y, n, clamp);
}
void forward_of(const double* g, const double* u, double* y, int64_t n, ExpClamp clamp) {
  forward_range<false>(g, u, y, n, clamp);
}
FLATUNE_CPU_CLONES void backward_of(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n,
                                    ExpClamp clamp) {
  backward_range<false>(g, u, dy, dg, du, n, clamp);
}
FLATUNE_CPU_CLONES void backward_of_bf16(const float* g, const float* u, const float* dy, float* dg, float* du,
                                         int64_t n, ExpClamp clamp) {
  backward_range<true>(g, u, dy, dg, du, n, clamp);
}
void backward_of(const double* g, const double* u, const double* dy, double* dg, double* du, int64_t n,
                 ExpClamp clamp) {
  backward_range<false>(g, u, dy, dg, du, n, clamp);
}

// bf16 runs in chunks widened to floats on the stack (small enough to stay in L1).
constexpr int64_t kChunk = 1024;

void forward_elements(const c10::BFloat16* g, const c10::BFloat16* u, c10::BFloat16* y, int64_t begin, int64_t end,
                      ExpClamp clamp) {
  float gf[kChunk], uf[kChunk], yf[kChunk];
  for (int64_t c = begin; c < end; c += kChunk) {
    const int64_t n = std::min(kChunk, end - c);
    widen_bf16(g + c, gf, n);
    widen_bf16(u + c, uf, n);
    forward_of_bf16(gf, uf, yf, n, clamp);
    narrow_bf16(yf, y + c, n);
  }
}
template <typename C>
void forward_elements(const C* g, const C* u, C* y, int64_t begin, int64_t end, ExpClamp clamp) {
  forward_of(g + begin, u + begin, y + begin, end - begin, clamp);
}
void backward_elements(const c10::BFloat16* g, const c10::BFloat16* u, const c10::BFloat16* dy, c10::BFloat16* dg,
                       c10::BFloat16* du, int64_t begin, int64_t end, ExpClamp clamp) {
  float gf[kChunk], uf[kChunk], dyf[kChunk], dgf[kChunk], duf[kChunk];
  for (int64_t c = begin; c < end; c += kChunk) {
    const int64_t n = std::min(kChunk, end - c);
    widen_bf16(g + c, gf, n);
    widen_bf16(u + c, uf, n);
    widen_bf16(dy + c, dyf, n);
    backward_of_bf16(gf, uf, dyf, dgf, duf, n, clamp);
    narrow_bf16(dgf, dg + c, n);
    narrow_bf16(duf, du + c, n);
  }
}
template <typename C>
void backward_elements(const C* g, const C* u, const C* dy, C* dg, C* du, int64_t begin, int64_t end, ExpClamp clamp) {
  backward_of(g + begin, u + begin, dy + begin, dg + begin, du + begin, end - begin, clamp);
}

template <typename T>
const T* ptr(const torch::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mutable_ptr(torch::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// Calls f with a null pointer of the element type of t (float, bf16 or double).
template <typename F>
void with_element_type(const torch::Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case torch::kFloat:
      return f(static_cast<float*>(nullptr));
    case torch::kBFloat16:
      return f(static_cast<c10::BFloat16*>(nullptr));
    default:
      return f(static_cast<double*>(nullptr));
  }
}

struct FusedSwiglu : torch::autograd::Function<FusedSwiglu> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gate_in, const torch::Tensor& up_in) {
    const torch::Tensor gate = gate_in.contiguous(), up = up_in.contiguous();
    torch::Tensor y = torch::empty_like(gate);
    with_element_type(gate, [&](auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
        forward_elements(ptr<T>(gate), ptr<T>(up), mutable_ptr<T>(y), begin, end, ExpClamp{});
      });
    });
    ctx->save_for_backward({gate_in, up_in});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &gate_in = saved[0], &up_in = saved[1];
    if (torch::GradMode::is_enabled()) {
      // A backward that is itself differentiated (Hessian-vector products): the ordinary ops'
      // gradient, recorded.
      std::vector<torch::Tensor> inputs, grads(2);
      if (gate_in.requires_grad()) inputs.push_back(gate_in);
      if (up_in.requires_grad()) inputs.push_back(up_in);
      auto got = torch::autograd::grad({swiglu_reference(gate_in, up_in)}, inputs, {grad_out[0]},
                                       /*retain_graph=*/true, /*create_graph=*/true, /*allow_unused=*/true);
      size_t k = 0;
      if (gate_in.requires_grad()) grads[0] = got[k++];
      if (up_in.requires_grad()) grads[1] = got[k++];
      return grads;
    }
    const torch::Tensor gate = gate_in.contiguous(), up = up_in.contiguous(), dy = grad_out[0].contiguous();
    torch::Tensor dg = torch::empty_like(gate), du = torch::empty_like(gate);
    with_element_type(gate, [&](auto* type) {
      using T = std::remove_pointer_t<decltype(type)>;
      at::parallel_for(0, gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
        backward_elements(ptr<T>(gate), ptr<T>(up), ptr<T>(dy), mutable_ptr<T>(dg), mutable_ptr<T>(du), begin, end,
                          ExpClamp{});
      });
    });
    return {ctx->needs_input_grad(0) ? dg : torch::Tensor(), ctx->needs_input_grad(1) ? du : torch::Tensor()};
  }
};

bool fused_applies(const torch::Tensor& gate, const torch::Tensor& up) {
  const auto t = gate.scalar_type();
  return gate.device().is_cpu() && up.device().is_cpu() &&
         (t == torch::kFloat || t == torch::kBFloat16 || t == torch::kDouble) && up.scalar_type() == t &&
         gate.sizes().equals(up.sizes()) && gate.numel() > 0;
}

}  // namespace

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!fused_applies(gate, up)) return swiglu_reference(gate, up);
  return FusedSwiglu::apply(gate, up);
}

}  // namespace flatune
