#include "flatune/model/config.h"

#include "flatune/core/error.h"
#include "flatune/core/json.h"

namespace flatune {

namespace {

int64_t get_int(const json& j, const std::string& key, const std::string& where,
                std::optional<int64_t> fallback = std::nullopt) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    fail(where, "missing field '" + key + "'");
  }
  if (!j[key].is_number_integer()) fail(where, "field '" + key + "' must be an integer");
  return j[key].get<int64_t>();
}

double get_number(const json& j, const std::string& key, const std::string& where, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) fail(where, "field '" + key + "' must be a number");
  return j[key].get<double>();
}

bool get_bool(const json& j, const std::string& key, const std::string& where, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) fail(where, "field '" + key + "' must be true or false");
  return j[key].get<bool>();
}

// bos/eos ids may be an integer, a list of integers, or null.
std::vector<int64_t> get_ids(const json& j, const std::string& key, const std::string& where) {
  std::vector<int64_t> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  const json& v = j[key];
  if (v.is_number_integer()) {
    out.push_back(v.get<int64_t>());
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (!e.is_number_integer()) fail(where, "field '" + key + "' must hold integers");
      out.push_back(e.get<int64_t>());
    }
  } else {
    fail(where, "field '" + key + "' must be an integer or a list of integers");
  }
  return out;
}

void require_positive(int64_t v, const std::string& key, const std::string& where) {
  if (v <= 0) fail(where, "field '" + key + "' must be positive, got " + std::to_string(v));
}

}  // namespace

LlamaConfig parse_llama_config(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "expected a JSON object");
  LlamaConfig c;
  c.raw = j;
  if (!j.contains("model_type") || !j["model_type"].is_string()) fail(where, "missing field 'model_type'");
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2")
    fail(where, "model_type '" + c.model_type + "' is not supported (llama, mistral, qwen2)");

  c.vocab_size = get_int(j, "vocab_size", where);
  c.hidden_size = get_int(j, "hidden_size", where);
  c.intermediate_size = get_int(j, "intermediate_size", where);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", where);
  c.num_attention_heads = get_int(j, "num_attention_heads", where);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", where, c.num_attention_heads);
  for (const char* k : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"})
    require_positive(get_int(j, k, where), k, where);
  require_positive(c.num_key_value_heads, "num_key_value_heads", where);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(where, "field 'num_key_value_heads' (" + std::to_string(c.num_key_value_heads) +
                    ") must divide num_attention_heads (" + std::to_string(c.num_attention_heads) + ")");
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = get_int(j, "head_dim", where);
    require_positive(c.head_dim, "head_dim", where);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail(where, "field 'num_attention_heads' (" + std::to_string(c.num_attention_heads) +
                      ") must divide hidden_size (" + std::to_string(c.hidden_size) + ") when head_dim is not given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) fail(where, "field 'head_dim' must be even for rotary embeddings");
  if (j.contains("hidden_act") && j["hidden_act"].is_string() && j["hidden_act"] != "silu")
    fail(where, "field 'hidden_act' '" + j["hidden_act"].get<std::string>() + "' is not supported (silu)");

  c.rms_norm_eps = get_number(j, "rms_norm_eps", where, 1e-6);
  c.rope_theta = get_number(j, "rope_theta", where, 10000.0);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", where, 2048);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", where, false);
  c.attention_bias = get_bool(j, "attention_bias", where, false);
  c.mlp_bias = get_bool(j, "mlp_bias", where, false);
  // Qwen2 always has q/k/v biases (transformers hard-codes them) and no o bias.
  c.qkv_bias = c.model_type == "qwen2";
  c.initializer_range = get_number(j, "initializer_range", where, 0.02);

  // RoPE: transformers 4 writes "rope_theta" and "rope_scaling" (null when unscaled); transformers 5
  // writes only "rope_parameters" ({"rope_type", "rope_theta", scaling fields}). As transformers 5
  // reads them: a non-null "rope_scaling" wins over "rope_parameters"; rope_theta from the chosen
  // object, else the top-level field; llama3's original_max_position_embeddings from a top-level
  // field, else the object, else max_position_embeddings.
  const json* rs = nullptr;
  std::string rs_name;
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    rs = &j["rope_scaling"];
    rs_name = "rope_scaling";
  } else if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    rs = &j["rope_parameters"];
    rs_name = "rope_parameters";
    // Nested per layer type ({"full_attention": {...}, ...}): one RoPE for all layers only.
    if (rs->is_object() && !rs->empty() && rs->begin().value().is_object()) {
      for (auto it = rs->begin(); it != rs->end(); ++it)
        if (it.value() != rs->begin().value())
          fail(where, "field 'rope_parameters' differs between layer types ('" + rs->begin().key() + "', '" + it.key() +
                          "'), which is not supported");
      rs_name += "." + rs->begin().key();
      rs = &rs->begin().value();
    }
  }
  if (rs) {
    if (!rs->is_object()) fail(where, "field '" + rs_name + "' must be an object or null");
    const char* type_key = rs->contains("rope_type") ? "rope_type" : "type";
    if (rs->contains(type_key) && !(*rs)[type_key].is_string())
      fail(where, "field '" + rs_name + "." + type_key + "' must be a string");
    std::string type = rs->contains(type_key) ? (*rs)[type_key].get<std::string>() : std::string("default");
    c.rope_theta = get_number(*rs, "rope_theta", where + " (" + rs_name + ")", c.rope_theta);
    if (type == "default") {
      c.rope_scaling.type = "none";
    } else if (type == "linear" || type == "llama3") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = get_number(*rs, "factor", where + " (" + rs_name + ")", 0.0);
      if (!(c.rope_scaling.factor > 0)) fail(where, "field '" + rs_name + ".factor' must be a positive number");
      if (type == "llama3") {
        c.rope_scaling.low_freq_factor = get_number(*rs, "low_freq_factor", where, 1.0);
        c.rope_scaling.high_freq_factor = get_number(*rs, "high_freq_factor", where, 4.0);
        c.rope_scaling.original_max_position_embeddings =
            get_int(j, "original_max_position_embeddings", where,
                    get_int(*rs, "original_max_position_embeddings", where, c.max_position_embeddings));
        if (c.rope_scaling.high_freq_factor <= c.rope_scaling.low_freq_factor)
          fail(where, "field '" + rs_name + ".high_freq_factor' must exceed low_freq_factor");
      }
    } else {
      fail(where, rs_name + " type '" + type + "' is not supported (linear, llama3)");
    }
  }
  if (j.contains("sliding_window") && j["sliding_window"].is_number_integer()) {
    bool used = c.model_type == "mistral" || get_bool(j, "use_sliding_window", where, false);
    if (used) c.sliding_window = j["sliding_window"].get<int64_t>();
  }
  c.bos_token_ids = get_ids(j, "bos_token_id", where);
  c.eos_token_ids = get_ids(j, "eos_token_id", where);
  auto pad = get_ids(j, "pad_token_id", where);
  if (!pad.empty()) c.pad_token_id = pad[0];
  for (auto id : c.bos_token_ids)
    if (id < 0 || id >= c.vocab_size) fail(where, "field 'bos_token_id' is outside the vocabulary");
  for (auto id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size) fail(where, "field 'eos_token_id' is outside the vocabulary");
  // transformers 5 writes "dtype" and, given both, keeps "dtype"; transformers 4 wrote "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (j.contains(key) && !j[key].is_null()) {
      if (!j[key].is_string()) fail(where, std::string("field '") + key + "' must be a string");
      c.torch_dtype = j[key].get<std::string>();
    }
  }
  return c;
}

