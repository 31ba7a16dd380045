// LlamaConfig: the architecture of a Llama-family decoder as Hugging Face's config.json gives
// it (model_type llama, mistral, qwen2).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace flatune {

struct RopeScaling {
  std::string type = "none";  // none | linear | llama3
  double factor = 1.0;
  // llama3 only
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";  // llama | mistral | qwen2
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t head_dim = 128;  // hidden_size / heads unless config.json says otherwise
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q, k, v and o (Llama's attention_bias)
  bool qkv_bias = false;        // bias on q, k, v only (qwen2)
  bool mlp_bias = false;
  double initializer_range = 0.02;
  std::optional<int64_t> sliding_window;  // mistral/qwen2; refused when shorter than the window used
  std::vector<int64_t> bos_token_ids;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype = "float32";
  nlohmann::json raw;  // the file as read, so saving keeps fields we do not interpret

  int64_t num_kv_groups() const { return num_attention_heads / num_key_value_heads; }
  // Parameter count, from shapes alone (tied head counted once).
  int64_t num_parameters() const;
};

// Parses and validates config.json content; `where` names the file in errors. Unknown
// model_type, missing or contradictory fields and unsupported rope_scaling are errors that
// name the field.
LlamaConfig parse_llama_config(const nlohmann::json& j, const std::string& where);
LlamaConfig load_llama_config(const std::string& path);

// The config.json transformers writes for this config (raw fields kept, ours overriding).
nlohmann::json llama_config_to_json(const LlamaConfig& c);

}  // namespace flatune
