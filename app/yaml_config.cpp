#include "yaml_config.h"

#include <yaml-cpp/yaml.h>

#include <sstream>

#include "flatune/core/error.h"

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
  path_ = "config file";
  if (const CLI::Option* opt = root_->get_option_no_throw("--config"); opt && opt->count() > 0)
    path_ = opt->results().back();
  key_lines_.clear();
  auto at_line = [&](int line) { return path_ + ": line " + std::to_string(line); };

  std::stringstream ss;
  ss << input.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(ss.str());
  } catch (const YAML::Exception& e) { fail(at_line(e.mark.line + 1), "malformed YAML: " + e.msg); }
  std::vector<CLI::ConfigItem> items;
  if (!root || root.IsNull()) return items;
  if (!root.IsMap()) fail(at_line(root.Mark().line + 1), "expected a map of flag: value");
  // The keys are the flags of the verb on the command line.
  const auto verbs = root_->get_subcommands();
  const CLI::App* verb = verbs.empty() ? root_ : verbs.front();
  const std::string verb_name = verbs.empty() ? "flatune" : "flatune " + verb->get_name();
  for (const auto& kv : root) {
    const int line = kv.first.Mark().line + 1;
    if (!kv.first.IsScalar()) fail(at_line(line), "a key must be a flag name");
    CLI::ConfigItem item;
    item.name = kv.first.Scalar();
    const std::string where = at_line(line) + ": key '" + item.name + "'";
    if (item.name == "config") fail(where, "a config file cannot name another one");
    if (!verb->get_option_no_throw("--" + item.name)) fail(where, "not an option of `" + verb_name + "`");
    const YAML::Node& v = kv.second;
    if (v.IsSequence()) {
      for (const auto& e : v) {
        if (!e.IsScalar())
          fail(at_line(e.Mark().line + 1) + ": key '" + item.name + "'", "list items must be single values");
        item.inputs.push_back(e.Scalar());
      }
    } else if (v.IsScalar()) {
      item.inputs.push_back(v.Scalar());
    } else if (v.IsNull()) {
      continue;
    } else {
      fail(where, "must be a value or a list of values");
    }
    if (!verbs.empty()) item.parents = {verb->get_name()};
    key_lines_.emplace_back(item.name, line);
    items.push_back(std::move(item));
  }
  return items;
}

std::string YamlConfig::locate(const std::string& message, const std::vector<std::string>& argv) const {
  for (const auto& [key, line] : key_lines_) {
    const std::string flag = "--" + key;
    auto pos = message.find(flag);
    // The flag's whole name, not a longer one it starts ("--lr" in "--lr-min").
    if (pos == std::string::npos ||
        (pos + flag.size() < message.size() &&
         (std::isalnum(static_cast<unsigned char>(message[pos + flag.size()])) || message[pos + flag.size()] == '-')))
      continue;
    bool on_command_line = false;
    for (const auto& a : argv) on_command_line |= a == flag || a.rfind(flag + "=", 0) == 0;
    if (!on_command_line) return path_ + ": line " + std::to_string(line) + ": key '" + key + "'";
  }
  return "";
}

}  // namespace flatune::cli
