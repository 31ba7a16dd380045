// `--config FILE.yaml` for every verb: a flat YAML map whose keys are the long flag names of the
// verb (lists for flags that take several values). Flags on the command line override it.
// Every error names the file, the line and the key.
#pragma once
#include <CLI/CLI.hpp>

#include <string>
#include <utility>
#include <vector>

namespace flatune::cli {

class YamlConfig : public CLI::Config {
 public:
  explicit YamlConfig(const CLI::App* root) : root_(root) {}
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

  // For an error CLI11 raises later about a value from the file (a bad number, a failed
  // check): "FILE: line N: key 'K'" when the message is about one of the file's keys that the
  // command line did not set too; empty otherwise.
  std::string locate(const std::string& message, const std::vector<std::string>& argv) const;

 private:
  const CLI::App* root_;
  // What the last from_config read: CLI11 hands over only a stream.
  mutable std::string path_;
  mutable std::vector<std::pair<std::string, int>> key_lines_;
};

}  // namespace flatune::cli
