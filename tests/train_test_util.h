// Helpers for tests that compare training runs: the optimizer state a checkpoint holds, and
// byte equality of files. Header-only; for tests linked with flatune_train.
#pragma once
#include <string>
#include <vector>

#include "flatune/core/fs.h"
#include "flatune/io/checkpoint.h"
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

inline bool same_file(const std::string& a, const std::string& b) { return read_file(a) == read_file(b); }

}  // namespace flatune::testing
