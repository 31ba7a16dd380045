// Runs as rows of named numbers, for `flatune correlate`: read from an experiment folder or
// from a CSV someone made by hand.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace flatune {

struct RunTable {
  std::vector<std::string> labels;
  std::vector<std::map<std::string, double>> values;  // a run's missing values are absent, not NaN
};

// Header row, then one row per run; a column "run" or "name" labels the rows (default "row N").
// Empty, "nan", "NaN" and "n/a" cells are missing values. Errors name the file and line.
RunTable read_runs_csv(const std::string& path);

// An experiment folder (or its runs/): every run's numbers from flatness.json and
// sharpness.json, with forgetting (the before model's overall score minus the run's) and
// target_gain from the experiment's forgetting.json when it exists. Runs with neither file are
// left out; errors when none is left.
RunTable read_runs_folder(const std::string& dir);

// read_runs_folder for a folder, read_runs_csv for a file.
RunTable read_runs(const std::string& source);

}  // namespace flatune
