// Everything that differs between libtorch 1.13 (Debian, CPU) and libtorch 2.x (CUDA) lives
// here, so the rest of the code calls one spelling.
#pragma once
#include <torch/torch.h>
#include <torch/version.h>
#include <ATen/autocast_mode.h>

#include <string>

namespace flatune::compat {

#if TORCH_VERSION_MAJOR >= 2
constexpr bool kTorch2 = true;
#else
constexpr bool kTorch2 = false;
#endif

inline std::string torch_version() { return TORCH_VERSION; }

// Fused scaled-dot-product attention. 1.13 has only the private
// at::_scaled_dot_product_attention (same maths, returns (output, weights)); 2.x has the public
// op. q, k, v: [B, H, T, D]; mask: additive float or boolean (true = attend), broadcastable to
// [B, H, Tq, Tk]. Scale is 1/sqrt(D) in both.
inline torch::Tensor sdpa(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const c10::optional<torch::Tensor>& mask, bool is_causal) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal);
#else
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v, mask, 0.0, false, is_causal));
#endif
}

// Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX-BF16); decided at run time because
// machines of one kind differ.
inline bool cpu_has_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) return true;
  // AMX-BF16: CPUID.(EAX=7,ECX=0):EDX[22].
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  return (d >> 22) & 1u;
#else
  return false;
#endif
}

inline bool cuda_available() {
#ifdef FLATUNE_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

// CPU autocast on or off, with the dtype it casts to.
inline void set_cpu_autocast(bool enabled, at::ScalarType dtype = at::kBFloat16) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(at::kCPU, enabled);
  at::autocast::set_autocast_dtype(at::kCPU, dtype);
#else
  at::autocast::set_cpu_enabled(enabled);
  at::autocast::set_autocast_cpu_dtype(dtype);
#endif
}

}  // namespace flatune::compat
