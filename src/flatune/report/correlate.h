// `flatune correlate`: a sharpness metric against forgetting (or any two columns) across runs,
// Pearson and Spearman with two-sided p-values.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "flatune/report/run_table.h"
#include "flatune/report/stats.h"

namespace flatune {

struct RunCorrelation {
  std::string source, x, y;
  std::vector<std::string> labels;  // the runs that have both values
  std::vector<double> xs, ys;
  size_t left_out = 0;  // runs without both (finite) values
  TestResult pearson, spearman;
};

// Errors (naming --x or --y) when no run has a column, and (naming `source`) when fewer than 3
// runs have both values.
RunCorrelation correlate_runs(const RunTable& table, const std::string& x, const std::string& y,
                              const std::string& source);

// correlation.json, and correlation.png/.svg: y against x, each point labelled with its run.
void write_correlation(const RunCorrelation& c, const std::string& out_dir);

}  // namespace flatune
