// Whether a general-ability suite can measure forgetting at all: a suite the before model
// answers near chance, one whose predictions collapse onto one answer, or one that scores the
// same in every run cannot show a method forgetting less, and only dilutes the overall score.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace flatune {

struct SuiteHealth {
  std::string task;
  int64_t items = 0;
  double chance = 0;           // mean over items of 1 / choices
  double before = 0;           // the before model's reported metric
  double before_majority = 0;  // share of items whose predicted answer is the most common one
  double worst_majority = 0;   // the largest such share over the tuned runs
  std::string worst_run;
  bool same_in_every_run = false;  // before and every tuned run score exactly alike
  std::vector<std::string> flags;  // empty: healthy
};

// One row per multiple-choice suite file; results are read from <dir>/eval/<task>.json and
// <task>.items.jsonl of the before model and of each (name, run folder). A predicted answer is
// the chosen choice's text, under the metric the forgetting table reports for the task.
std::vector<SuiteHealth> suite_health(const std::vector<std::string>& suite_files, const std::string& before_dir,
                                      const std::vector<std::pair<std::string, std::string>>& runs,
                                      double majority_limit = 0.9);

std::string suite_health_markdown(const std::vector<SuiteHealth>& rows, double majority_limit = 0.9);

}  // namespace flatune
