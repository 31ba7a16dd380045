// Python's random.Random (Mersenne Twister MT19937 seeded by init_by_array from the integer's
// 32-bit words) and random.sample, reproduced exactly so few-shot sets drawn with
// random.Random(1234), as lm-evaluation-harness draws them, are the same examples.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace flatune {

struct PyRandom {
  explicit PyRandom(uint64_t seed);
  uint32_t genrand_uint32();
  uint64_t getrandbits(int k);     // k in [0, 64]
  uint64_t randbelow(uint64_t n);  // _randbelow_with_getrandbits
  // random.sample(range(n), k): indices in selection order (both of CPython's algorithms).
  std::vector<int64_t> sample(int64_t n, int64_t k);

  std::array<uint32_t, 624> mt{};
  int mti = 625;
};

}  // namespace flatune
