#include "flatune/train/watch_history.h"

#include <cmath>
#include <cstdio>
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

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

const char* const kFixedColumns[] = {"step", "overall", "target", "forgetting", "target_gain", "watch_seconds"};
constexpr size_t kFixed = 6;

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
  std::vector<std::string> header;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    const std::string where = path + ": line " + std::to_string(line_no);
    auto cells = split_commas(line);
    if (line_no == 1) {
      header = cells;
      if (header.size() < kFixed) fail(where, "not a watch.csv header");
      for (size_t i = 0; i < kFixed; ++i)
        if (header[i] != kFixedColumns[i])
          fail(where,
               "column " + std::to_string(i + 1) + " is '" + header[i] + "', expected '" + kFixedColumns[i] + "'");
      continue;
    }
    if (line.empty()) continue;
    if (cells.size() != header.size())
      fail(where, std::to_string(cells.size()) + " cells, the header has " + std::to_string(header.size()));
    auto value = [&](size_t i) {
      try {
        size_t used = 0;
        double v = std::stod(cells[i], &used);
        if (used != cells[i].size()) throw std::invalid_argument(cells[i]);
        return v;
      } catch (const std::exception&) { fail(where, "column '" + header[i] + "': not a number: '" + cells[i] + "'"); }
    };
    WatchRow row;
    row.step = static_cast<int64_t>(value(0));
    if (row.step > up_to_step) break;
    row.score.overall = value(1);
    if (!cells[2].empty()) row.score.target = value(2);
    row.forgetting = value(3);
    row.target_gain = cells[4].empty() ? 0 : value(4);
    row.seconds = value(5);
    for (size_t i = kFixed; i < cells.size(); ++i) row.score.columns.emplace_back(header[i], value(i));
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
