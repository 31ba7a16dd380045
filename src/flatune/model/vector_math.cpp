#include "flatune/model/vector_math.h"

#include "flatune/core/compat.h"

namespace flatune {

FLATUNE_CPU_CLONES void widen_bf16(const c10::BFloat16* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
}
FLATUNE_CPU_CLONES void narrow_bf16(const float* in, c10::BFloat16* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(in[i]);
}

}  // namespace flatune