LlamaConfig load_llama_config(const std::string& path) { return parse_llama_config(read_json_file(path), path); }

json llama_config_to_json(const LlamaConfig& c) {
  json j = c.raw.is_object() ? c.raw : json::object();
  static const std::map<std::string, std::string> arch = {
      {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
  j["architectures"] = {arch.at(c.model_type)};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.model_type != "qwen2") {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  j["initializer_range"] = c.initializer_range;
  if (c.rope_scaling.type == "none") {
    j["rope_scaling"] = nullptr;
  } else {
    json rs = {{"rope_type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  }
  // transformers 5's spelling of the same, so both versions read one RoPE (5 prefers a non-null
  // rope_scaling, 4 ignores rope_parameters).
  json rp = c.rope_scaling.type == "none" ? json{{"rope_type", "default"}} : j["rope_scaling"];
  rp["rope_theta"] = c.rope_theta;
  j["rope_parameters"] = rp;
  auto ids = [](const std::vector<int64_t>& v) -> json {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v[0];
    return v;
  };
  j["bos_token_id"] = ids(c.bos_token_ids);
  j["eos_token_id"] = ids(c.eos_token_ids);
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  j["torch_dtype"] = c.torch_dtype;
  j["dtype"] = c.torch_dtype;  // transformers 5's name, which wins over torch_dtype there
  return j;
}

int64_t LlamaConfig::num_parameters() const {
  const int64_t h = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim;
  int64_t attn = h * q + 2 * h * kv + q * h;
  if (attention_bias) attn += q + 2 * kv + h;
  else if (qkv_bias) attn += q + 2 * kv;
  int64_t mlp = 3 * h * intermediate_size + (mlp_bias ? 2 * intermediate_size + h : 0);
  int64_t layer = attn + mlp + 2 * h;
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * layer + h;
}

}  // namespace flatune
