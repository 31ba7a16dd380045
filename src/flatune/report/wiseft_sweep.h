// The Wise-FT trade-off curve: for each alpha, theta(alpha) = (1 - alpha)*base + alpha*tuned
// (retain/merge.h; a LoRA-tuned folder scales its adapter by alpha) is built in memory and
// evaluated on the general suites and on the target task; the table says, per alpha, what the
// general suites kept and what the target gained.
//
// Scores: each task's metric is the one lm-evaluation-harness reports for it
// (eval/forgetting.h: reported_metric). General tasks are grouped by `categories` (a task in no
// category is a category of its own, named after the task); a category's score is the mean of
// its tasks; `general` is the unweighted mean of the category scores (as the forgetting table's
// overall). alpha = 0 is the base model and the reference: forgetting(alpha) = general(0) -
// general(alpha) (positive: forgotten), target_gain(alpha) = target(alpha) - target(0).
//
// Writes into out_dir:
//   wiseft_sweep.csv   alpha, one column per category, general, forgetting, target, target_gain
//   wiseft_sweep.json  {"base", "tuned", "target_task", "target_metric", "categories": [names],
//                       "tasks": {task: {"category", "metric"}},
//                       "rows": [{"alpha", "categories": {name: score}, "tasks": {task: score},
//                                 "general", "forgetting", "target", "target_gain"}]}
//   wiseft_sweep.png, wiseft_sweep.svg   target gain (y) against forgetting (x), points
//                                        labelled with their alpha
#pragma once
#include <map>
#include <string>
#include <vector>

#include "flatune/core/json.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/forgetting.h"

namespace flatune {

struct WiseFtSweepOptions {
  std::string base_dir;                                  // HF model folder (its tokenizer is used for every alpha)
  std::string tuned_dir;                                 // HF model folder, or a PEFT adapter folder over base_dir
  std::vector<double> alphas = {0, 0.25, 0.5, 0.75, 1};  // each in [0, 1]; 0 is added when missing
  std::vector<std::string> general_tasks;                // task files (eval format), at least one
  std::string target_task;                               // task file of the fine-tuning target
  Categories categories = paper_categories();
  EvalOptions eval;             // settings for every task
  std::string target_template;  // generative target: wrap prompts in this training template
  std::string out_dir;          // receives the files above ("" writes nothing)
};

struct WiseFtSweepRow {
  double alpha = 0;
  std::map<std::string, double> task_scores;      // general task name -> score
  std::map<std::string, double> category_scores;  // category -> mean of its tasks
  double general = 0, forgetting = 0, target = 0, target_gain = 0;
};

struct WiseFtSweep {
  std::vector<std::string> categories;               // in the grouping's order, then lone tasks
  std::map<std::string, std::string> task_category;  // general task name -> category
  std::map<std::string, std::string> task_metric;    // general task name -> metric
  std::string target_name, target_metric;
  std::vector<WiseFtSweepRow> rows;  // ascending alpha
};

// Evaluates every alpha and, when out_dir is set, writes the table, JSON and figure. Errors
// name the offending file or option (bad alpha, missing task files, mismatched models).
WiseFtSweep run_wiseft_sweep(const WiseFtSweepOptions& opts);

// wiseft_sweep.json in an out_dir, for readers of a sweep that ran.
std::string wiseft_sweep_json_file(const std::string& out_dir);

std::string wiseft_sweep_csv(const WiseFtSweep& s);
json wiseft_sweep_json(const WiseFtSweep& s, const WiseFtSweepOptions& opts);

// "0,0.25,0.5" -> {0, 0.25, 0.5}; errors name `where` and the piece that is not a number.
std::vector<double> parse_alpha_list(const std::string& text, const std::string& where);

}  // namespace flatune
