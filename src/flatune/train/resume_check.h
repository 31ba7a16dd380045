// What --resume may change. A run folder's config.yaml describes the run; resuming it with
// options that alter what the run computes would make it describe neither half, so such changes
// are refused, naming each option and its two values. Changes that cannot alter the result
// (logging, checkpoint cadence, threads) and extending the run are allowed and recorded.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace flatune {

struct OptionChange {
  std::string key;     // the long flag name, as in config.yaml
  std::string before;  // as config.yaml holds it
  std::string after;
};

// The options (keys of `current`, a train_options_to_json) whose value in the stored
// config.yaml (`stored`, read by read_run_config) differs. Paths are compared as the files they
// name; keys the stored file lacks are not compared (older run folders).
std::vector<OptionChange> changed_options(const nlohmann::json& stored, const nlohmann::json& current);

// Options that cannot change what the run computes, step by step.
bool change_keeps_result(const std::string& key);

// Options that set the run's length (--max-steps, --epochs).
bool change_sets_length(const std::string& key);

// "--lr 0.001 (run: 0.002), --sam sam (run: none)".
std::string describe_changes(const std::vector<OptionChange>& changes);

// {"lr": {"from": "0.002", "to": "0.001"}, ...} for config.yaml and metrics.jsonl.
nlohmann::json changes_to_json(const std::vector<OptionChange>& changes);

}  // namespace flatune
