#include "flatune/report/wiseft_sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/log.h"
#include "flatune/core/progress.h"
#include "flatune/model/llama.h"
#include "flatune/report/plot.h"
#include "flatune/retain/merge.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

std::vector<double> parse_alpha_list(const std::string& text, const std::string& where) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string piece;
  while (std::getline(ss, piece, ',')) {
    piece.erase(0, piece.find_first_not_of(" \t"));
    piece.erase(piece.find_last_not_of(" \t") + 1);
    size_t used = 0;
    double a = 0;
    try {
      a = std::stod(piece, &used);
    } catch (const std::exception&) { used = 0; }
    if (piece.empty() || used != piece.size())
      fail(where, "'" + piece + "' is not a number (give alphas as 0,0.25,0.5)");
    out.push_back(a);
  }
  if (out.empty()) fail(where, "no alpha given");
  return out;
}

namespace {

double mean(const std::vector<double>& xs) {
  double s = 0;
  for (double x : xs) s += x;
  return xs.empty() ? 0 : s / static_cast<double>(xs.size());
}

std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6f", x);
  return buf;
}

std::string alpha_label(double a) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", a);
  return buf;
}

}  // namespace

WiseFtSweep run_wiseft_sweep(const WiseFtSweepOptions& o) {
  if (o.general_tasks.empty()) fail("--tasks", "give the general task files the sweep measures forgetting on");
  if (o.target_task.empty()) fail("--target", "give the target task file");
  // Alphas checked, sorted, without repeats, with the reference 0 among them.
  std::vector<double> alphas = o.alphas;
  for (double a : alphas)
    if (!(a >= 0 && a <= 1)) fail("--alphas", "each alpha must be in [0, 1] (got " + alpha_label(a) + ")");
  alphas.push_back(0);
  std::sort(alphas.begin(), alphas.end());
  alphas.erase(std::unique(alphas.begin(), alphas.end()), alphas.end());

  // Every file read before the first (slow) evaluation, so bad input fails at once.
  std::vector<Task> general;
  for (const auto& path : o.general_tasks) general.push_back(read_task(path));
  Task target = read_task(o.target_task);
  for (size_t i = 0; i < general.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (general[i].name == general[j].name)
        fail(general[i].path, "two general task files are named '" + general[i].name + "'");
  auto tok = load_tokenizer(o.base_dir);
  auto model = load_llama(o.base_dir);
  WiseFtEnds ends = load_wiseft_ends(o.base_dir, o.tuned_dir);

  WiseFtSweep s;
  s.target_name = target.name;
  Progress progress("wiseft-sweep", static_cast<int64_t>(alphas.size()), "alpha");
  for (size_t k = 0; k < alphas.size(); ++k) {
    const double alpha = alphas[k];
    model->load_weights(wiseft_weights(ends, alpha, false), o.tuned_dir);
    WiseFtSweepRow row;
    row.alpha = alpha;
    for (const auto& task : general) {
      json r = task_result_to_json(evaluate_task(model, *tok, task, o.eval));
      std::string metric = reported_metric(task.name, r);
      s.task_metric[task.name] = metric;
      row.task_scores[task.name] = r.at("metrics").at(metric).get<double>();
    }
    EvalOptions te = o.eval;
    if (!o.target_template.empty()) te.template_name = o.target_template;
    json tr = task_result_to_json(evaluate_task(model, *tok, target, te));
    s.target_metric = reported_metric(target.name, tr);
    row.target = tr.at("metrics").at(s.target_metric).get<double>();
    s.rows.push_back(row);
    progress.update(static_cast<int64_t>(k + 1), "alpha " + alpha_label(alpha));
  }
  progress.finish();

  // Categories: the grouping's, in its order, then each uncategorised task as its own.
  std::map<std::string, std::vector<std::string>> members;
  for (const auto& task : general) {
    std::string cat = o.categories.category_of(task.name);
    if (cat.empty()) cat = task.name;
    s.task_category[task.name] = cat;
    members[cat].push_back(task.name);
  }
  for (const auto& [cat, prefixes] : o.categories.groups)
    if (members.count(cat)) s.categories.push_back(cat);
  for (const auto& task : general)
    if (std::find(s.categories.begin(), s.categories.end(), s.task_category[task.name]) == s.categories.end())
      s.categories.push_back(s.task_category[task.name]);
  for (auto& row : s.rows) {
    std::vector<double> cat_scores;
    for (const auto& cat : s.categories) {
      std::vector<double> xs;
      for (const auto& t : members[cat]) xs.push_back(row.task_scores.at(t));
      row.category_scores[cat] = mean(xs);
      cat_scores.push_back(row.category_scores[cat]);
    }
    row.general = mean(cat_scores);
  }
  const WiseFtSweepRow& ref = s.rows.front();  // alpha = 0, the base
  for (auto& row : s.rows) {
    row.forgetting = ref.general - row.general;
    row.target_gain = row.target - ref.target;
  }

  if (!o.out_dir.empty()) {
    make_dirs(o.out_dir);
    write_file_atomic(join_path(o.out_dir, "wiseft_sweep.csv"), wiseft_sweep_csv(s));
    write_file_atomic(wiseft_sweep_json_file(o.out_dir), wiseft_sweep_json(s, o).dump(2) + "\n");
    std::vector<double> x, y;
    std::vector<std::string> labels;
    for (const auto& row : s.rows) {
      x.push_back(row.forgetting);
      y.push_back(row.target_gain);
      labels.push_back("a=" + alpha_label(row.alpha));
    }
    for (const char* ext : {".png", ".svg"})
      plot_scatter(join_path(o.out_dir, std::string("wiseft_sweep") + ext), "Wise-FT: target gain against forgetting",
                   "forgetting (general score lost vs the base)",
                   "target gain (" + s.target_name + ", " + s.target_metric + ")", x, y, labels);
  }
  return s;
}

std::string wiseft_sweep_json_file(const std::string& out_dir) { return join_path(out_dir, "wiseft_sweep.json"); }

std::string wiseft_sweep_csv(const WiseFtSweep& s) {
  std::string out = "alpha";
  for (const auto& c : s.categories) out += "," + c;
  out += ",general,forgetting,target,target_gain\n";
  for (const auto& row : s.rows) {
    out += alpha_label(row.alpha);
    for (const auto& c : s.categories) out += "," + num(row.category_scores.at(c));
    out +=
        "," + num(row.general) + "," + num(row.forgetting) + "," + num(row.target) + "," + num(row.target_gain) + "\n";
  }
  return out;
}

json wiseft_sweep_json(const WiseFtSweep& s, const WiseFtSweepOptions& o) {
  json tasks = json::object();
  for (const auto& [name, cat] : s.task_category) tasks[name] = {{"category", cat}, {"metric", s.task_metric.at(name)}};
  json rows = json::array();
  for (const auto& row : s.rows)
    rows.push_back({{"alpha", row.alpha},
                    {"categories", row.category_scores},
                    {"tasks", row.task_scores},
                    {"general", row.general},
                    {"forgetting", row.forgetting},
                    {"target", row.target},
                    {"target_gain", row.target_gain}});
  return {{"base", o.base_dir},
          {"tuned", o.tuned_dir},
          {"target_task", s.target_name},
          {"target_metric", s.target_metric},
          {"categories", s.categories},
          {"tasks", tasks},
          {"rows", rows}};
}

}  // namespace flatune
