#include "flatune/report/suite_health.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/eval/forgetting.h"
#include "flatune/eval/tasks.h"

namespace flatune {

namespace {

struct Scored {
  double metric = 0;
  double majority = 0;
};

// The task's reported metric and the share of its most common predicted answer in one folder.
Scored score_in(const Task& task, const std::string& dir) {
  const std::string result_file = join_path(dir, "eval/" + task.name + ".json");
  const std::string items_file = join_path(dir, "eval/" + task.name + ".items.jsonl");
  if (!file_exists(result_file)) fail(result_file, "missing (the suite was not evaluated here)");
  const json result = read_json_file(result_file);
  const std::string metric = reported_metric(task.name, result);
  Scored s;
  s.metric = result.at("metrics").at(metric).get<double>();
  if (!file_exists(items_file)) fail(items_file, "missing (per-item predictions are needed to check the suite)");
  std::map<std::string, json> by_id;
  std::istringstream in(read_file(items_file));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    json j = parse_json_text(line, items_file + ":" + std::to_string(line_no));
    std::string id = j.at("id").get<std::string>();
    by_id[id] = std::move(j);
  }
  std::map<std::string, int64_t> answers;
  int64_t counted = 0;
  for (const auto& item : task.mc) {
    auto it = by_id.find(item.id);
    if (it == by_id.end()) continue;  // an evaluation limited to the first items
    const int pred = it->second.at("pred_" + metric).get<int>();
    if (pred < 0 || pred >= item.num_choices()) fail(items_file, "item " + item.id + ": prediction out of range");
    ++answers[item.choices.size() > 1 ? item.choice(pred) : std::to_string(pred)];
    ++counted;
  }
  if (counted == 0) fail(items_file, "no item of " + task.path + " was evaluated");
  int64_t most = 0;
  for (const auto& [answer, n] : answers) most = std::max(most, n);
  s.majority = static_cast<double>(most) / counted;
  return s;
}

std::string fixed(double x, int digits) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, x);
  return b;
}

}  // namespace

std::vector<SuiteHealth> suite_health(const std::vector<std::string>& suite_files, const std::string& before_dir,
                                      const std::vector<std::pair<std::string, std::string>>& runs,
                                      double majority_limit) {
  std::vector<SuiteHealth> rows;
  for (const auto& file : suite_files) {
    const Task task = read_task(file);
    if (task.kind != "multiple_choice") continue;
    SuiteHealth h;
    h.task = task.name;
    h.items = static_cast<int64_t>(task.mc.size());
    for (const auto& item : task.mc) h.chance += 1.0 / item.num_choices();
    h.chance /= std::max<int64_t>(1, h.items);
    const Scored before = score_in(task, before_dir);
    h.before = before.metric;
    h.before_majority = before.majority;
    h.same_in_every_run = !runs.empty();
    for (const auto& [name, dir] : runs) {
      const Scored s = score_in(task, dir);
      if (s.majority > h.worst_majority) {
        h.worst_majority = s.majority;
        h.worst_run = name;
      }
      if (s.metric != before.metric) h.same_in_every_run = false;
    }
    if (h.before_majority > majority_limit)
      h.flags.push_back("the before model gives one answer to " + fixed(100 * h.before_majority, 0) + "% of items");
    if (h.worst_majority > majority_limit)
      h.flags.push_back(h.worst_run + " gives one answer to " + fixed(100 * h.worst_majority, 0) + "% of items");
    if (h.same_in_every_run) h.flags.emplace_back("the same score in every run: it cannot show forgetting");
    if (h.before < h.chance + 0.05) h.flags.emplace_back("the before model scores near chance: nothing to forget");
    rows.push_back(std::move(h));
  }
  return rows;
}

std::string suite_health_markdown(const std::vector<SuiteHealth>& rows, double majority_limit) {
  std::ostringstream md;
  md << "| suite | items | chance | before | one-answer share (before) | largest one-answer share (run) | flags |\n"
     << "|---|---:|---:|---:|---:|---:|---|\n";
  for (const auto& h : rows) {
    md << "| " << h.task << " | " << h.items << " | " << fixed(h.chance, 3) << " | " << fixed(h.before, 4) << " | "
       << fixed(h.before_majority, 3) << " | "
       << (h.worst_run.empty() ? "n/a" : fixed(h.worst_majority, 3) + " (" + h.worst_run + ")") << " | ";
    for (size_t i = 0; i < h.flags.size(); ++i) md << (i ? "; " : "") << h.flags[i];
    md << (h.flags.empty() ? "ok" : "") << " |\n";
  }
  md << "\nA suite is flagged when one answer takes more than " << fixed(100 * majority_limit, 0)
     << "% of its items' predictions, when it scores the same in every run, or when the before model is within 0.05 "
        "of chance.\n";
  return md.str();
}

}  // namespace flatune
