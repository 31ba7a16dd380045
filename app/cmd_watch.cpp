// `flatune plot-watch`: the watch.csv of runs trained with `train --watch`, drawn (forgetting
// curves, the forgetting/target-gain trade-off) and compared at matched target gains. The
// reading, comparison and figures are report/watch_report.h; this file has the flags and the
// printed lines.
#include <cstdio>
#include <filesystem>
#include <set>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/report/watch_report.h"

namespace flatune::cli {
namespace {

struct PlotWatchArgs {
  std::vector<std::string> runs;     // each its own method
  std::vector<std::string> methods;  // NAME=RUN_DIR: runs (seeds) grouped under NAME
  std::string out;
};

void run_plot_watch(const PlotWatchArgs& a) {
  if (a.runs.empty() && a.methods.empty()) fail("plot-watch", "give at least one RUN_DIR or --method NAME=RUN_DIR");
  std::vector<MethodCurves> methods;
  std::vector<WatchCurve> curves;
  std::set<std::string> labels, named;
  auto add = [&](const std::string& method, const std::string& dir) {
    WatchCurve c = read_watch_csv(dir);
    // Runs from different experiments may share a folder name; the path as given tells them apart.
    if (!labels.insert(c.run).second) c.run = dir;
    labels.insert(c.run);
    curves.push_back(c);
    // A positional run is never grouped, even with a --method named like its folder.
    for (auto& m : methods)
      if (!method.empty() && named.count(m.method) && m.method == method) {
        m.runs.push_back(c);
        return;
      }
    if (!method.empty()) named.insert(method);
    methods.push_back({method.empty() ? c.run : method, {c}});
  };
  for (const auto& dir : a.runs) add("", dir);
  for (const auto& spec : a.methods) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
      fail("--method", "expected NAME=RUN_DIR, got '" + spec + "'");
    add(spec.substr(0, eq), spec.substr(eq + 1));
  }
  std::string out = a.out;
  if (out.empty()) {
    if (curves.size() > 1) fail("--out", "required with several runs");
    out = a.runs.empty() ? a.methods[0].substr(a.methods[0].find('=') + 1) : a.runs[0];
  }
  for (const auto& path : write_watch_figures(curves, out)) std::printf("%s\n", path.c_str());
  if (curves.size() < 2) return;
  const auto rows = matched_gain_table(methods);
  if (rows.empty()) {
    std::printf("no matched-gain comparison: no target gain, or a run ended with none (<= 0)\n");
    return;
  }
  const std::string md = matched_gain_markdown(rows);
  const std::string md_path = join_path(out, "matched_gain.md");
  write_file_atomic(md_path, md);
  std::printf("%s\nforgetting at matched target gains (fractions of the smallest final gain):\n%s", md_path.c_str(),
              md.c_str());
}

}  // namespace

void add_plot_watch_command(CLI::App& app) {
  auto a = std::make_shared<PlotWatchArgs>();
  CLI::App* sub = app.add_subcommand(
      "plot-watch",
      "figures from runs trained with --watch (RUN_DIR/watch.csv): forgetting_curve.png/.svg (general and target "
      "score against step; forgetting_curve_<run> each with several runs), tradeoff.png/.svg (forgetting against "
      "target gain), and with several runs matched_gain.md: forgetting at 25/50/75/100% of the smallest final "
      "target gain, mean ± sample std over each method's runs");
  sub->add_option("runs", a->runs, "run folders, each its own method, labelled by folder name");
  sub->add_option("--method", a->methods, "NAME=RUN_DIR: a run (one seed) of method NAME; repeat per run")
      ->allow_extra_args(false);
  sub->add_option("--out", a->out, "output folder (default: the run folder when there is one run)");
  sub->callback([a] { run_plot_watch(*a); });
}

}  // namespace flatune::cli
