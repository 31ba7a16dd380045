// Generation over token ids: greedy or sampled (temperature, top-k, top-p), stop on EOS ids,
// max new tokens, seedable, batched with left padding and a KV cache.
#pragma once
#include <cstdint>
#include <vector>

#include "flatune/model/llama.h"

namespace flatune {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  std::vector<int64_t> eos_ids;
  uint64_t seed = 0;
  int64_t pad_id = 0;
};

// Returns the new tokens of each prompt (EOS included when it stopped on one).
std::vector<std::vector<int64_t>> generate(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& opts);

}  // namespace flatune
