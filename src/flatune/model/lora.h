// LoRA adapters in PEFT's on-disk form: adapter_config.json + adapter_model.safetensors with
// tensor names "base_model.model.<module>.lora_A.weight" (PEFT drops the adapter name "default").
#pragma once
#include <string>

#include "flatune/model/llama.h"

namespace flatune {

// Writes adapter_config.json and adapter_model.safetensors into `dir` (created if needed).
void save_lora_adapter(const LlamaForCausalLM& model, const std::string& dir,
                       const std::string& base_model_name_or_path = "");

// Adds adapters as adapter_config.json describes and loads their weights. Errors name the file
// and the field or tensor (unsupported options such as use_dora or rank_pattern are refused).
void load_lora_adapter(LlamaForCausalLM& model, const std::string& dir);

// PEFT's name for one of our adapter tensors, and back.
std::string peft_tensor_name(const std::string& ours);
std::string ours_from_peft_name(const std::string& peft, const std::string& where);

}  // namespace flatune
