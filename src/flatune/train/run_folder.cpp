#include "flatune/train/run_folder.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace fs = std::filesystem;

namespace flatune {

std::vector<int64_t> list_checkpoints(const RunFolder& run) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(run.checkpoints_dir(), ec)) return steps;
  for (const auto& e : fs::directory_iterator(run.checkpoints_dir(), ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !e.is_directory()) continue;
    std::string num = name.substr(5);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    // Complete checkpoints carry trainer_state.json, written last before the rename.
    if (!fs::exists(e.path() / "trainer_state.json")) continue;
    steps.push_back(std::stoll(num));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<int64_t> newest_checkpoint(const RunFolder& run) {
  auto steps = list_checkpoints(run);
  if (steps.empty()) return std::nullopt;
  return steps.back();
}

void prune_checkpoints(const RunFolder& run, int64_t keep) {
  std::error_code ec;
  if (fs::is_directory(run.checkpoints_dir(), ec)) {
    for (const auto& e : fs::directory_iterator(run.checkpoints_dir(), ec))
      if (e.path().filename().string().find(".partial") != std::string::npos ||
          e.path().filename().string().rfind(".step-", 0) == 0)  // sharded optimizer files a crash left
        fs::remove_all(e.path(), ec);
  }
  if (keep <= 0) return;
  auto steps = list_checkpoints(run);
  for (size_t i = 0; i + keep < steps.size(); ++i) fs::remove_all(run.checkpoint_dir(steps[i]), ec);
}

MetricsLog::MetricsLog(const std::string& path, bool truncate_after_step, int64_t after_step) : path_(path) {
  if (truncate_after_step && file_exists(path)) {
    // On resume, drop lines logged after the checkpoint so the log reads as one run.
    std::ifstream in(path);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.contains("step") && j["step"].get<int64_t>() > after_step) continue;
      } catch (...) {
        continue;  // a torn last line from a crash
      }
      kept += line + "\n";
    }
    write_file_atomic(path, kept);
  }
  out_.open(path, std::ios::app);
  if (!out_) fail(path, "cannot open for appending");
}

void MetricsLog::write(const nlohmann::json& line) {
  out_ << line.dump() << '\n';
  out_.flush();
  if (!out_) fail(path_, "write failed (disk full?)");
}

namespace {
void emit(YAML::Emitter& out, const nlohmann::json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (auto it = j.begin(); it != j.end(); ++it) {
      out << YAML::Key << it.key() << YAML::Value;
      emit(out, it.value());
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& e : j) emit(out, e);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << j.get<std::string>();
  } else if (j.is_null()) {
    out << YAML::Null;
  } else {
    out << j.dump();
  }
}
}  // namespace

std::string json_to_yaml(const nlohmann::json& j) {
  YAML::Emitter out;
  emit(out, j);
  return std::string(out.c_str()) + "\n";
}

namespace {
nlohmann::json yaml_to_json(const YAML::Node& n) {
  if (n.IsMap()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& kv : n) j[kv.first.Scalar()] = yaml_to_json(kv.second);
    return j;
  }
  if (n.IsSequence()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& e : n) j.push_back(yaml_to_json(e));
    return j;
  }
  if (n.IsScalar()) return n.Scalar();
  return nullptr;
}
}  // namespace

nlohmann::json read_run_config(const RunFolder& run) {
  const std::string path = run.config_path();
  if (!file_exists(path)) return nullptr;
  try {
    nlohmann::json j = yaml_to_json(YAML::Load(read_file(path)));
    if (!j.is_object()) fail(path, "expected a map of option: value");
    return j;
  } catch (const YAML::Exception& e) {
    fail(path + ": line " + std::to_string(e.mark.line + 1), "malformed YAML: " + e.msg);
  }
}

}  // namespace flatune
