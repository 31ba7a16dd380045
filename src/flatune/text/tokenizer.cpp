#include "flatune/text/tokenizer.h"

#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/text/hf_tokenizer.h"
#include "flatune/text/sentencepiece_tokenizer.h"

namespace flatune {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::string dir = path, file;
  if (file_exists(path)) {
    dir = std::filesystem::path(path).parent_path().string();
    file = path;
  } else if (!dir_exists(path)) {
    fail(path, "no such tokenizer file or folder");
  }
  json config;
  std::string config_path = join_path(dir, "tokenizer_config.json");
  if (file_exists(config_path)) config = read_json_file(config_path);
  if (file.empty()) {
    if (file_exists(join_path(dir, "tokenizer.json"))) file = join_path(dir, "tokenizer.json");
    else if (file_exists(join_path(dir, "tokenizer.model"))) file = join_path(dir, "tokenizer.model");
    else fail(dir, "no tokenizer.json or tokenizer.model in the folder");
  }
  if (file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0) return load_hf_tokenizer(file, config);
  return load_sentencepiece_tokenizer(file, config, /*split_special=*/!config.is_null());
}

}  // namespace flatune
