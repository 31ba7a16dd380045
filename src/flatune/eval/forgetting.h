// Forgetting: the same tasks evaluated on a base model and on tuned models. Per task the metric
// lm-evaluation-harness reports for it; tasks grouped into categories (the seed paper's four by
// default); overall = the unweighted mean of the category scores; change = tuned - base (so
// forgetting shows as a negative change).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "flatune/core/json.h"

namespace flatune {

struct Categories {
  // category -> task-name prefixes (a task belongs to the first category with a matching prefix)
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;
  std::string category_of(const std::string& task) const;  // "" when none
};

// Domain knowledge (mmlu), reasoning (hellaswag boolq siqa copa rte piqa winogrande),
// understanding (race openbookqa), exams (arc_challenge truthfulqa).
Categories paper_categories();
// A YAML map {category: [task prefixes]}.
Categories load_categories(const std::string& path);

// The metric lm-eval reports for a task (acc_norm for hellaswag, arc, piqa, openbookqa, …;
// exact_match for generative tasks; acc otherwise).
std::string reported_metric(const std::string& task, const json& result);

// One model's general ability: each task's reported metric, each category the mean of its
// tasks, overall the mean of the categories (tasks in no category count in neither).
struct GeneralScore {
  std::map<std::string, double> tasks;
  std::vector<std::pair<std::string, double>> categories;  // in the grouping's order, present ones only
  double overall = 0;
};

// `results`: task name -> its result JSON (task_result_to_json, or eval/<task>.json).
GeneralScore general_score(const std::map<std::string, json>& results, const Categories& cats);

struct ForgettingRow {
  std::string name, category, metric;
  double base = 0;
  std::vector<double> tuned;  // one per tuned model
};

struct ForgettingTable {
  std::vector<std::string> tuned_names;
  std::vector<ForgettingRow> tasks, categories;
  ForgettingRow overall;
  std::vector<ForgettingRow> targets;  // target tasks (not part of the overall score)
};

// Reads <dir>/eval/<task>.json for every task of the base; each tuned folder must have them
// all. Target tasks are reported separately as gains.
ForgettingTable forgetting_table(const std::string& base_dir, const std::vector<std::string>& tuned_dirs,
                                 const Categories& cats, const std::vector<std::string>& target_tasks);

std::string forgetting_markdown(const ForgettingTable& t);
std::string forgetting_csv(const ForgettingTable& t);
json forgetting_json(const ForgettingTable& t);

}  // namespace flatune
