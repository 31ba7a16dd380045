// The study in one config: a grid of target datasets x methods x seeds fine-tuned from one
// "before" model (optionally built by pretraining and instruction-tuning stages), each run
// trained, evaluated on the general suites and its target test, and measured for flatness, all
// in its run folder; then a report. Resumable: finished runs are skipped, an interrupted one
// resumes from its checkpoint.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "flatune/core/json.h"

namespace flatune {

struct GridMethod {
  std::string name;
  std::map<std::string, std::string> train;  // training options by flag name
  double wiseft_alpha = -1;                  // >= 0: evaluate (1-a)*before + a*tuned
  // > 0: `rho` was chosen for a model whose weight norm is this; the run uses
  // rho * ||before|| / rho_reference_norm (SAM's step is absolute, so a small model needs a
  // proportionally smaller one for the same relative perturbation).
  double rho_reference_norm = 0;
};

// The rho a method's runs use: its own, scaled by ||before|| / rho_reference_norm when it has one.
inline double method_rho(const GridMethod& m, double rho, double before_norm) {
  return m.rho_reference_norm > 0 ? rho * before_norm / m.rho_reference_norm : rho;
}

struct GridTarget {
  std::string name, data, format = "auto", test;
};

// One paired comparison in the report: `method` against `against`, seed by seed, under a named
// design ("equal steps", "compute-matched", ...).
struct GridComparison {
  std::string method, against, design;
};

struct GridStage {
  std::string name;                          // pretrain | instruct
  std::map<std::string, std::string> train;  // options for that training run
};

struct Grid {
  std::string name = "study";
  std::string before;  // the "before" model folder (or built by stages)
  std::vector<GridStage> stages;
  std::vector<GridTarget> targets;
  std::vector<GridMethod> methods;
  std::vector<uint64_t> seeds = {1};
  // Paired comparisons for the report; empty: every method against the first at equal steps.
  std::vector<GridComparison> comparisons;
  std::map<std::string, std::string> train;  // common options for every run
  std::vector<std::string> suites, perplexity;
  std::string categories;     // YAML grouping; default: the seed paper's
  std::string eval_template;  // template for generative target tests
  int64_t eval_limit = 0;
  int64_t eval_batch = 0;           // contexts per forward (0: flatune eval's default)
  int64_t eval_max_new_tokens = 0;  // generative tests: tokens per answer (0: flatune eval's default)
  // Wise-FT trade-off per run (eval key wiseft-sweep: [alphas]): before->tuned merged at each
  // alpha and evaluated; methods that already merge (wiseft-alpha) are skipped. Empty: none.
  std::vector<double> wiseft_sweep;
  // Flatness per run: sharpness on the first batches of the target data and 1-D surfaces.
  int flatness_batches = 2;
  int surface_points = 11;
  double surface_range = 1.0;
  bool surface_2d = false;
  int lambda_iters = 20;
  double sam_rho = 0.05;
  std::string stage_cache;  // where stage models are kept (default: <out>/stages)
  // Forgetting watched during every run (key watch: {every: N, limit: L}): the suites and the
  // target's test every N steps, for the trade-off curves and the matched-gain comparison.
  bool watch = false;
  int64_t watch_every = 0;
  int64_t watch_limit = -1;  // items per suite; -1: the eval limit
};

Grid load_grid(const std::string& yaml_path);
Grid grid_from_yaml_text(const std::string& text, const std::string& where);

struct ExperimentOptions {
  std::string out;
  int threads = 0;
};

// Runs every missing piece of the grid and writes <out>/report.md and report.html.
void run_experiment(const Grid& grid, const ExperimentOptions& opts);

// Rebuilds the report from the run folders.
void write_report(const Grid& grid, const std::string& out);

}  // namespace flatune
