#include "flatune/report/correlate.h"

#include <cmath>
#include <cstdio>
#include <set>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/report/plot.h"

namespace flatune {

RunCorrelation correlate_runs(const RunTable& t, const std::string& x, const std::string& y,
                              const std::string& source) {
  std::set<std::string> names;
  for (const auto& row : t.values)
    for (const auto& [k, v] : row) names.insert(k);
  for (const auto* which : {&x, &y})
    if (!names.count(*which)) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : " ") + n;
      fail(which == &x ? "--x" : "--y", "no run has '" + *which + "' (known: " + known + ")");
    }
  RunCorrelation c;
  c.source = source, c.x = x, c.y = y;
  for (size_t i = 0; i < t.labels.size(); ++i) {
    auto xi = t.values[i].find(x), yi = t.values[i].find(y);
    const bool both = xi != t.values[i].end() && yi != t.values[i].end();
    if (!both || !std::isfinite(xi->second) || !std::isfinite(yi->second)) {
      ++c.left_out;
      continue;
    }
    c.xs.push_back(xi->second);
    c.ys.push_back(yi->second);
    c.labels.push_back(t.labels[i]);
  }
  if (c.xs.size() < 3)
    fail(source, "correlation needs at least 3 runs with both values, found " + std::to_string(c.xs.size()));
  c.pearson = pearson(c.xs, c.ys);
  c.spearman = spearman(c.xs, c.ys);
  return c;
}

void write_correlation(const RunCorrelation& c, const std::string& out_dir) {
  make_dirs(out_dir);
  json runs = json::array();
  for (size_t i = 0; i < c.xs.size(); ++i) runs.push_back({{"run", c.labels[i]}, {c.x, c.xs[i]}, {c.y, c.ys[i]}});
  json j = {{"source", c.source},
            {"x", c.x},
            {"y", c.y},
            {"n", c.xs.size()},
            {"left_out", c.left_out},
            {"pearson", {{"r", c.pearson.statistic}, {"p_value", c.pearson.p_value}}},
            {"spearman", {{"rho", c.spearman.statistic}, {"p_value", c.spearman.p_value}}},
            {"runs", runs}};
  write_file_atomic(join_path(out_dir, "correlation.json"), j.dump(2) + "\n");
  char title[160];
  std::snprintf(title, sizeof title, "%s vs %s (Pearson %.2f, Spearman %.2f, %zu runs)", c.y.c_str(), c.x.c_str(),
                c.pearson.statistic, c.spearman.statistic, c.xs.size());
  plot_png_and_svg(out_dir, "correlation",
                   [&](const std::string& path) { plot_scatter(path, title, c.x, c.y, c.xs, c.ys, c.labels); });
}

}  // namespace flatune
