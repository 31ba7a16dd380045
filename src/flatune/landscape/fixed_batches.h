// The loss a surface or a sharpness metric is measured on: the first K batches of B examples
// of a data set, fixed once, and the token-weighted mean causal-LM loss over all of them (one
// value, as if the K batches were one; padding and prompt tokens do not count).
#pragma once
#include <vector>

#include "flatune/data/batching.h"
#include "flatune/landscape/landscape.h"
#include "flatune/model/llama.h"

namespace flatune {

struct FixedBatches {
  std::vector<Batch> batches;
  int64_t label_tokens = 0;  // tokens that count in the loss, over all batches
  int64_t examples = 0;
};

// Examples [0, K*B) in order, B to a batch (the last may be short); errors naming `where` when
// there is no example or no token counts in the loss.
FixedBatches fixed_batches(const std::vector<Example>& examples, int n_batches, int64_t batch_size, int64_t pad_id,
                           const std::string& where);

// sum of the per-token losses over every batch / label_tokens, at the model's current weights.
// Holds references: the model and the batches must outlive the closure.
LossClosure fixed_batches_loss(LlamaForCausalLM& model, const FixedBatches& batches);

// The same loss measured by `world` processes: this one (`rank`) sums its contiguous share of
// the batches, still over all label_tokens, and `sum` adds the shares. Errors when there are
// fewer batches than processes (a process with nothing to do would have no graph to give).
LossClosure fixed_batches_loss(LlamaForCausalLM& model, const FixedBatches& batches, int rank, int world,
                               CrossProcessSum sum);

}  // namespace flatune
