// Hugging Face model folders: config.json + model.safetensors, or model.safetensors.index.json
// + shards; tokenizer files copied alongside.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>
#include "flatune/io/safetensors.h"

namespace flatune {

// All weights of a folder (single file or sharded), by Hugging Face name. Errors name the
// missing or malformed file.
NamedTensors load_checkpoint_weights(const std::string& dir);

// Every tensor of a folder in file order, loaded one at a time (a 7B checkpoint need not fit in
// memory twice).
void for_each_checkpoint_tensor(const std::string& dir,
                                const std::function<void(const std::string&, const torch::Tensor&)>& visit);

// ||weights||_2 over every floating-point tensor as stored (tied embeddings count once), in
// float64: what a SAM rho is relative to.
double checkpoint_weight_norm(const std::string& dir);

struct SaveOptions {
  torch::ScalarType dtype = torch::kFloat32;  // weights are converted (round-to-nearest-even for bf16)
  int64_t max_shard_bytes = 0;                // 0: one model.safetensors; else shards + index
};

// Writes config.json (given as JSON, e.g. llama_config_to_json; torch_dtype set from opts),
// generation_config.json and the weights; copies tokenizer files from `tokenizer_dir` when
// given. The folder is written under a temporary name and renamed, so a crash never leaves a
// half-written folder at `dir` (an existing `dir` is replaced only once the new one is whole).
void save_checkpoint(const std::string& dir, const nlohmann::json& config, const NamedTensors& weights,
                     const SaveOptions& opts = {}, const std::string& tokenizer_dir = "");

// Copies tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json when present.
void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir);

}  // namespace flatune
