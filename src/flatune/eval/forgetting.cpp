#include "flatune/eval/forgetting.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace fs = std::filesystem;

namespace flatune {

std::string Categories::category_of(const std::string& task) const {
  for (const auto& [cat, prefixes] : groups)
    for (const auto& p : prefixes)
      if (task.rfind(p, 0) == 0) return cat;
  return "";
}

Categories paper_categories() {
  return {{{"knowledge", {"mmlu"}},
           {"reasoning", {"hellaswag", "boolq", "siqa", "social_iqa", "copa", "rte", "piqa", "winogrande"}},
           {"understanding", {"race", "openbookqa"}},
           {"exams", {"arc_challenge", "truthfulqa"}}}};
}

Categories load_categories(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) { fail(path, "malformed YAML: " + e.msg); }
  if (!root.IsMap()) fail(path, "expected a map {category: [task prefixes]}");
  Categories c;
  for (const auto& kv : root) {
    std::vector<std::string> prefixes;
    if (!kv.second.IsSequence()) fail(path, "category '" + kv.first.as<std::string>() + "' must list task names");
    for (const auto& p : kv.second) prefixes.push_back(p.as<std::string>());
    c.groups.emplace_back(kv.first.as<std::string>(), prefixes);
  }
  return c;
}

std::string reported_metric(const std::string& task, const json& result) {
  const json& m = result.at("metrics");
  if (result.value("kind", std::string()) == "perplexity") return "bits_per_byte";
  if (m.contains("exact_match")) return "exact_match";
  for (const char* p : {"hellaswag", "arc_", "piqa", "openbookqa", "sciq"})
    if (task.rfind(p, 0) == 0 && m.contains("acc_norm")) return "acc_norm";
  return "acc";
}

namespace {

std::map<std::string, json> read_results(const std::string& dir) {
  std::string eval_dir = join_path(dir, "eval");
  if (!dir_exists(eval_dir)) fail(dir, "no eval/ folder (run flatune eval --out " + dir + " first)");
  std::map<std::string, json> out;
  for (const auto& e : fs::directory_iterator(eval_dir)) {
    std::string name = e.path().filename().string();
    if (name.size() < 5 || name.compare(name.size() - 5, 5, ".json") != 0 || name.find(".items.") != std::string::npos)
      continue;
    json j = read_json_file(e.path().string());
    if (!j.contains("metrics")) fail(e.path().string(), "not an evaluation result (no 'metrics')");
    out[name.substr(0, name.size() - 5)] = j;
  }
  if (out.empty()) fail(eval_dir, "no evaluation results");
  return out;
}

double mean(const std::vector<double>& xs) {
  double s = 0;
  for (double x : xs) s += x;
  return xs.empty() ? 0 : s / xs.size();
}

}  // namespace

GeneralScore general_score(const std::map<std::string, json>& results, const Categories& cats) {
  GeneralScore g;
  std::map<std::string, std::vector<double>> by_category;
  for (const auto& [task, res] : results) {
    const double v = res.at("metrics").at(reported_metric(task, res)).get<double>();
    g.tasks[task] = v;
    const std::string cat = cats.category_of(task);
    if (!cat.empty()) by_category[cat].push_back(v);
  }
  std::vector<double> category_means;
  for (const auto& [cat, prefixes] : cats.groups) {
    auto it = by_category.find(cat);
    if (it == by_category.end()) continue;
    g.categories.emplace_back(cat, mean(it->second));
    category_means.push_back(g.categories.back().second);
  }
  g.overall = mean(category_means);
  return g;
}

