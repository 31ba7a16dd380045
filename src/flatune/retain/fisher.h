// The diagonal Fisher information of a model on data, for EWC:
//   F_i = 1/N sum_n (d/dtheta_i log p(y_n | x_n))^2
// over N examples, log p summed over each example's labelled tokens. "empirical" takes y from
// the data; "true" samples each labelled token from the model's own distribution (seeded).
#pragma once
#include <string>
#include <vector>

#include "flatune/data/dataset.h"
#include "flatune/io/safetensors.h"
#include "flatune/model/llama.h"

namespace flatune {

struct FisherOptions {
  std::string kind = "empirical";  // empirical | true
  int64_t examples = 128;          // the first N examples (all when fewer)
  uint64_t seed = 0;
};

NamedTensors compute_fisher(LlamaForCausalLM& model, const std::vector<Example>& data, const FisherOptions& opts);

}  // namespace flatune
