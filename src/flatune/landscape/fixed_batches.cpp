#include "flatune/landscape/fixed_batches.h"

#include "flatune/core/error.h"
#include "flatune/data/batching.h"

namespace flatune {

FixedBatches fixed_batches(const std::vector<Example>& examples, int n_batches, int64_t batch_size, int64_t pad_id,
                           const std::string& where) {
  if (n_batches < 1) fail(where, "need at least one batch");
  if (batch_size < 1) fail(where, "batch size must be at least 1");
  FixedBatches fb;
  for (int b = 0; b < n_batches; ++b) {
    std::vector<const Example*> rows;
    for (int64_t k = 0; k < batch_size; ++k) {
      size_t i = static_cast<size_t>(b * batch_size + k);
      if (i < examples.size()) rows.push_back(&examples[i]);
    }
    if (rows.empty()) break;
    fb.batches.push_back(collate(rows, pad_id));
    fb.label_tokens += fb.batches.back().label_tokens;
    fb.examples += static_cast<int64_t>(rows.size());
  }
  if (fb.batches.empty()) fail(where, "no examples to measure the loss on");
  if (fb.label_tokens == 0)
    fail(where, "no token of the first " + std::to_string(fb.examples) + " examples counts in the loss");
  return fb;
}

LossClosure fixed_batches_loss(LlamaForCausalLM& model, const FixedBatches& fb) {
  return fixed_batches_loss(model, fb, 0, 1, {});
}

LossClosure fixed_batches_loss(LlamaForCausalLM& model, const FixedBatches& fb, int rank, int world,
                               CrossProcessSum sum) {
  const int64_t n = static_cast<int64_t>(fb.batches.size());
  if (n < world)
    fail("--batches", std::to_string(n) + " fixed batches cannot be shared by " + std::to_string(world) +
                          " processes; use at least as many");
  const auto [begin, end] = shard_range(n, rank, world);
  auto share = [&model, &fb, begin = begin, end = end](AttentionKernel kernel) {
    AttentionKernelScope scope(*model, kernel);
    torch::Tensor total;
    for (int64_t i = begin; i < end; ++i) {
      const Batch& b = fb.batches[static_cast<size_t>(i)];
      ForwardInput in;
      in.input_ids = b.input_ids;
      in.attention_mask = b.attention_mask;
      auto [s, count] = causal_lm_loss_sum(model->forward(in), b.labels);
      total = total.defined() ? total + s : s;
    }
    return total / static_cast<double>(fb.label_tokens);
  };
  LossClosure closure([share, &model] { return share(model->attention_kernel()); },
                      world > 1 ? std::move(sum) : CrossProcessSum{});
  closure.share_twice_differentiable = [share] { return share(AttentionKernel::eager); };
  return closure;
}

}  // namespace flatune
