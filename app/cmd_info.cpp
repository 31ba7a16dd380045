// `flatune info PATH`: what a model folder or a .safetensors file holds, as plain text.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/io/checkpoint.h"
#include "flatune/io/safetensors.h"
#include "flatune/model/config.h"

namespace flatune::cli {

namespace {
namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_safetensors(const std::string& path) {
  SafetensorsFile f(path);
  std::printf("%s: %zu tensors\n", path.c_str(), f.header().tensors.size());
  for (const auto& t : f.header().tensors)
    std::printf("  %-48s %-5s %s\n", t.name.c_str(), t.dtype.c_str(), shape_text(t.shape).c_str());
  if (!f.header().metadata.empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : f.header().metadata) std::printf("  %s: %s\n", k.c_str(), v.c_str());
  }
}

void print_folder(const std::string& dir, bool weight_norm) {
  const std::string config_path = dir + "/config.json";
  if (!fs::exists(config_path)) throw Error(config_path, "missing (not a model folder)");
  LlamaConfig c = load_llama_config(config_path);
  std::printf("model_type: %s\n", c.model_type.c_str());
  std::printf("vocab_size: %lld\nhidden_size: %lld\nintermediate_size: %lld\n", (long long)c.vocab_size,
              (long long)c.hidden_size, (long long)c.intermediate_size);
  std::printf("layers: %lld\nattention heads: %lld\nkey/value heads: %lld\nhead_dim: %lld\n",
              (long long)c.num_hidden_layers, (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
              (long long)c.head_dim);
  std::printf("max_position_embeddings: %lld\nrope_theta: %g\nrope_scaling: %s\n", (long long)c.max_position_embeddings,
              c.rope_theta, c.rope_scaling.type.c_str());
  std::printf("tie_word_embeddings: %s\n", c.tie_word_embeddings ? "true" : "false");
  std::printf("parameters: %lld\n", (long long)c.num_parameters());
  std::printf("torch_dtype: %s\n", c.torch_dtype.c_str());
  if (weight_norm) std::printf("weight norm: %.6g\n", checkpoint_weight_norm(dir));
  std::printf("files:\n");
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& p : files)
    std::printf("  %-36s %12llu bytes\n", p.filename().c_str(), (unsigned long long)fs::file_size(p));
  std::printf("tokenizer files:");
  bool any = false;
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(dir + "/" + name)) std::printf(" %s", name), any = true;
  std::printf("%s\n", any ? "" : " none");
}
}  // namespace

void add_info_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("info", "Describe a model folder or a .safetensors file");
  auto weight_norm = std::make_shared<bool>(false);
  cmd->add_option("path", *path, "model folder or .safetensors file")->required();
  cmd->add_flag("--weight-norm", *weight_norm,
                "also print ||weights||_2 over all stored floating-point tensors (reads every weight; what a "
                "grid's rho-reference-norm wants)");
  cmd->callback([path, weight_norm] {
    if (!fs::exists(*path)) throw Error(*path, "no such file or folder");
    if (fs::is_directory(*path)) print_folder(*path, *weight_norm);
    else print_safetensors(*path);
  });
}

}  // namespace flatune::cli
