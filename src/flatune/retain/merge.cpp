#include "flatune/retain/merge.h"

#include <cmath>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/lora.h"

namespace flatune {

NamedTensors interpolate_weights(const NamedTensors& base, const NamedTensors& tuned, double alpha, bool extrapolate,
                                 const std::string& where) {
  if (!std::isfinite(alpha)) fail("--alpha", "must be a number");
  if (!extrapolate && (alpha < 0 || alpha > 1)) fail("--alpha", "must be in [0, 1] (pass --extrapolate to go beyond)");
  std::map<std::string, torch::Tensor> t;
  for (const auto& [name, x] : tuned) t[name] = x;
  NamedTensors out;
  torch::NoGradGuard ng;
  for (const auto& [name, b] : base) {
    auto it = t.find(name);
    if (it == t.end()) fail(where, "tensor '" + name + "' is missing from the tuned model");
    if (!it->second.sizes().equals(b.sizes())) fail(where, "tensor '" + name + "' has different shapes in base and tuned");
    auto tb = it->second.to(b.scalar_type());
    out.emplace_back(name, alpha == 0 ? b.clone() : alpha == 1 ? tb.clone() : b * (1 - alpha) + tb * alpha);
    t.erase(it);
  }
  if (!t.empty()) fail(where, "tensor '" + t.begin()->first + "' is only in the tuned model");
  return out;
}

NamedTensors load_tuned_weights(const std::string& base_dir, const std::string& tuned_dir) {
  if (file_exists(join_path(tuned_dir, "adapter_config.json"))) {
    auto model = load_llama(base_dir);
    load_lora_adapter(model, tuned_dir);
    return model->weights(/*merge_lora=*/true);
  }
  return load_checkpoint_weights(tuned_dir);
}

void merge_checkpoints(const std::string& base_dir, const std::string& tuned_dir, double alpha, bool extrapolate,
                       const std::string& out_dir) {
  LlamaConfig config = load_llama_config(join_path(base_dir, "config.json"));
  NamedTensors base = load_checkpoint_weights(base_dir);
  NamedTensors tuned = load_tuned_weights(base_dir, tuned_dir);
  NamedTensors merged = interpolate_weights(base, tuned, alpha, extrapolate, tuned_dir);
  save_checkpoint(out_dir, llama_config_to_json(config), merged, SaveOptions{}, base_dir);
}

}  // namespace flatune
