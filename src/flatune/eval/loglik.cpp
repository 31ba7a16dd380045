#include "flatune/eval/loglik.h"

#include <algorithm>
#include <map>
#include <numeric>

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
  const auto& sp = tok.special();
  const auto prefix = sp.bos_id ? sp.bos_id : sp.eos_id;
  if (context.empty()) {
    if (!prefix) fail("tokenizer", "has neither BOS nor EOS to stand for an empty context");
    p.continuation = widen(tok.encode(continuation, false));
    // A continuation that itself starts with the prefix token gives it to the context.
    if (!p.continuation.empty() && p.continuation[0] == *prefix) {
      p.context = {p.continuation[0]};
      p.continuation.erase(p.continuation.begin());
    } else {
      p.context = {*prefix};
    }
    return p;
  }
  // The tokenizer's own special tokens (its post-processor: BOS for Llama), except for text
  // that already starts with the prefix token written out (lm-eval's has_bos_prefix).
  const std::string prefix_text = prefix ? tok.id_to_token(*prefix) : std::string();
  auto encode = [&](const std::string& s) {
    const bool written = !prefix_text.empty() && s.compare(0, prefix_text.size(), prefix_text) == 0;
    return widen(tok.encode(s, !written));
  };
  auto whole = encode(context + continuation);
  p.context = encode(context);
  size_t n = std::min(p.context.size(), whole.size());
  p.continuation.assign(whole.begin() + n, whole.end());
  return p;
}

