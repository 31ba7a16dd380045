// `flatune experiment`: a grid end to end; `flatune report`: rebuild its report; `flatune demo`:
// the embedded default.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/demo/demo_data.h"
#include "flatune/demo/study.h"
#include "flatune/report/experiment.h"

namespace flatune::cli {

namespace {
void run_grid_file(const std::string& grid_path, const std::string& out, int threads) {
  Grid g = load_grid(grid_path);
  make_dirs(out);
  if (join_path(out, "grid.yaml") != grid_path) write_file_atomic(join_path(out, "grid.yaml"), read_file(grid_path));
  run_experiment(g, ExperimentOptions{out, threads});
  std::printf("report: %s and %s\n", join_path(out, "report.md").c_str(), join_path(out, "report.html").c_str());
}
}  // namespace

void add_experiment_command(CLI::App& app) {
  struct Args {
    std::string grid, out, device;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("experiment", "run a grid of targets x methods x seeds and write the report");
  sub->add_option("--grid", a->grid, "grid YAML (see examples/)")->required();
  sub->add_option("--out", a->out, "experiment folder (rerun to resume)")->required();
  sub->add_option("--threads", a->threads, "intra-op threads");
  add_device_option(sub, a->device);  // every run, evaluation and measurement of the grid goes there
  sub->callback([a] {
    use_device_option(a->device);
    run_grid_file(a->grid, a->out, a->threads);
  });

  auto dir = std::make_shared<std::string>();
  CLI::App* rep = app.add_subcommand("report", "rebuild report.md/report.html of an experiment folder");
  rep->add_option("dir", *dir, "experiment folder")->required();
  rep->callback([dir] {
    write_report(load_grid(join_path(*dir, "grid.yaml")), *dir);
    std::printf("report: %s\n", join_path(*dir, "report.md").c_str());
  });
}

void add_demo_command(CLI::App& app) {
  struct Args {
    std::string out = "runs/demo", preset = "default", wordnet = "/usr/share/wordnet", cache, device;
    int threads = 0;
    bool prepare_only = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("demo", "the embedded study: WordNet data, a small base, AdamW vs SAM, report");
  sub->add_option("--out", a->out, "experiment folder");
  sub->add_option("--preset", a->preset, "quick | default | full");
  sub->add_option("--wordnet", a->wordnet, "WordNet database folder (Debian wordnet-base)");
  sub->add_option("--cache", a->cache, "cache folder (default: $XDG_CACHE_HOME/flatune or ~/.cache/flatune)");
  sub->add_option("--threads", a->threads, "intra-op threads");
  add_device_option(sub, a->device);
  sub->add_flag("--prepare-only", a->prepare_only,
                "build the data and write OUT/grid.yaml, train nothing (edit it, then `flatune experiment`)");
  sub->callback([a] {
    use_device_option(a->device);
    // The grid names the cache's files, and a grid's relative paths are read from its own
    // folder: a relative --cache must be made absolute first.
    const std::string cache = std::filesystem::absolute(a->cache.empty() ? flatune_cache_root() : a->cache).string();
    std::string grid = write_demo_grid(a->preset, a->out, a->wordnet, cache);
    if (a->prepare_only) {
      std::printf("grid: %s\nrun it with: flatune experiment --grid %s --out %s\n", grid.c_str(), grid.c_str(),
                  a->out.c_str());
      return;
    }
    run_grid_file(grid, a->out, a->threads);
  });
}

}  // namespace flatune::cli
