#include "flatune/io/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"

namespace fs = std::filesystem;

namespace flatune {

namespace {
const char* kIndex = "model.safetensors.index.json";
const char* kSingle = "model.safetensors";
}  // namespace

void for_each_checkpoint_tensor(const std::string& dir,
                                const std::function<void(const std::string&, const torch::Tensor&)>& visit) {
  if (!dir_exists(dir)) fail(dir, "no such model folder");
  const std::string single = join_path(dir, kSingle), index = join_path(dir, kIndex);
  if (file_exists(single)) {
    SafetensorsFile f(single);
    for (const auto& e : f.header().tensors) visit(e.name, f.load(e.name));
    return;
  }
  if (!file_exists(index)) fail(dir, std::string("no ") + kSingle + " or " + kIndex + " in the model folder");
  json j = read_json_file(index);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail(index, "missing object 'weight_map'");
  // Shards in first-mention order; every tensor must be in the shard the map names.
  std::vector<std::string> shards;
  std::map<std::string, std::string> where;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail(index, "weight_map entry '" + it.key() + "' is not a file name");
    std::string shard = it.value().get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "..")
      fail(index, "shard name '" + shard + "' must be a file in the folder");
    where[it.key()] = shard;
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
  }
  for (const auto& shard : shards) {
    std::string path = join_path(dir, shard);
    if (!file_exists(path)) fail(path, "shard named in " + std::string(kIndex) + " is missing");
    SafetensorsFile f(path);
    for (const auto& e : f.header().tensors) {
      auto it = where.find(e.name);
      if (it == where.end() || it->second != shard)
        fail(path, "tensor '" + e.name + "' is not mapped to this shard in the index");
      visit(e.name, f.load(e.name));
      where.erase(it);
    }
  }
  if (!where.empty())
    fail(join_path(dir, where.begin()->second),
         "tensor '" + where.begin()->first + "' named in the index is not in the shard");
}

NamedTensors load_checkpoint_weights(const std::string& dir) {
  NamedTensors out;
  for_each_checkpoint_tensor(dir, [&](const std::string& name, const torch::Tensor& t) { out.emplace_back(name, t); });
  return out;
}

double checkpoint_weight_norm(const std::string& dir) {
  double sum = 0;
  for_each_checkpoint_tensor(dir, [&](const std::string&, const torch::Tensor& t) {
    if (t.is_floating_point()) sum += t.to(torch::kDouble).pow(2).sum().item<double>();
  });
  return std::sqrt(sum);
}

void copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    std::string src = join_path(from_dir, name);
    if (file_exists(src)) write_file_atomic(join_path(to_dir, name), read_file(src));
  }
}

namespace {
std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return "float32";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kHalf:
      return "float16";
    case torch::kDouble:
      return "float64";
    default:
      fail("save", std::string("unsupported weight dtype ") + c10::toString(t));
  }
}
}  // namespace

void save_checkpoint(const std::string& dir, const json& config, const NamedTensors& weights, const SaveOptions& opts,
                     const std::string& tokenizer_dir) {
  write_folder_atomic(dir, [&](const std::string& tmp) {
    json cfg = config;
    // Both spellings: transformers 5 reads "dtype" (and prefers it), 4 read "torch_dtype"; with
    // transformers 5's default dtype="auto" a stale one would load the weights in another dtype.
    cfg["torch_dtype"] = cfg["dtype"] = dtype_name(opts.dtype);
    write_file_atomic(join_path(tmp, "config.json"), cfg.dump(2) + "\n");
    json gen = {{"_from_model_config", true}};
    for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"})
      if (cfg.contains(k) && !cfg[k].is_null()) gen[k] = cfg[k];
    write_file_atomic(join_path(tmp, "generation_config.json"), gen.dump(2) + "\n");

    NamedTensors converted;
    int64_t total = 0;
    for (const auto& [name, t] : weights) {
      // .to() rounds to nearest even, as torch.Tensor.to(bfloat16) does.
      torch::Tensor c = t.detach().to(torch::kCPU).to(opts.dtype).contiguous();
      total += c.numel() * c.element_size();
      converted.emplace_back(name, c);
    }
    if (opts.max_shard_bytes <= 0) {
      write_safetensors(join_path(tmp, kSingle), converted, {{"format", "pt"}});
    } else {
      // Greedy shards in tensor order, as transformers' shard_checkpoint does.
      std::vector<NamedTensors> shards(1);
      int64_t bytes = 0;
      for (auto& nt : converted) {
        int64_t b = nt.second.numel() * nt.second.element_size();
        if (!shards.back().empty() && bytes + b > opts.max_shard_bytes) {
          shards.emplace_back();
          bytes = 0;
        }
        shards.back().push_back(nt);
        bytes += b;
      }
      json map = json::object();
      const size_t n = shards.size();
      for (size_t i = 0; i < n; ++i) {
        char name[64];
        std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
        write_safetensors(join_path(tmp, name), shards[i], {{"format", "pt"}});
        for (auto& nt : shards[i]) map[nt.first] = name;
      }
      json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
      write_file_atomic(join_path(tmp, kIndex), index.dump(2) + "\n");
    }
    if (!tokenizer_dir.empty()) copy_tokenizer_files(tokenizer_dir, tmp);
  });
}

}  // namespace flatune
