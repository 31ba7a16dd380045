#include "flatune/report/watch_report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/report/plot.h"
#include "flatune/report/stats.h"
#include "flatune/train/watch_history.h"

namespace fs = std::filesystem;

namespace flatune {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string label_of(const std::string& path_or_run_dir) {
  fs::path p = fs::absolute(path_or_run_dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "run/" keeps an empty last part
  if (p.extension() == ".csv") p = p.parent_path();
  const std::string name = p.filename().string();
  return name.empty() ? path_or_run_dir : name;
}

// A run label as a file name's part.
std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return out;
}

std::string g4(double x) {
  char b[32];
  std::snprintf(b, sizeof b, std::isfinite(x) ? "%.4f" : "n/a", x);
  return b;
}

}  // namespace

bool WatchCurve::has_target() const {
  for (double g : target_gain)
    if (std::isfinite(g)) return true;
  return false;
}

WatchCurve read_watch_csv(const std::string& path_or_run_dir, std::string run_label) {
  const bool is_file = fs::path(path_or_run_dir).extension() == ".csv";
  const std::string path = is_file ? path_or_run_dir : join_path(path_or_run_dir, "watch.csv");
  if (!file_exists(path))
    fail(path, dir_exists(path_or_run_dir) ? "no such file (was the run trained with --watch?)" : "no such file");
  const std::vector<WatchRow> rows = read_watch_csv(path, std::numeric_limits<int64_t>::max());
  if (rows.empty()) fail(path, "no watched step (only the header)");
  WatchCurve c;
  c.run = run_label.empty() ? label_of(path_or_run_dir) : std::move(run_label);
  for (const WatchRow& r : rows) {
    c.step.push_back(r.step);
    c.overall.push_back(r.score.overall);
    c.target.push_back(r.score.target.value_or(kNaN));
    c.forgetting.push_back(r.forgetting);
    c.target_gain.push_back(r.score.target ? r.target_gain : kNaN);
  }
  return c;
}

double forgetting_at_gain(const WatchCurve& c, double gain) {
  for (size_t i = 0; i < c.target_gain.size() && i < c.forgetting.size(); ++i) {
    if (!(c.target_gain[i] >= gain)) continue;  // NaN (no target) never reaches a gain
    if (i == 0) return c.forgetting[0];
    const double g0 = c.target_gain[i - 1], g1 = c.target_gain[i];
    if (!std::isfinite(g0)) return kNaN;
    // g0 < gain <= g1: i is the first point at or above the gain.
    const double t = (gain - g0) / (g1 - g0);
    return c.forgetting[i - 1] + t * (c.forgetting[i] - c.forgetting[i - 1]);
  }
  return kNaN;
}

std::vector<double> matched_gains(const std::vector<MethodCurves>& methods, const std::vector<double>& fractions) {
  double smallest = INFINITY;
  for (const auto& m : methods)
    for (const auto& r : m.runs)
      if (!r.target_gain.empty() && std::isfinite(r.target_gain.back()))
        smallest = std::min(smallest, r.target_gain.back());
  std::vector<double> gains;
  if (!std::isfinite(smallest) || smallest <= 0) return gains;
  for (double f : fractions) gains.push_back(f * smallest);
  return gains;
}

std::vector<MatchedGainRow> matched_gain_table(const std::vector<MethodCurves>& methods,
                                               const std::vector<double>& gains) {
  std::vector<MatchedGainRow> rows;
  for (const auto& m : methods)
    for (double g : gains) {
      std::vector<double> f;
      for (const auto& r : m.runs) {
        double x = forgetting_at_gain(r, g);
        if (std::isfinite(x)) f.push_back(x);
      }
      MatchedGainRow row;
      row.method = m.method;
      row.gain = g;
      row.n = static_cast<int>(f.size());
      row.mean = f.empty() ? kNaN : mean_of(f);
      row.std = f.empty() ? kNaN : sample_std(f);
      rows.push_back(row);
    }
  return rows;
}

std::vector<MatchedGainRow> matched_gain_table(const std::vector<MethodCurves>& methods) {
  return matched_gain_table(methods, matched_gains(methods));
}

std::string matched_gain_markdown(const std::vector<MatchedGainRow>& rows) {
  std::ostringstream md;
  md << "| method | target gain | runs | forgetting at that gain (mean ± sample std) |\n|---|---:|---:|---:|\n";
  for (const auto& r : rows)
    md << "| " << r.method << " | " << g4(r.gain) << " | " << r.n << " | "
       << (r.n ? g4(r.mean) + " ± " + g4(r.std) : std::string("n/a")) << " |\n";
  return md.str();
}

std::vector<std::string> write_watch_figures(const std::vector<WatchCurve>& curves, const std::string& out_dir) {
  if (curves.empty()) fail(out_dir, "no run to draw");
  make_dirs(out_dir);
  std::vector<std::string> written;
  auto both = [&](const std::string& stem, const std::function<void(const std::string&)>& draw) {
    plot_png_and_svg(out_dir, stem, draw);
    written.push_back(join_path(out_dir, stem + ".png"));
    written.push_back(join_path(out_dir, stem + ".svg"));
  };
  std::set<std::string> stems;
  for (const auto& c : curves) {
    const std::string stem = curves.size() == 1 ? "forgetting_curve" : "forgetting_curve_" + file_safe(c.run);
    // Two runs whose labels differ only in unsafe characters would overwrite each other's figure.
    if (!stems.insert(stem).second) fail(out_dir, "two runs would both be drawn as " + stem + ".png");
    std::vector<double> steps(c.step.begin(), c.step.end());
    std::vector<Series> lines = {{"overall general score", steps, c.overall}};
    if (c.has_target()) {
      Series t{"target score", {}, {}};
      for (size_t i = 0; i < steps.size(); ++i)
        if (std::isfinite(c.target[i])) t.x.push_back(steps[i]), t.y.push_back(c.target[i]);
      lines.push_back(t);
    }
    both(stem,
         [&](const std::string& p) { plot_lines(p, c.run + ": scores during training", "step", "score", lines); });
  }
  std::vector<Series> tradeoff;
  for (const auto& c : curves) {
    if (!c.has_target()) continue;
    Series s{c.run, {}, {}};
    for (size_t i = 0; i < c.step.size(); ++i)
      if (std::isfinite(c.target_gain[i]) && std::isfinite(c.forgetting[i]))
        s.x.push_back(c.target_gain[i]), s.y.push_back(c.forgetting[i]);
    tradeoff.push_back(s);
  }
  if (!tradeoff.empty())
    both("tradeoff", [&](const std::string& p) {
      plot_lines(p, "forgetting against target gain", "target gain (score - score at step 0)",
                 "forgetting (general score at step 0 - now)", tradeoff);
    });
  return written;
}

}  // namespace flatune
