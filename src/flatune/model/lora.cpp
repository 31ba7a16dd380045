#include "flatune/model/lora.h"

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/io/safetensors.h"

namespace flatune {

namespace {
const std::string kPeftPrefix = "base_model.model.";
}

std::string peft_tensor_name(const std::string& ours) { return kPeftPrefix + ours; }

std::string ours_from_peft_name(const std::string& peft, const std::string& where) {
  if (peft.compare(0, kPeftPrefix.size(), kPeftPrefix) != 0)
    fail(where, "tensor '" + peft + "' does not start with '" + kPeftPrefix + "'");
  std::string ours = peft.substr(kPeftPrefix.size());
  // PEFT versions before 0.3 kept the adapter name in the key.
  for (const char* ab : {".lora_A", ".lora_B"}) {
    std::string with_default = std::string(ab) + ".default.weight";
    auto pos = ours.find(with_default);
    if (pos != std::string::npos) ours.replace(pos, with_default.size(), std::string(ab) + ".weight");
  }
  return ours;
}

void save_lora_adapter(const LlamaForCausalLM& model, const std::string& dir, const std::string& base) {
  if (!model->has_lora()) fail(dir, "the model has no LoRA adapters to save");
  const LoraOptions& o = model->lora_options();
  make_dirs(dir);
  json cfg = {
      {"alpha_pattern", json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", base},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", o.alpha},
      {"lora_dropout", o.dropout},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", o.rank},
      {"rank_pattern", json::object()},
      {"revision", nullptr},
      {"target_modules", o.targets},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", false},
  };
  NamedTensors tensors;
  for (auto& [name, t] : model->lora_weights()) tensors.emplace_back(peft_tensor_name(name), t.to(torch::kCPU));
  write_safetensors(join_path(dir, "adapter_model.safetensors"), tensors);
  write_file_atomic(join_path(dir, "adapter_config.json"), cfg.dump(2) + "\n");
}

void load_lora_adapter(LlamaForCausalLM& model, const std::string& dir) {
  const std::string cfg_path = join_path(dir, "adapter_config.json");
  json cfg = read_json_file(cfg_path);
  if (cfg.value("peft_type", std::string("LORA")) != "LORA")
    fail(cfg_path, "peft_type '" + cfg.value("peft_type", std::string()) + "' is not supported (only LORA)");
  for (const char* flag : {"use_dora", "use_rslora", "fan_in_fan_out"})
    if (cfg.contains(flag) && cfg[flag].is_boolean() && cfg[flag].get<bool>())
      fail(cfg_path, std::string("'") + flag + "' is not supported");
  for (const char* pattern : {"rank_pattern", "alpha_pattern"})
    if (cfg.contains(pattern) && cfg[pattern].is_object() && !cfg[pattern].empty())
      fail(cfg_path, std::string("'") + pattern + "' is not supported");
  if (cfg.contains("bias") && cfg["bias"] != "none") fail(cfg_path, "'bias' other than \"none\" is not supported");
  LoraOptions o;
  o.rank = require_int(cfg, "r", cfg_path);
  const json& alpha = require_field(cfg, "lora_alpha", cfg_path);
  if (!alpha.is_number()) fail(cfg_path, "field 'lora_alpha' must be a number");
  o.alpha = alpha.get<double>();
  o.dropout = cfg.value("lora_dropout", 0.0);
  const json& targets = require_field(cfg, "target_modules", cfg_path);
  o.targets.clear();
  if (targets.is_string()) {
    fail(cfg_path, "'target_modules' as a regular expression is not supported; give a list");
  } else if (targets.is_array()) {
    for (const auto& t : targets) o.targets.push_back(t.get<std::string>());
  } else {
    fail(cfg_path, "field 'target_modules' must be a list");
  }
  try {
    model->add_lora(o);
  } catch (const Error& e) { fail(cfg_path, e.problem()); }
  const std::string weights_path = join_path(dir, "adapter_model.safetensors");
  std::map<std::string, torch::Tensor> given;
  for (auto& [name, t] : read_safetensors(weights_path)) given[ours_from_peft_name(name, weights_path)] = t;
  torch::NoGradGuard ng;
  auto params = model->named_parameters(true);
  for (auto& [name, t] : model->lora_weights()) {
    auto it = given.find(name);
    if (it == given.end()) fail(weights_path, "missing tensor '" + peft_tensor_name(name) + "'");
    const torch::Tensor& p = params[name];
    if (!it->second.sizes().equals(p.sizes()))
      fail(weights_path, "tensor '" + peft_tensor_name(name) + "' has the wrong shape");
    p.copy_(it->second.to(p.scalar_type()));
    given.erase(it);
  }
  if (!given.empty()) fail(weights_path, "unexpected tensor '" + peft_tensor_name(given.begin()->first) + "'");
}

}  // namespace flatune
