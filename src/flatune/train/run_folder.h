// A training run's folder: config.yaml (resolved settings), metrics.jsonl (one line per logged
// step), checkpoints/step-N/ (complete or absent: written as step-N.partial and renamed),
// final/, eval/, landscape/.
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>
#include "flatune/core/fs.h"

namespace flatune {

struct RunFolder {
  std::string root;

  std::string checkpoints_dir() const { return root + "/checkpoints"; }
  std::string checkpoint_dir(int64_t step) const { return checkpoints_dir() + "/step-" + std::to_string(step); }
  std::string final_dir() const { return root + "/final"; }
  std::string metrics_path() const { return root + "/metrics.jsonl"; }
  std::string config_path() const { return root + "/config.yaml"; }
  std::string watch_csv_path() const { return root + "/watch.csv"; }
  std::string best_dir() const { return root + "/best"; }
};

// Steps of the complete checkpoints in the folder, ascending (partial ones are ignored).
std::vector<int64_t> list_checkpoints(const RunFolder& run);
std::optional<int64_t> newest_checkpoint(const RunFolder& run);

// Removes all but the newest `keep` complete checkpoints (keep <= 0: keep all), and any
// leftovers of interrupted writes.
void prune_checkpoints(const RunFolder& run, int64_t keep);

// Appends JSON lines to metrics.jsonl, flushed per line so a crash loses at most one.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path, bool truncate_after_step = false, int64_t after_step = 0);
  void write(const nlohmann::json& line);

 private:
  std::string path_;
  std::ofstream out_;
};

// Settings as YAML (flat map; lists and nested objects kept), for config.yaml.
std::string json_to_yaml(const nlohmann::json& j);

// A run's config.yaml as JSON, every scalar as its text (what json_to_yaml wrote); null when the
// folder has none. A malformed file is an error naming it.
nlohmann::json read_run_config(const RunFolder& run);

}  // namespace flatune