namespace {

// Sum of log p over the continuation from logits [T, V] whose last `k` rows predict it.
Loglik sum_logprobs(const torch::Tensor& logits_rows, const std::vector<int64_t>& cont) {
  auto logp = logits_rows.to(torch::kDouble).log_softmax(-1);
  auto target = torch::tensor(cont, torch::kLong).to(logp.device());
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

namespace {

struct Group {
  const std::vector<int64_t>* context;
  std::vector<size_t> pairs;  // indices into the request list, all fitting the window
  int64_t longest = 0;        // context + longest continuation
};

// One padded forward for the contexts of `batch`, one for all their continuations over the
// shared caches (see score_batched).
void score_group_batch(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs,
                       const std::vector<const Group*>& batch, std::vector<Loglik>& out) {
  const int64_t G = static_cast<int64_t>(batch.size());
  int64_t Lc = 0;
  for (const Group* g : batch) Lc = std::max<int64_t>(Lc, static_cast<int64_t>(g->context->size()));
  // Contexts right-padded; padded keys are masked, and a padded query still sees real keys, so
  // every row stays finite.
  auto ids = torch::zeros({G, Lc}, torch::kLong);
  auto ctx_mask = torch::zeros({G, Lc}, torch::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = ctx_mask.accessor<int64_t, 2>();
  for (int64_t g = 0; g < G; ++g) {
    const auto& c = *batch[g]->context;
    for (size_t t = 0; t < c.size(); ++t) ids_a[g][t] = c[t], mask_a[g][t] = 1;
  }
  KVCache cache;
  ForwardInput in;
  in.input_ids = ids;
  in.attention_mask = ctx_mask;
  in.position_ids = torch::arange(Lc, torch::kLong).unsqueeze(0).expand({G, Lc});
  in.cache = &cache;
  auto hidden = model->hidden_states(in);  // [G, Lc, H]
  const auto weight = model->lm_head_weight();
  // Only the last real row of each context is needed: it predicts every continuation's first token.
  std::vector<int64_t> last_index;
  for (int64_t g = 0; g < G; ++g) last_index.push_back(g * Lc + static_cast<int64_t>(batch[g]->context->size()) - 1);
  auto last_logits = torch::nn::functional::linear(
      hidden.reshape({G * Lc, -1}).index_select(0, torch::tensor(last_index).to(hidden.device())), weight);

  // Each group's continuations without their last tokens, packed one after another into one row
  // per group over that group's own cache: a choice sees the context and its own earlier tokens
  // (segment ids), at the positions it would have after the context. Packing instead of a row
  // per choice pads only to the longest group and keeps one copy of each context's cache.
  // A choice written twice in one item is scored once and copied: lm-eval's separate forwards
  // give both copies the same value (a tie its argmax breaks by order), and two places in a
  // packed row need not round alike.
  std::vector<int64_t> row_group;
  std::vector<size_t> row_pair;
  std::vector<std::pair<size_t, size_t>> copies;  // (pair, the pair whose score it takes)
  std::vector<int64_t> packed_length(G, 0);
  for (int64_t g = 0; g < G; ++g) {
    std::map<std::vector<int64_t>, size_t> seen;
    for (size_t i : batch[g]->pairs) {
      auto [it, fresh] = seen.emplace(pairs[i].continuation, i);
      if (!fresh) {
        copies.emplace_back(i, it->second);
        continue;
      }
      row_group.push_back(g), row_pair.push_back(i);
      packed_length[g] += static_cast<int64_t>(pairs[i].continuation.size()) - 1;
    }
  }
  const int64_t R = static_cast<int64_t>(row_pair.size());
  const int64_t Lp = *std::max_element(packed_length.begin(), packed_length.end());
  torch::Tensor cont_logits;  // [real continuation tokens, V]
  std::vector<int64_t> first_row(R, 0);
  if (Lp > 0) {
    auto cids = torch::zeros({G, Lp}, torch::kLong);
    auto pos = torch::zeros({G, Lp}, torch::kLong);
    auto seg = torch::full({G, Lp}, -1, torch::kLong);
    auto mask = torch::zeros({G, Lc + Lp}, torch::kLong);
    auto cids_a = cids.accessor<int64_t, 2>();
    auto pos_a = pos.accessor<int64_t, 2>();
    auto seg_a = seg.accessor<int64_t, 2>();
    auto m_a = mask.accessor<int64_t, 2>();
    std::vector<int64_t> real_rows, used(G, 0);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t t = 0; t < static_cast<int64_t>(batch[g]->context->size()); ++t) m_a[g][t] = 1;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t g = row_group[r];
      const int64_t n_ctx = static_cast<int64_t>(batch[g]->context->size());
      const auto& c = pairs[row_pair[r]].continuation;
      first_row[r] = static_cast<int64_t>(real_rows.size());
      for (int64_t t = 0; t + 1 < static_cast<int64_t>(c.size()); ++t) {
        const int64_t at = used[g]++;
        cids_a[g][at] = c[t];
        pos_a[g][at] = n_ctx + t;
        seg_a[g][at] = r;
        m_a[g][Lc + at] = 1;
        real_rows.push_back(g * Lp + at);
      }
      // Padding after a group's last choice keeps position 0 and segment -1 and is masked as
      // keys; as queries it sees the context and its rows are never read.
    }
    ForwardInput cin;
    cin.input_ids = cids;
    cin.attention_mask = mask;
    cin.position_ids = pos;
    cin.segment_ids = seg;
    cin.cache = &cache;
    auto h = model->hidden_states(cin);  // [G, Lp, H]
    cont_logits = torch::nn::functional::linear(
        h.reshape({G * Lp, -1}).index_select(0, torch::tensor(real_rows).to(h.device())), weight);
  }
  for (int64_t r = 0; r < R; ++r) {
    const auto& c = pairs[row_pair[r]].continuation;
    const int64_t k = static_cast<int64_t>(c.size());
    auto rows = last_logits[row_group[r]].unsqueeze(0);
    if (k > 1) rows = torch::cat({rows, cont_logits.narrow(0, first_row[r], k - 1)});
    out[row_pair[r]] = sum_logprobs(rows, c);
  }
  for (const auto& [copy, original] : copies) out[copy] = out[original];
}

}  // namespace

std::vector<Loglik> score_batched(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs, int64_t max_length,
                                  int64_t batch_size, const std::function<void(int64_t)>& progress) {
  torch::NoGradGuard ng;
  if (batch_size < 1) fail("--batch-size", "must be at least 1");
  std::vector<Loglik> out(pairs.size());
  std::vector<Group> groups;
  std::vector<size_t> slow;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& p = pairs[i];
    if (p.continuation.empty()) fail("eval", "a continuation encodes to no tokens");
    if (p.context.empty()) fail("eval", "a context encodes to no tokens");
    const int64_t total = static_cast<int64_t>(p.context.size() + p.continuation.size());
    if (total > max_length + 1) {
      slow.push_back(i);
      continue;
    }
    if (groups.empty() || *groups.back().context != p.context) groups.push_back({&p.context, {}, 0});
    groups.back().pairs.push_back(i);
    groups.back().longest = std::max(groups.back().longest, total);
  }
  // Longest first (lm-eval's order too); stable, so equal lengths keep the items' order.
  std::vector<size_t> order(groups.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return groups[a].longest > groups[b].longest; });
  int64_t done = 0;
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch_size)) {
    std::vector<const Group*> batch;
    for (size_t k = start; k < std::min(order.size(), start + static_cast<size_t>(batch_size)); ++k) {
      batch.push_back(&groups[order[k]]);
      done += static_cast<int64_t>(groups[order[k]].pairs.size());
    }
    score_group_batch(model, pairs, batch, out);
    if (progress) progress(done);
  }
  for (size_t i : slow) {
    out[i] = score_naive(model, {pairs[i]}, max_length)[0];
    if (progress) progress(++done);
  }
  return out;
}

}  // namespace flatune
