#include "flatune/eval/loglik.h"

#include "flatune/core/error.h"

namespace flatune {

EncodedPair encode_pair(const Tokenizer& tok, std::string context, std::string continuation) {
  size_t end = context.find_last_not_of(" \t\n\r\f\v");
  size_t n_spaces = end == std::string::npos ? context.size() : context.size() - end - 1;
  if (n_spaces > 0) {
    continuation = context.substr(context.size() - n_spaces) + continuation;
    context.resize(context.size() - n_spaces);
  }
  EncodedPair p;
  auto widen = [](const std::vector<int32_t>& v) { return std::vector<int64_t>(v.begin(), v.end()); };
  if (context.empty()) {
    const auto& sp = tok.special();
    auto prefix = sp.bos_id ? sp.bos_id : sp.eos_id;
    if (!prefix) fail("tokenizer", "has neither BOS nor EOS to stand for an empty context");
    p.context = {*prefix};
    p.continuation = widen(tok.encode(continuation, false));
    return p;
  }
  auto whole = widen(tok.encode(context + continuation, false));
  p.context = widen(tok.encode(context, false));
  size_t n = std::min(p.context.size(), whole.size());
  p.continuation.assign(whole.begin() + n, whole.end());
  return p;
}

namespace {

// Sum of log p over the continuation from logits [T, V] whose last `k` rows predict it.
Loglik sum_logprobs(const torch::Tensor& logits_rows, const std::vector<int64_t>& cont) {
  auto logp = logits_rows.to(torch::kDouble).log_softmax(-1);
  auto target = torch::tensor(cont, torch::kLong);
  Loglik r;
  r.value = logp.gather(1, target.unsqueeze(1)).sum().item<double>();
  r.is_greedy = torch::equal(logp.argmax(-1), target);
  return r;
}

}  // namespace

std::vector<Loglik> score_naive(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs, int64_t max_length) {
  torch::NoGradGuard ng;
  std::vector<Loglik> out;
  for (const auto& p : pairs) {
    if (p.continuation.empty()) fail("eval", "a continuation encodes to no tokens");
    std::vector<int64_t> all = p.context;
    all.insert(all.end(), p.continuation.begin(), p.continuation.end());
    if (static_cast<int64_t>(all.size()) > max_length + 1) all.erase(all.begin(), all.end() - (max_length + 1));
    all.pop_back();
    ForwardInput in;
    in.input_ids = torch::tensor(all, torch::kLong).unsqueeze(0);
    auto logits = model->forward(in)[0];
    const int64_t k = static_cast<int64_t>(p.continuation.size());
    out.push_back(sum_logprobs(logits.narrow(0, logits.size(0) - k, k), p.continuation));
  }
  return out;
}

std::vector<Loglik> score_shared_context(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs, int64_t max_length) {
  torch::NoGradGuard ng;
  std::vector<Loglik> out(pairs.size());
  if (pairs.empty()) return out;
  const auto& ctx = pairs[0].context;
  std::vector<size_t> fast;
  std::vector<EncodedPair> slow_pairs;
  std::vector<size_t> slow;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].continuation.empty()) fail("eval", "a continuation encodes to no tokens");
    bool fits = static_cast<int64_t>(ctx.size() + pairs[i].continuation.size()) <= max_length + 1;
    if (pairs[i].context == ctx && fits) fast.push_back(i);
    else { slow.push_back(i); slow_pairs.push_back(pairs[i]); }
  }
  if (!fast.empty()) {
    // The context once, with a cache; its last logits predict every continuation's first token.
    KVCache cache;
    ForwardInput in;
    in.input_ids = torch::tensor(ctx, torch::kLong).unsqueeze(0);
    in.cache = &cache;
    auto ctx_logits = model->forward(in)[0];
    auto last = ctx_logits.select(0, ctx_logits.size(0) - 1);
    // Continuations without their last token, right-padded, as one batch over the shared cache.
    const int64_t B = static_cast<int64_t>(fast.size());
    int64_t L = 0;
    for (size_t i : fast) L = std::max<int64_t>(L, static_cast<int64_t>(pairs[i].continuation.size()) - 1);
    torch::Tensor cont_logits;
    if (L > 0) {
      auto ids = torch::zeros({B, L}, torch::kLong);
      auto mask = torch::ones({B, static_cast<int64_t>(ctx.size()) + L}, torch::kLong);
      for (int64_t b = 0; b < B; ++b) {
        const auto& c = pairs[fast[b]].continuation;
        for (size_t t = 0; t + 1 < c.size(); ++t) ids[b][t] = c[t];
        // Padding sits after the real tokens, so causal attention never sees it; masking it
        // keeps the padded rows finite.
        mask[b].narrow(0, static_cast<int64_t>(ctx.size()) + static_cast<int64_t>(c.size()) - 1,
                       L - (static_cast<int64_t>(c.size()) - 1)).fill_(0);
      }
      KVCache shared = cache.index_select(torch::zeros({B}, torch::kLong));
      ForwardInput cin;
      cin.input_ids = ids;
      cin.attention_mask = mask;
      cin.position_ids = (torch::arange(L, torch::kLong) + static_cast<int64_t>(ctx.size())).unsqueeze(0).expand({B, L});
      cin.cache = &shared;
      cont_logits = model->forward(cin);
    }
    for (int64_t b = 0; b < B; ++b) {
      const auto& c = pairs[fast[b]].continuation;
      const int64_t k = static_cast<int64_t>(c.size());
      auto rows = k > 1 ? torch::cat({last.unsqueeze(0), cont_logits[b].narrow(0, 0, k - 1)}) : last.unsqueeze(0);
      out[fast[b]] = sum_logprobs(rows, c);
    }
  }
  if (!slow.empty()) {
    auto r = score_naive(model, slow_pairs, max_length);
    for (size_t i = 0; i < slow.size(); ++i) out[slow[i]] = r[i];
  }
  return out;
}

}  // namespace flatune
