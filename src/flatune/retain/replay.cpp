#include "flatune/retain/replay.h"

#include <cmath>

#include "flatune/core/error.h"

namespace flatune {

ReplayMix make_replay(const std::string& path, double ratio, int64_t batch_size,
                      const std::function<std::vector<Example>(const std::string&)>& load) {
  ReplayMix mix;
  if (path.empty() || ratio <= 0) return mix;
  double rows = ratio * static_cast<double>(batch_size);
  mix.per_batch = std::llround(rows);
  if (std::abs(rows - static_cast<double>(mix.per_batch)) > 1e-9)
    fail("--replay-ratio", "ratio x batch size must be a whole number of rows (" + std::to_string(rows) + ")");
  if (mix.per_batch < 1 || mix.per_batch >= batch_size)
    fail("--replay-ratio", "must leave at least one replayed and one target row per micro-batch");
  mix.examples = load(path);
  if (mix.examples.empty()) fail(path, "replay file is empty");
  return mix;
}

}  // namespace flatune
