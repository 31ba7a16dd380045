// Forgetting watched during training: the scores of every watched step (watch.csv), and the
// rule that picks the checkpoint kept as best/. The evaluation itself is the caller's (see
// report/watch.h): train/ does not depend on eval/.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace flatune {

// What one watch measured, as the evaluation returns it.
struct WatchScore {
  double overall = 0;                                   // general score: mean of the category scores
  std::optional<double> target;                         // the target task's score, when there is a target test
  std::vector<std::pair<std::string, double>> columns;  // "category:<name>", "task:<name>" scores
};

struct WatchRow {
  int64_t step = 0;
  WatchScore score;
  double forgetting = 0;   // overall at step 0 - overall now (positive: forgot)
  double target_gain = 0;  // target now - target at step 0 (0 without a target)
  double seconds = 0;      // time the watch took
};

// A row relative to the run's first (step 0) row; the first row is relative to itself.
WatchRow make_watch_row(int64_t step, const WatchScore& score, double seconds, const WatchRow* first);

// watch.csv: step,overall,target,forgetting,target_gain,watch_seconds,<columns...>; numbers
// %.17g, so that a value read back is the value written; target cells empty without a target.
std::string watch_csv_header(const WatchRow& row);
std::string watch_csv_line(const WatchRow& row);

// The rows of a watch.csv with step <= up_to_step (what a resumed run keeps); empty when the
// file is absent. Columns are found by name; errors (a malformed header, a cell that is not a
// number, steps out of order) name the file and line as FILE:LINE.
std::vector<WatchRow> read_watch_csv(const std::string& path, int64_t up_to_step);

// Rewrites watch.csv with `rows` (atomically).
void write_watch_csv(const std::string& path, const std::vector<WatchRow>& rows);

// --keep-best: "forgetting" (the least forgetting), "target" (the highest target score),
// "tradeoff" (the highest target gain among steps whose forgetting is at most max_forgetting).
// Step 0 (the model before fine-tuning) is never chosen; ties go to the earlier step. Returns
// the chosen row's index and why, or nothing when no step qualifies.
struct BestChoice {
  size_t index = 0;
  std::string why;
};
std::optional<BestChoice> choose_best(const std::vector<WatchRow>& rows, const std::string& rule,
                                      double max_forgetting);

// Rejects an unknown rule, or one the watch cannot serve (target rules without a target).
void check_keep_best(const std::string& rule, bool has_target);

}  // namespace flatune