ForgettingTable forgetting_table(const std::string& base_dir, const std::vector<std::string>& tuned_dirs,
                                 const Categories& cats, const std::vector<std::string>& targets) {
  ForgettingTable t;
  auto base = read_results(base_dir);
  std::vector<std::map<std::string, json>> tuned;
  for (const auto& d : tuned_dirs) {
    tuned.push_back(read_results(d));
    t.tuned_names.push_back(fs::path(d).filename().string());
  }
  auto is_target = [&](const std::string& task) {
    return std::find(targets.begin(), targets.end(), task) != targets.end();
  };
  for (const auto& [task, res] : base) {
    ForgettingRow row;
    row.name = task;
    row.metric = reported_metric(task, res);
    row.base = res["metrics"].at(row.metric).get<double>();
    for (size_t k = 0; k < tuned.size(); ++k) {
      auto it = tuned[k].find(task);
      if (it == tuned[k].end()) fail(tuned_dirs[k], "has no result for task '" + task + "'");
      row.tuned.push_back(it->second["metrics"].at(row.metric).get<double>());
    }
    row.category = is_target(task) ? "target" : cats.category_of(task);
    (is_target(task) ? t.targets : t.tasks).push_back(row);
  }
  // Categories and overall from each model's general score (targets left out).
  auto general = [&](const std::map<std::string, json>& results) {
    std::map<std::string, json> kept;
    for (const auto& [task, res] : results)
      if (!is_target(task) && base.count(task)) kept.emplace(task, res);
    return general_score(kept, cats);
  };
  const GeneralScore base_score = general(base);
  std::vector<GeneralScore> tuned_scores;
  for (const auto& results : tuned) tuned_scores.push_back(general(results));
  for (size_t c = 0; c < base_score.categories.size(); ++c) {
    ForgettingRow row;
    row.name = row.category = base_score.categories[c].first;
    row.metric = "mean";
    row.base = base_score.categories[c].second;
    for (const auto& s : tuned_scores) row.tuned.push_back(s.categories[c].second);
    t.categories.push_back(row);
  }
  t.overall.name = "overall";
  t.overall.metric = "mean of categories";
  t.overall.base = base_score.overall;
  for (const auto& s : tuned_scores) t.overall.tuned.push_back(s.overall);
  return t;
}

namespace {
std::string fmt(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", x);
  return buf;
}
std::string fmt_delta(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.4f", x);
  return buf;
}
void md_rows(std::ostringstream& out, const std::vector<ForgettingRow>& rows, bool bold = false) {
  for (const auto& r : rows) {
    out << "| " << (bold ? "**" + r.name + "**" : r.name) << " | " << r.category << " | " << r.metric << " | "
        << fmt(r.base);
    for (double v : r.tuned) out << " | " << fmt(v) << " | " << fmt_delta(v - r.base);
    out << " |\n";
  }
}
}  // namespace

std::string forgetting_markdown(const ForgettingTable& t) {
  std::ostringstream out;
  out << "| task | category | metric | base";
  for (const auto& n : t.tuned_names) out << " | " << n << " | Δ";
  out << " |\n|---|---|---|---:";
  for (size_t k = 0; k < t.tuned_names.size(); ++k) out << "|---:|---:";
  out << "|\n";
  md_rows(out, t.tasks);
  md_rows(out, t.categories, true);
  md_rows(out, {t.overall}, true);
  if (!t.targets.empty()) md_rows(out, t.targets);
  return out.str();
}

std::string forgetting_csv(const ForgettingTable& t) {
  std::ostringstream out;
  out << "row,category,metric,base";
  for (const auto& n : t.tuned_names) out << "," << n << ",delta_" << n;
  out << "\n";
  auto rows = t.tasks;
  rows.insert(rows.end(), t.categories.begin(), t.categories.end());
  rows.push_back(t.overall);
  rows.insert(rows.end(), t.targets.begin(), t.targets.end());
  for (const auto& r : rows) {
    out << r.name << "," << r.category << "," << r.metric << "," << fmt(r.base);
    for (double v : r.tuned) out << "," << fmt(v) << "," << fmt_delta(v - r.base);
    out << "\n";
  }
  return out.str();
}

json forgetting_json(const ForgettingTable& t) {
  auto rows = [](const std::vector<ForgettingRow>& rs) {
    json a = json::array();
    for (const auto& r : rs) {
      json d = json::array();
      for (double v : r.tuned) d.push_back(v - r.base);
      a.push_back({{"name", r.name},
                   {"category", r.category},
                   {"metric", r.metric},
                   {"base", r.base},
                   {"tuned", r.tuned},
                   {"delta", d}});
    }
    return a;
  };
  return {{"tuned", t.tuned_names},
          {"tasks", rows(t.tasks)},
          {"categories", rows(t.categories)},
          {"overall", rows({t.overall})[0]},
          {"targets", rows(t.targets)}};
}

}  // namespace flatune
