#include "flatune/retain/merge.h"

#include <cmath>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/lora.h"

namespace flatune {

void check_wiseft_alpha(double alpha, bool extrapolate) {
  if (!std::isfinite(alpha)) fail("--alpha", "must be a number");
  if (!extrapolate && (alpha < 0 || alpha > 1)) fail("--alpha", "must be in [0, 1] (pass --extrapolate to go beyond)");
}

NamedTensors interpolate_weights(const NamedTensors& base, const NamedTensors& tuned, double alpha, bool extrapolate,
                                 const std::string& where) {
  check_wiseft_alpha(alpha, extrapolate);
  std::map<std::string, torch::Tensor> t;
  for (const auto& [name, x] : tuned) t[name] = x;
  NamedTensors out;
  torch::NoGradGuard ng;
  for (const auto& [name, b] : base) {
    auto it = t.find(name);
    if (it == t.end()) fail(where, "tensor '" + name + "' is missing from the tuned model");
    if (!it->second.sizes().equals(b.sizes()))
      fail(where, "tensor '" + name + "' has different shapes in base and tuned");
    // In the wider of the two dtypes: a bf16 base must not round an fp32 tuned model first.
    const auto wide = torch::promote_types(b.scalar_type(), it->second.scalar_type());
    auto bw = b.to(wide), tw = it->second.to(wide);
    out.emplace_back(name, alpha == 0 ? bw.clone() : alpha == 1 ? tw.clone() : bw * (1 - alpha) + tw * alpha);
    t.erase(it);
  }
  if (!t.empty()) fail(where, "tensor '" + t.begin()->first + "' is only in the tuned model");
  return out;
}

namespace {
bool is_adapter_folder(const std::string& dir) { return file_exists(join_path(dir, "adapter_config.json")); }
}  // namespace

NamedTensors load_tuned_weights(const std::string& base_dir, const std::string& tuned_dir) {
  // Merging is arithmetic on weights read from files: on the CPU, beside the base weights,
  // whatever the process's device.
  if (is_adapter_folder(tuned_dir)) {
    auto model = load_llama(base_dir, torch::kFloat32, torch::Device(torch::kCPU));
    load_lora_adapter(model, tuned_dir);
    return model->weights(/*merge_lora=*/true);
  }
  return load_checkpoint_weights(tuned_dir);
}

WiseFtEnds load_wiseft_ends(const std::string& base_dir, const std::string& tuned_dir) {
  WiseFtEnds ends;
  ends.where = tuned_dir;
  ends.base = load_checkpoint_weights(base_dir);
  if (!is_adapter_folder(tuned_dir)) {
    ends.tuned = load_checkpoint_weights(tuned_dir);
    return ends;
  }
  auto model = load_llama(base_dir, torch::kFloat32, torch::Device(torch::kCPU));
  load_lora_adapter(model, tuned_dir);
  torch::NoGradGuard ng;
  for (const auto& m : model->named_modules()) {
    auto* proj = dynamic_cast<ProjectionImpl*>(m.value().get());
    if (!proj || !proj->has_lora()) continue;
    // The product as ProjectionImpl::merged_weight forms it, so alpha = 1 is the merged model bit for bit.
    ends.adapters[m.key() + ".weight"] = {torch::matmul(proj->lora_B, proj->lora_A), proj->lora_scale};
  }
  if (ends.adapters.empty()) fail(tuned_dir, "the adapter adapts no projection");
  return ends;
}

NamedTensors wiseft_weights(const WiseFtEnds& ends, double alpha, bool extrapolate) {
  if (!ends.is_lora()) return interpolate_weights(ends.base, ends.tuned, alpha, extrapolate, ends.where);
  check_wiseft_alpha(alpha, extrapolate);
  torch::NoGradGuard ng;
  NamedTensors out;
  size_t used = 0;
  for (const auto& [name, w] : ends.base) {
    auto it = ends.adapters.find(name);
    if (it == ends.adapters.end() || alpha == 0) {
      out.emplace_back(name, w.clone());
    } else {
      if (!it->second.product.sizes().equals(w.sizes()))
        fail(ends.where, "adapter for '" + name + "' does not fit the base weight");
      out.emplace_back(name, (w + it->second.product * (it->second.scale * alpha)).to(w.scalar_type()));
    }
    if (it != ends.adapters.end()) ++used;
  }
  if (used != ends.adapters.size()) fail(ends.where, "the adapter targets a weight the base model does not have");
  return out;
}

void merge_checkpoints(const std::string& base_dir, const std::string& tuned_dir, double alpha, bool extrapolate,
                       const std::string& out_dir) {
  check_wiseft_alpha(alpha, extrapolate);
  LlamaConfig config = load_llama_config(join_path(base_dir, "config.json"));
  NamedTensors merged = wiseft_weights(load_wiseft_ends(base_dir, tuned_dir), alpha, extrapolate);
  save_checkpoint(out_dir, llama_config_to_json(config), merged, SaveOptions{}, base_dir);
}

}  // namespace flatune
