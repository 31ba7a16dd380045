#include "yaml_config.h"

#include <yaml-cpp/yaml.h>

#include <sstream>

namespace flatune::cli {

std::string YamlConfig::to_config(const CLI::App* app, bool default_also, bool, std::string) const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const CLI::Option* opt : app->get_options()) {
    if (opt->get_lnames().empty() || opt->get_configurable() == false) continue;
    const std::string& name = opt->get_lnames()[0];
    if (name == "help" || name == "config") continue;
    auto results = opt->results();
    if (results.empty()) {
      if (!default_also || opt->get_default_str().empty()) continue;
      out << YAML::Key << name << YAML::Value << opt->get_default_str();
    } else if (results.size() == 1 || opt->get_expected_max() <= 1) {
      out << YAML::Key << name << YAML::Value << results.back();
    } else {
      out << YAML::Key << name << YAML::Value << YAML::Flow << results;
    }
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::vector<CLI::ConfigItem> YamlConfig::from_config(std::istream& input) const {
  std::stringstream ss;
  ss << input.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(ss.str());
  } catch (const YAML::Exception& e) {
    throw CLI::ConversionError("config file: malformed YAML: " + e.msg + " (line " +
                               std::to_string(e.mark.line + 1) + ")");
  }
  std::vector<CLI::ConfigItem> items;
  if (!root || root.IsNull()) return items;
  if (!root.IsMap()) throw CLI::ConversionError("config file: expected a map of flag: value");
  for (const auto& kv : root) {
    CLI::ConfigItem item;
    item.name = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (v.IsSequence()) {
      for (const auto& e : v) item.inputs.push_back(e.as<std::string>());
    } else if (v.IsScalar()) {
      item.inputs.push_back(v.as<std::string>());
    } else if (v.IsNull()) {
      continue;
    } else {
      throw CLI::ConversionError("config file: key '" + item.name + "' must be a value or a list");
    }
    items.push_back(std::move(item));
  }
  return items;
}

}  // namespace flatune::cli
