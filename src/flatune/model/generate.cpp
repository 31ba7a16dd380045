#include "flatune/model/generate.h"

#include <algorithm>

namespace flatune {

namespace {

// Next-token choice for each row: argmax when temperature is 0, else a sample after
// temperature, top-k and top-p (nucleus) filtering as transformers' logits warpers do.
torch::Tensor choose_next(torch::Tensor logits, const GenerateOptions& o, at::Generator& gen) {
  logits = logits.to(torch::kFloat);
  if (o.temperature <= 0) return logits.argmax(-1);
  logits = logits / o.temperature;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    auto kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    // Sorted ascending, drop the tokens whose cumulative mass stays within 1 - top_p; the most
    // likely token always survives.
    auto [sorted, idx] = logits.sort(-1, /*descending=*/false);
    auto cum = sorted.softmax(-1).cumsum(-1);
    auto remove_sorted = cum <= (1.0 - o.top_p);
    remove_sorted.narrow(-1, remove_sorted.size(-1) - 1, 1).fill_(false);
    auto remove = torch::zeros_like(remove_sorted).scatter(-1, idx, remove_sorted);
    logits = logits.masked_fill(remove, neg_inf);
  }
  auto probs = logits.softmax(-1);
  return torch::multinomial(probs.cpu(), 1, false, gen).squeeze(-1).to(logits.device());
}

}  // namespace

std::vector<std::vector<int64_t>> generate(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& o) {
  torch::NoGradGuard ng;
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::vector<std::vector<int64_t>> out(B);
  if (B == 0 || o.max_new_tokens <= 0) return out;
  auto dev = model->lm_head_weight().device();
  int64_t L = 0;
  for (const auto& p : prompts) L = std::max<int64_t>(L, static_cast<int64_t>(p.size()));
  TORCH_CHECK(L > 0, "generate: empty prompt");

  // Left padding: every row's last prompt token sits in the last column.
  auto ids = torch::full({B, L}, o.pad_id, torch::kLong);
  auto mask = torch::zeros({B, L}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = static_cast<int64_t>(prompts[b].size()), off = L - n;
    for (int64_t t = 0; t < n; ++t) ids[b][off + t] = prompts[b][t];
    mask.narrow(1, L - n, n)[b].fill_(1);
  }
  ids = ids.to(dev);
  mask = mask.to(dev);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  KVCache cache;
  std::vector<bool> done(B, false);
  torch::Tensor input = ids;
  bool was_training = model->is_training();
  model->eval();
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    ForwardInput in;
    in.input_ids = input;
    in.attention_mask = mask;
    in.cache = &cache;
    auto logits = model->forward(in).select(1, input.size(1) - 1);
    auto next = choose_next(logits, o, gen).cpu();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      int64_t tok = next[b].item<int64_t>();
      out[b].push_back(tok);
      if (std::find(o.eos_ids.begin(), o.eos_ids.end(), tok) != o.eos_ids.end()) done[b] = true;
      all_done = all_done && done[b];
    }
    if (all_done) break;
    input = next.view({B, 1}).to(dev);
    mask = torch::cat({mask, torch::ones({B, 1}, mask.options())}, 1);
  }
  model->train(was_training);
  return out;
}

}  // namespace flatune
