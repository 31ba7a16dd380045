#include "flatune/train/resume_check.h"

#include <filesystem>
#include <set>

namespace flatune {

namespace {

// A value as config.yaml writes it (json_to_yaml): strings as they are, the rest as JSON text.
std::string as_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + as_text(v[i]);
    return out + "]";
  }
  return v.dump();
}

bool is_path_option(const std::string& key) {
  static const std::set<std::string> paths = {"model", "init", "tokenizer", "data", "replay", "ewc"};
  return paths.count(key) > 0;
}

// "./run/../m" and "m" name the same folder.
std::string resolved_path(const std::string& p) {
  if (p.empty()) return p;
  std::error_code ec;
  auto r = std::filesystem::weakly_canonical(p, ec);
  return ec ? p : r.string();
}

}  // namespace

std::vector<OptionChange> changed_options(const nlohmann::json& stored, const nlohmann::json& current) {
  std::vector<OptionChange> changes;
  for (auto it = current.begin(); it != current.end(); ++it) {
    const std::string& key = it.key();
    if (key == "out" || !stored.contains(key)) continue;
    std::string before = as_text(stored[key]), after = as_text(it.value());
    bool same = is_path_option(key) ? resolved_path(before) == resolved_path(after) : before == after;
    if (!same) changes.push_back({key, before, after});
  }
  return changes;
}

bool change_keeps_result(const std::string& key) {
  static const std::set<std::string> keeps = {
      "log-every",       "eval-every", "save-every", "keep-last", "threads", "watch-every", "checkpoint-activations",
      "watch-batch-size"};
  return keeps.count(key) > 0;
}

bool change_sets_length(const std::string& key) { return key == "max-steps" || key == "epochs"; }

std::string describe_changes(const std::vector<OptionChange>& changes) {
  std::string out;
  for (const auto& c : changes)
    out += (out.empty() ? "" : ", ") + ("--" + c.key + " " + c.after + " (run: " + c.before + ")");
  return out;
}

nlohmann::json changes_to_json(const std::vector<OptionChange>& changes) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& c : changes) j[c.key] = {{"from", c.before}, {"to", c.after}};
  return j;
}

}  // namespace flatune
