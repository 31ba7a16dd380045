// What `flatune train --watch` recorded in RUN_DIR/watch.csv, read back and compared: the
// forgetting curve of a run, the trade-off between forgetting and target gain, and methods
// compared at the same target gain (`flatune plot-watch`).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flatune {

// One run's watched steps, in increasing step order. `target` and `target_gain` are NaN where
// the run had no target test. The per-category and per-task columns are checked, not kept.
struct WatchCurve {
  std::string run;
  std::vector<int64_t> step;
  std::vector<double> overall, target, forgetting, target_gain;
  bool has_target() const;  // some step has a finite target gain
};

// RUN_DIR/watch.csv, or the file itself when the path ends in ".csv". An empty label becomes
// the run folder's name. Errors (flatune::Error) name the file, and the line for a bad row: no
// such file, a missing column, a row with the wrong number of cells, a cell that is not a
// number, a step that is not a whole number or not after the previous one, no row at all.
WatchCurve read_watch_csv(const std::string& path_or_run_dir, std::string run_label = "");

// Forgetting when the run's target gain first reached `gain`, interpolated linearly between
// the two watched steps around it on the (target_gain, forgetting) curve; NaN when the run never
// reached it or had no target. A method that learns the target more slowly also forgets more
// slowly, so comparing methods only at equal steps rewards learning less: at the same gain the
// comparison is of what each paid for what it learned. The first crossing counts, so a run that
// reaches the gain, falls back and reaches it again is measured where it got there first.
double forgetting_at_gain(const WatchCurve& c, double gain);

// The runs of one method, one per seed.
struct MethodCurves {
  std::string method;
  std::vector<WatchCurve> runs;
};

struct MatchedGainRow {
  std::string method;
  double gain = 0;
  double mean = 0, std = 0;  // of forgetting_at_gain over the runs that reached the gain
  int n = 0;                 // those runs; mean and std are NaN when none did
};

// `fractions` of the smallest final target gain among the runs that have one, so that every
// run reaches every gain at least once; empty when that smallest gain is not positive or no run
// has a target.
std::vector<double> matched_gains(const std::vector<MethodCurves>& methods,
                                  const std::vector<double>& fractions = {0.25, 0.5, 0.75, 1.0});

// Per method (in the given order), per gain: mean and sample standard deviation over its runs.
std::vector<MatchedGainRow> matched_gain_table(const std::vector<MethodCurves>& methods,
                                               const std::vector<double>& gains);
// The same at matched_gains(methods).
std::vector<MatchedGainRow> matched_gain_table(const std::vector<MethodCurves>& methods);

// A markdown table: method, target gain, runs, forgetting mean ± std.
std::string matched_gain_markdown(const std::vector<MatchedGainRow>& rows);

// PNG and SVG figures in `out_dir` (created): the forgetting curve (overall general score and
// target score against step) as forgetting_curve.png/.svg for a single run, or
// forgetting_curve_<run>.png/.svg for each of several; and tradeoff.png/.svg (forgetting
// against target gain, one line per run that has a target), drawn when some run has one.
// Returns the files written.
std::vector<std::string> write_watch_figures(const std::vector<WatchCurve>& curves, const std::string& out_dir);

}  // namespace flatune
