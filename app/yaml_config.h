// `--config FILE.yaml` for every verb: a flat YAML map whose keys are the long flag names
// (lists for flags that take several values). Flags on the command line override it.
#pragma once
#include <CLI/CLI.hpp>

namespace flatune::cli {

class YamlConfig : public CLI::Config {
 public:
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
};

}  // namespace flatune::cli
