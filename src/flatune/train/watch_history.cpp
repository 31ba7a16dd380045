#include "flatune/train/watch_history.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace flatune {

namespace {

std::string number(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

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

const char* const kFixedColumns[] = {"step", "overall", "target", "forgetting", "target_gain", "watch_seconds"};

}  // namespace

WatchRow make_watch_row(int64_t step, const WatchScore& score, double seconds, const WatchRow* first) {
  WatchRow row;
  row.step = step;
  row.score = score;
  row.seconds = seconds;
  const WatchScore& base = first ? first->score : score;
  row.forgetting = base.overall - score.overall;
  if (score.target && base.target) row.target_gain = *score.target - *base.target;
  return row;
}

std::string watch_csv_header(const WatchRow& row) {
  std::string h;
  for (const char* c : kFixedColumns) h += std::string(h.empty() ? "" : ",") + c;
  for (const auto& [name, v] : row.score.columns) h += "," + name;
  return h + "\n";
}

std::string watch_csv_line(const WatchRow& row) {
  std::string l = std::to_string(row.step) + "," + number(row.score.overall) + "," +
                  (row.score.target ? number(*row.score.target) : "") + "," + number(row.forgetting) + "," +
                  (row.score.target ? number(row.target_gain) : "") + "," + number(row.seconds);
  for (const auto& [name, v] : row.score.columns) l += "," + number(v);
  return l + "\n";
}

std::vector<WatchRow> read_watch_csv(const std::string& path, int64_t up_to_step) {
  std::vector<WatchRow> rows;
  if (!file_exists(path)) return rows;
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
  const std::set<std::string> fixed(std::begin(kFixedColumns), std::end(kFixedColumns));
  for (size_t lineno = 2; std::getline(in, line); ++lineno) {
    const std::string where = path + ":" + std::to_string(lineno);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::vector<std::string> cells = split_cells(line);
    if (cells.size() != header.size())
      fail(where, std::to_string(cells.size()) + " cells, the header has " + std::to_string(header.size()));
    std::vector<double> value(cells.size(), NAN);
    for (size_t k = 0; k < cells.size(); ++k) {
      if (cells[k].empty() && may_be_empty.count(k)) continue;
      if (!parse_number(cells[k], &value[k]))
        fail(where, "column '" + header[k] + "': '" + cells[k] + "' is not a number");
    }
    const double step = value[column["step"]];
    if (!(step >= 0) || step != std::floor(step) || step > 9.0e15)
      fail(where, "step '" + cells[column["step"]] + "' is not a whole number >= 0");
    WatchRow row;
    row.step = static_cast<int64_t>(step);
    if (!rows.empty() && row.step <= rows.back().step)
      fail(where, "step " + std::to_string(row.step) + " does not come after step " + std::to_string(rows.back().step));
    if (row.step > up_to_step) break;
    row.score.overall = value[column["overall"]];
    if (!cells[column["target"]].empty()) row.score.target = value[column["target"]];
    row.forgetting = value[column["forgetting"]];
    row.target_gain = cells[column["target_gain"]].empty() ? 0 : value[column["target_gain"]];
    if (column.count("watch_seconds")) row.seconds = value[column["watch_seconds"]];
    for (size_t k = 0; k < cells.size(); ++k)
      if (!fixed.count(header[k])) row.score.columns.emplace_back(header[k], value[k]);
    rows.push_back(row);
  }
  return rows;
}

void write_watch_csv(const std::string& path, const std::vector<WatchRow>& rows) {
  std::string text;
  if (!rows.empty()) text = watch_csv_header(rows.front());
  for (const auto& r : rows) text += watch_csv_line(r);
  write_file_atomic(path, text);
}

void check_keep_best(const std::string& rule, bool has_target) {
  if (rule.empty()) return;
  if (rule != "forgetting" && rule != "target" && rule != "tradeoff")
    fail("--keep-best", "unknown rule '" + rule + "' (forgetting, target, tradeoff)");
  if (rule != "forgetting" && !has_target) fail("--keep-best", rule + " needs a target test (--watch-target FILE)");
}

std::optional<BestChoice> choose_best(const std::vector<WatchRow>& rows, const std::string& rule,
                                      double max_forgetting) {
  std::optional<size_t> best;
  size_t eligible = 0;
  auto value = [&](const WatchRow& r) {
    if (rule == "forgetting") return -r.forgetting;
    if (rule == "target") return r.score.target.value_or(-INFINITY);
    return r.target_gain;
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].step == 0) continue;
    if (rule == "tradeoff" && !(rows[i].forgetting <= max_forgetting)) continue;
    ++eligible;
    if (!best || value(rows[i]) > value(rows[*best])) best = i;
  }
  if (!best) return std::nullopt;
  const WatchRow& r = rows[*best];
  char why[300];
  if (rule == "forgetting")
    std::snprintf(why, sizeof why, "the least forgetting (%.4f) of the %zu watched steps after step 0", r.forgetting,
                  eligible);
  else if (rule == "target")
    std::snprintf(why, sizeof why, "the highest target score (%.4f) of the %zu watched steps after step 0",
                  r.score.target.value_or(NAN), eligible);
  else
    std::snprintf(why, sizeof why,
                  "the highest target gain (%.4f) of the %zu watched steps whose forgetting is at most %g (this "
                  "step: %.4f)",
                  r.target_gain, eligible, max_forgetting, r.forgetting);
  return BestChoice{*best, why};
}

}  // namespace flatune
