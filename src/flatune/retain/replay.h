// Replay of general data: a fixed number of general examples in every micro-batch, so that over
// an epoch the replayed share is exactly the ratio; drawn in a seeded order of their own.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "flatune/data/dataset.h"

namespace flatune {

struct ReplayMix {
  std::vector<Example> examples;
  int64_t per_batch = 0;  // replayed rows in each micro-batch of batch_size rows
};

// ratio: share of each micro-batch that is replay; ratio * batch_size must be a whole number
// (errors say so). `load` tokenises the file as the trainer does.
ReplayMix make_replay(const std::string& path, double ratio, int64_t batch_size,
                      const std::function<std::vector<Example>(const std::string&)>& load);

}  // namespace flatune
