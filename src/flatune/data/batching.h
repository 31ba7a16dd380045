// From examples to tensors: padded batches, packed rows, and the seeded data order that a
// checkpoint can save and restore.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "flatune/data/dataset.h"

namespace flatune {

struct Batch {
  torch::Tensor input_ids;       // [B, T] int64
  torch::Tensor labels;          // [B, T] int64, -100 = no loss
  torch::Tensor attention_mask;  // [B, T] int64 (padding), undefined when packed
  torch::Tensor position_ids;    // [B, T], restarting per example when packed
  torch::Tensor segment_ids;     // [B, T] when packed, else undefined
  int64_t label_tokens = 0;      // tokens that count in the loss (after the shift)
  int64_t tokens = 0;            // non-padding tokens
};

// Right padding to the longest example.
Batch collate(const std::vector<const Example*>& examples, int64_t pad_id);

// Examples placed one after another into rows of at most max_length tokens, as few rows as fit
// them and about equally long (longest example first into the emptiest row), so little padding
// is left; attention stays within each example and positions restart, so a packed row's loss is
// the sum of its examples' losses.
Batch collate_packed(const std::vector<const Example*>& examples, int64_t max_length, int64_t pad_id);

// Epoch-wise seeded permutations of n examples; `take` continues across epochs.
class DataOrder {
 public:
  DataOrder(size_t n, uint64_t seed, bool shuffle = true);
  std::vector<size_t> take(size_t count);
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  void restore(int64_t epoch, int64_t position);
  // Length-grouped sampling (the idea of HF's LengthGroupedSampler): after the seeded shuffle,
  // each run of `group` indices is sorted longest first, so the batches cut from it hold
  // examples of similar length and padding is small. lengths[i] is example i's token count.
  void group_by_length(std::vector<int64_t> lengths, size_t group);

 private:
  void build();
  size_t n_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0, position_ = 0;
  std::vector<size_t> perm_;
  std::vector<int64_t> lengths_;  // empty: no grouping
  size_t group_ = 0;
};

// The contiguous share [begin, end) of n items that process `rank` of `world` handles (the
// first n % world processes take one more).
std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int world);

}  // namespace flatune
