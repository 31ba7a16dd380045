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

namespace fs = std::filesystem;

namespace flatune {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// watch.csv is written by flatune with %.17g: no quoting, no spaces.
std::vector<std::string> split_cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  for (char c : line) {
    if (c == ',') cells.push_back(cell), cell.clear();
    else if (c != '\r') cell += c;
  }
  cells.push_back(cell);
  return cells;
}

// strtod rather than std::stod: %.17g may print a subnormal, which stod rejects as out of range.
bool parse_number(const std::string& s, double* x) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  *x = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

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
  std::istringstream in(read_file(path));
  std::string line;
  if (!std::getline(in, line)) fail(path, "empty file");
  const std::vector<std::string> header = split_cells(line);
  std::map<std::string, size_t> column;
  for (size_t c = 0; c < header.size(); ++c) {
    if (header[c].empty()) fail(path + ":1", "column " + std::to_string(c + 1) + " has no name");
    if (!column.emplace(header[c], c).second) fail(path + ":1", "column '" + header[c] + "' appears twice");
  }
  for (const char* name : {"step", "overall", "target", "forgetting", "target_gain"})
    if (!column.count(name)) fail(path + ":1", std::string("no column '") + name + "' (not a watch.csv?)");
  // Target cells are empty when the run has no target test; every other cell holds a number.
  const std::set<size_t> may_be_empty = {column["target"], column["target_gain"]};

  WatchCurve c;
  c.run = run_label.empty() ? label_of(path_or_run_dir) : std::move(run_label);
  size_t lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    const std::string where = path + ":" + std::to_string(lineno);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::vector<std::string> cells = split_cells(line);
    if (cells.size() != header.size())
      fail(where, std::to_string(cells.size()) + " cells, the header has " + std::to_string(header.size()));
    std::vector<double> row(cells.size(), kNaN);
    for (size_t k = 0; k < cells.size(); ++k) {
      if (cells[k].empty() && may_be_empty.count(k)) continue;
      if (!parse_number(cells[k], &row[k]))
        fail(where, "column '" + header[k] + "': '" + cells[k] + "' is not a number");
    }
    const double step = row[column["step"]];
    if (!(step >= 0) || step != std::floor(step) || step > 9.0e15)
      fail(where, "step '" + cells[column["step"]] + "' is not a whole number >= 0");
    const auto s = static_cast<int64_t>(step);
    if (!c.step.empty() && s <= c.step.back())
      fail(where, "step " + std::to_string(s) + " does not come after step " + std::to_string(c.step.back()));
    c.step.push_back(s);
    c.overall.push_back(row[column["overall"]]);
    c.target.push_back(row[column["target"]]);
    c.forgetting.push_back(row[column["forgetting"]]);
    c.target_gain.push_back(row[column["target_gain"]]);
  }
  if (c.step.empty()) fail(path, "no watched step (only the header)");
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
