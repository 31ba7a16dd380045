#include "flatune/data/batching.h"

#include <algorithm>
#include <random>

#include "flatune/core/error.h"

namespace flatune {

namespace {
int64_t counted_labels(const std::vector<int64_t>& labels) {
  int64_t n = 0;
  for (size_t i = 1; i < labels.size(); ++i) n += labels[i] != -100;
  return n;
}
}  // namespace

Batch collate(const std::vector<const Example*>& examples, int64_t pad_id) {
  const int64_t B = static_cast<int64_t>(examples.size());
  int64_t T = 0;
  for (auto* e : examples) T = std::max<int64_t>(T, static_cast<int64_t>(e->ids.size()));
  Batch b;
  b.input_ids = torch::full({B, T}, pad_id, torch::kLong);
  b.labels = torch::full({B, T}, -100, torch::kLong);
  b.attention_mask = torch::zeros({B, T}, torch::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto lab = b.labels.accessor<int64_t, 2>();
  auto mask = b.attention_mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < B; ++r) {
    const auto& e = *examples[r];
    for (size_t t = 0; t < e.ids.size(); ++t) {
      ids[r][t] = e.ids[t];
      lab[r][t] = e.labels[t];
      mask[r][t] = 1;
    }
    b.label_tokens += counted_labels(e.labels);
    b.tokens += static_cast<int64_t>(e.ids.size());
  }
  b.position_ids = torch::arange(T, torch::kLong).unsqueeze(0).expand({B, T}).contiguous();
  return b;
}

namespace {

// Which examples go into which row: as few rows of at most max_length tokens as the tokens need
// (one more at a time while the examples do not divide that way), filled longest example first
// into the emptiest row, so the rows come out about equally long and padding them to the longest
// is small (first fit in order can leave one full row beside a nearly empty one, which then pads
// to the full row's length). Within a row the examples keep their batch order, and rows are in
// the order of their first example.
std::vector<std::vector<const Example*>> assign_rows(const std::vector<const Example*>& examples, int64_t max_length) {
  const size_t n = examples.size();
  std::vector<int64_t> length(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    length[i] = static_cast<int64_t>(examples[i]->ids.size());
    if (length[i] > max_length) fail("packing", "an example is longer than --max-length");
    total += length[i];
  }
  std::vector<size_t> longest_first(n);
  for (size_t i = 0; i < n; ++i) longest_first[i] = i;
  std::stable_sort(longest_first.begin(), longest_first.end(),
                   [&](size_t a, size_t b) { return length[a] > length[b]; });
  // One example per row always fits, so this ends by rows == n.
  for (size_t rows = std::max<size_t>(1, static_cast<size_t>((total + max_length - 1) / max_length));; ++rows) {
    std::vector<int64_t> used(rows, 0);
    std::vector<std::vector<size_t>> members(rows);
    bool fits = true;
    for (size_t i : longest_first) {
      const size_t r = static_cast<size_t>(std::min_element(used.begin(), used.end()) - used.begin());
      if (used[r] + length[i] > max_length) {
        fits = false;
        break;
      }
      used[r] += length[i];
      members[r].push_back(i);
    }
    if (!fits) continue;
    for (auto& m : members) std::sort(m.begin(), m.end());
    // Every row holds an example unless some example has no tokens (the emptiest row then stays empty).
    members.erase(std::remove_if(members.begin(), members.end(), [](const auto& m) { return m.empty(); }),
                  members.end());
    std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.front() < b.front(); });
    std::vector<std::vector<const Example*>> out;
    for (const auto& m : members) {
      out.emplace_back();
      for (size_t i : m) out.back().push_back(examples[i]);
    }
    return out;
  }
}

}  // namespace

Batch collate_packed(const std::vector<const Example*>& examples, int64_t max_length, int64_t pad_id) {
  if (examples.empty()) fail("packing", "no examples to pack");
  const std::vector<std::vector<const Example*>> rows = assign_rows(examples, max_length);
  std::vector<int64_t> used;
  for (const auto& row : rows) {
    used.push_back(0);
    for (auto* e : row) used.back() += static_cast<int64_t>(e->ids.size());
  }
  const int64_t B = static_cast<int64_t>(rows.size());
  const int64_t T = *std::max_element(used.begin(), used.end());
  Batch b;
  b.input_ids = torch::full({B, T}, pad_id, torch::kLong);
  b.labels = torch::full({B, T}, -100, torch::kLong);
  b.position_ids = torch::zeros({B, T}, torch::kLong);
  // Padding gets its own segment id so it attends only to itself.
  b.segment_ids = torch::full({B, T}, -1, torch::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto lab = b.labels.accessor<int64_t, 2>();
  auto pos = b.position_ids.accessor<int64_t, 2>();
  auto seg = b.segment_ids.accessor<int64_t, 2>();
  for (int64_t r = 0; r < B; ++r) {
    int64_t t = 0, s = 0;
    for (auto* e : rows[r]) {
      for (size_t k = 0; k < e->ids.size(); ++k, ++t) {
        ids[r][t] = e->ids[k];
        // The first token of an example is never a target: it would be predicted from the
        // previous example's last token.
        lab[r][t] = k == 0 ? -100 : e->labels[k];
        pos[r][t] = static_cast<int64_t>(k);
        seg[r][t] = s;
      }
      b.label_tokens += counted_labels(e->labels);
      b.tokens += static_cast<int64_t>(e->ids.size());
      ++s;
    }
  }
  return b;
}

DataOrder::DataOrder(size_t n, uint64_t seed, bool shuffle) : n_(n), seed_(seed), shuffle_(shuffle) {
  if (n_ == 0) fail("data", "no training examples");
  build();
}

void DataOrder::build() {
  perm_.resize(n_);
  for (size_t i = 0; i < n_; ++i) perm_[i] = i;
  if (shuffle_) {
    std::mt19937_64 rng(seed_ * 1000003ull + static_cast<uint64_t>(epoch_));
    std::shuffle(perm_.begin(), perm_.end(), rng);
  }
  if (!lengths_.empty()) {
    for (size_t b = 0; b < n_; b += group_) {
      auto end = perm_.begin() + static_cast<std::ptrdiff_t>(std::min(n_, b + group_));
      // Stable, so equal lengths keep the shuffled order and the result stays deterministic.
      std::stable_sort(perm_.begin() + static_cast<std::ptrdiff_t>(b), end,
                       [&](size_t x, size_t y) { return lengths_[x] > lengths_[y]; });
    }
  }
}

void DataOrder::group_by_length(std::vector<int64_t> lengths, size_t group) {
  if (lengths.size() != n_)
    fail("length grouping", "expected " + std::to_string(n_) + " lengths, got " + std::to_string(lengths.size()));
  if (group == 0) fail("length grouping", "group size must be positive");
  lengths_ = std::move(lengths);
  group_ = group;
  build();
}

std::vector<size_t> DataOrder::take(size_t count) {
  std::vector<size_t> out;
  while (out.size() < count) {
    if (position_ >= static_cast<int64_t>(n_)) {
      ++epoch_;
      position_ = 0;
      build();
    }
    out.push_back(perm_[position_++]);
  }
  return out;
}

void DataOrder::restore(int64_t epoch, int64_t position) {
  epoch_ = epoch;
  position_ = position;
  build();
}

std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int world) {
  int64_t base = n / world, extra = n % world;
  int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace flatune
