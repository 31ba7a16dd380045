// Helpers for tests that compare training runs: the optimizer state a checkpoint holds, the
// largest weight difference, and byte equality of files. Header-only; for tests linked with flatune_train.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "flatune/core/fs.h"
#include "flatune/io/checkpoint.h"
#include "flatune/io/safetensors.h"
#include "flatune/model/llama.h"
#include "flatune/optim/optimizer.h"
#include "flatune/train/trainer.h"

namespace flatune::testing {

// The AdamW state (step, exp_avg, exp_avg_sq of every trainable parameter) in a checkpoint of a
// run trained with options `o` (its model and LoRA settings say which parameters there are).
inline std::vector<torch::Tensor> adamw_state(const std::string& checkpoint, const TrainOptions& o) {
  auto model = load_llama(o.model);
  if (o.lora_rank > 0) {
    LoraOptions lo;
    lo.rank = o.lora_rank;
    lo.alpha = o.lora_alpha;
    lo.targets = o.lora_targets;
    model->add_lora(lo);
  }
  auto opt = make_adamw(model->trainable_parameters(), AdamWSettings{});
  load_optimizer_state(*opt, checkpoint + "/optimizer.pt");
  std::vector<torch::Tensor> out;
  for (auto& group : opt->param_groups())
    for (auto& p : group.params()) {
      auto& st = static_cast<torch::optim::AdamWParamState&>(*opt->state().at(p.unsafeGetTensorImpl()));
      out.push_back(torch::tensor({st.step()}, torch::kLong));
      out.push_back(st.exp_avg());
      out.push_back(st.exp_avg_sq());
    }
  return out;
}

// The largest absolute difference between two safetensors files' tensors, in file order.
inline double max_weight_diff(const std::string& a, const std::string& b) {
  auto wa = read_safetensors(a), wb = read_safetensors(b);
  double m = 0;
  for (size_t i = 0; i < wa.size(); ++i) m = std::max(m, (wa[i].second - wb[i].second).abs().max().item<double>());
  return m;
}

inline bool same_file(const std::string& a, const std::string& b) { return read_file(a) == read_file(b); }

}  // namespace flatune::testing
