#pragma once
// Element functions written as plain arithmetic so that the compiler vectorises the loops they
// are inlined into (a library call per element would not), shared by the fused CPU kernels.
// Their loops vectorise only with -fno-trapping-math (a clamp and a NaN test evaluate both sides).
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace flatune {

// Independent partial results of a row reduction (a sum, a maximum): without them the compiler may
// not reorder a float reduction and so cannot vectorise it.
constexpr int64_t kLanes = 16;

// Where exp_fast clamps its argument: [−87, 88] keeps 2^n a normal float; exp below −87 is under
// 1.7e-38, which in a sum with 1 (silu's 1 + exp(−g), a softmax's terms after subtracting the
// maximum) is nothing. The bounds reach the loops as run-time values on purpose: as constants the
// compiler folds exp of a clamped lane into a constant and then computes what follows (silu's
// g / (1 + that)) for every lane ahead of the select, whose results for ordinary g are
// subnormal, a microcode assist each (measured: 11x slower).
struct ExpClamp {
  float lo = -87.0f, hi = 88.0f;
};

// exp(x) in float32 as 2^n · exp(r): n = x·log2(e) rounded, r = x − n·ln 2 with ln 2 split in two
// (its high part has 9 significant bits, so n times it is exact and r is within an ulp), exp(r)
// by its Taylor polynomial to degree 7 (|r| ≤ ln 2 / 2: the truncation is under 0.05 ulp);
// within 1.3 ulp of exp over the clamp's range. A NaN stays a NaN.
inline float exp_fast(float x, ExpClamp clamp) {
  x = std::min(std::max(x, clamp.lo), clamp.hi);
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: adding and subtracting it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 +
                                          r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_fast(double x, ExpClamp /*unused*/) { return std::exp(x); }

// v rounded to bf16's precision (to nearest, ties to even), kept in a float: what a bf16 store
// and load give, computed on 32-bit lanes so the loops keep their full vector width (with 16-bit
// loads and stores in them the compiler halves it).
inline float round_to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return v != v ? v : r;  // a NaN stays a NaN
}

// bf16 rows widened to floats and floats narrowed back (to nearest even, as .to(kBFloat16)): the
// fused kernels work on bf16 in float rows, so their loops keep the full vector width. Compiled
// for each CPU capability (vector_math.cpp).
void widen_bf16(const c10::BFloat16* in, float* out, int64_t n);
void narrow_bf16(const float* in, c10::BFloat16* out, int64_t n);

}  // namespace flatune
