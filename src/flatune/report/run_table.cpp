#include "flatune/report/run_table.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/report/experiment_layout.h"

namespace fs = std::filesystem;

namespace flatune {

namespace {

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) cells.push_back(cell), cell.clear();
    else if (c != '\r') cell += c;
  }
  cells.push_back(cell);
  return cells;
}

}  // namespace

RunTable read_runs_csv(const std::string& path) {
  std::istringstream in(read_file(path));
  std::string line;
  if (!std::getline(in, line)) fail(path, "empty file");
  auto header = split_csv_line(line);
  RunTable t;
  size_t lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto cells = split_csv_line(line);
    if (cells.size() != header.size())
      fail(path + ":" + std::to_string(lineno),
           std::to_string(cells.size()) + " cells, the header has " + std::to_string(header.size()));
    std::map<std::string, double> row;
    std::string label = "row " + std::to_string(lineno - 1);
    for (size_t c = 0; c < cells.size(); ++c) {
      if (header[c] == "run" || header[c] == "name") {
        label = cells[c];
        continue;
      }
      const std::string& v = cells[c];
      if (v.empty() || v == "nan" || v == "n/a" || v == "NaN") continue;
      try {
        size_t used = 0;
        double x = std::stod(v, &used);
        if (used != v.size()) throw std::invalid_argument(v);
        row[header[c]] = x;
      } catch (const std::logic_error&) {
        fail(path + ":" + std::to_string(lineno), "column '" + header[c] + "': '" + v + "' is not a number");
      }
    }
    t.labels.push_back(label);
    t.values.push_back(row);
  }
  return t;
}

RunTable read_runs_folder(const std::string& dir) {
  namespace layout = experiment_layout;
  const bool given_runs_dir = !dir_exists(layout::runs_dir(dir));
  const std::string exp = given_runs_dir ? fs::path(dir).lexically_normal().parent_path().string() : dir;
  const std::string runs = layout::runs_dir(exp);
  if (!dir_exists(runs)) fail(dir, "neither an experiment folder (with runs/) nor its runs/ folder");
  std::map<std::string, double> forgetting, target_gain;
  const std::string fj = layout::forgetting_file(exp);
  if (file_exists(fj)) {
    json f = read_json_file(fj);
    try {
      auto names = f.at("tuned").get<std::vector<std::string>>();
      auto delta = f.at("overall").at("delta").get<std::vector<double>>();
      for (size_t k = 0; k < names.size() && k < delta.size(); ++k) forgetting[names[k]] = -delta[k];
      for (const auto& row : f.at("targets"))
        for (size_t k = 0; k < names.size(); ++k)
          if (row.at("delta").size() > k && row.at("delta")[k].is_number()) {
            // A run has the gain on its own target; other targets' columns are absent or NaN.
            double g = row.at("delta")[k].get<double>();
            if (std::isfinite(g) && !target_gain.count(names[k])) target_gain[names[k]] = g;
          }
    } catch (const json::exception& e) { fail(fj, std::string("unexpected structure: ") + e.what()); }
  }
  RunTable t;
  std::vector<fs::path> folders;
  for (const auto& e : fs::directory_iterator(runs))
    if (e.is_directory()) folders.push_back(e.path());
  std::sort(folders.begin(), folders.end());
  for (const auto& p : folders) {
    std::map<std::string, double> row;
    bool any = false;
    for (const std::string& f : {layout::flatness_file(p.string()), layout::sharpness_file(p.string())}) {
      if (!file_exists(f)) continue;
      any = true;
      const json values = read_json_file(f);
      for (const auto& [k, v] : values.items())
        if (v.is_number()) row[k] = v.get<double>();
    }
    if (!any) continue;
    const std::string name = p.filename().string();
    if (forgetting.count(name)) row["forgetting"] = forgetting[name];
    if (target_gain.count(name)) row["target_gain"] = target_gain[name];
    t.labels.push_back(name);
    t.values.push_back(row);
  }
  if (t.labels.empty()) fail(runs, "no run folder with flatness.json or sharpness.json");
  return t;
}

RunTable read_runs(const std::string& source) {
  if (!file_exists(source) && !dir_exists(source)) fail(source, "no such file or folder");
  return dir_exists(source) ? read_runs_folder(source) : read_runs_csv(source);
}

}  // namespace flatune
