// Flatness of a model folder measured end to end: the model (and adapter) loaded, the first K
// batches of a data set fixed, then a loss surface (1-D, 2-D, or the interpolation base ->
// tuned) or sharpness metrics, written with every setting needed to redo the measurement.
// `flatune landscape` and `flatune sharpness` are these functions behind flags, so the settings
// mirror the flags and errors name the flag of the offending setting. Figures are drawn a layer
// up (report/landscape_figures.h): plotting is not a dependency of this module.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "flatune/core/json.h"
#include "flatune/data/dataset.h"
#include "flatune/landscape/fixed_batches.h"
#include "flatune/landscape/landscape.h"
#include "flatune/model/llama.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

// What the loss is measured on.
struct LossDataSettings {
  std::string model, adapter, data, format = "auto", template_name = "auto";
  int batches = 2;         // K: the first K batches, fixed
  int64_t batch_size = 8;  // B: examples per batch
  int64_t max_length = 0;  // tokens per example; 0: min(the model's, 512)
  int threads = 0;         // intra-op threads; 0 leaves libtorch's choice
  std::string device;      // cpu, cuda, cuda:N; empty: the process's device
};

// Loss closures made from this refer to its members, so it stays where it was made.
struct LossData {
  std::unique_ptr<Tokenizer> tokenizer;
  LlamaForCausalLM model{nullptr};
  FixedBatches batches;
  TokenizeStats stats;
  std::string template_used;
  int64_t max_length = 0;
  LossData() = default;
  LossData(const LossData&) = delete;
  LossData& operator=(const LossData&) = delete;
};

// Loads `model_dir` (settings.model is ignored: the interpolation measures at its tuned end)
// with settings.adapter in eval mode and fixes the batches.
void load_loss_data(LossData& into, const LossDataSettings& settings, const std::string& model_dir);

// The settings as the output JSON records them, with what was actually used (template,
// examples, tokens, threads, libtorch version).
json loss_data_json(const LossDataSettings& settings, const LossData& loaded, const std::string& model_dir);

// Every parameter, frozen or not: surfaces move all weights, not only the trained ones.
NamedParams all_parameters(LlamaForCausalLM& model);

// This process's part when `flatune launch` runs several: each process measures its share of
// the fixed batches and `sum` adds the shares, so every process computes the same surface or
// metric; only rank 0 writes.
struct MeasuringProcesses {
  int rank = 0;
  int world_size = 1;
  CrossProcessSum sum;  // may be empty for one process
  bool writes() const { return rank == 0; }
};

LossClosure shared_fixed_batches_loss(LlamaForCausalLM& model, const FixedBatches& batches,
                                      const MeasuringProcesses& processes);

// The model's weights minus those of the checkpoint in `base_dir`, in the parameters' order.
NamedTensors direction_from_base(const NamedParams& params, LlamaForCausalLM& model, const std::string& base_dir);

// Loss at base + alpha (model - base) for alpha in linspace(from, to, points): 0 is the base, 1
// the model. Measured from the model along the direction with coefficient alpha - 1, so that
// alpha = 1 is the model's weights exactly; the alphas are computed on the [from, to] grid.
Surface1D interpolation_surface(const NamedParams& params, const NamedTensors& base_to_model, const LossClosure& loss,
                                double from, double to, int points);

// ---- flatune landscape

struct LandscapeSettings {
  LossDataSettings data;  // data.model may be empty when `to` names the model
  std::string out;
  std::string from, to;              // interpolation: base and tuned model folders (to defaults to data.model)
  std::string directions;            // a directions.safetensors a previous run saved, reused instead of drawing
  std::string normalize = "filter";  // filter | none
  std::optional<std::pair<double, double>> range;  // from < to; default -1:1, interpolation -0.5:1.5
  int points = 21;                                 // along a 1-D direction or the interpolation
  int grid = 0;                                    // > 0: a 2-D surface on grid x grid points
  bool ignore_1d = false, lora_only = false;
  uint64_t seed = 0;  // the second 2-D direction uses seed + 1
};

struct LandscapeResult {
  std::string mode;       // 1d | 2d | interpolation
  std::string file_stem;  // of the CSV in the output folder, and of its figures
  double from = 0, to = 0;
  int points = 0;  // per axis for 2d
  double loss_at_model = 0, seconds = 0;
  Surface1D line;  // 1d and interpolation
  Surface2D grid;  // 2d
  json record;     // what landscape.json holds (settings, losses, surface, seconds)
};

// Every check that needs no model; measure_landscape makes them too. Worth calling before
// processes meet for a measurement, so that a bad setting fails at once in each.
void check_landscape_settings(const LandscapeSettings& settings);

// Measures the surface; rank 0 writes <stem>.csv, directions.safetensors (when drawn) and
// landscape.json into settings.out.
LandscapeResult measure_landscape(const LandscapeSettings& settings, const MeasuringProcesses& processes = {});

// ---- flatune sharpness

struct SharpnessSettings {
  LossDataSettings data;
  std::vector<std::string> metrics = {"sam", "lambda_max"};  // sam eps avg lambda_max (or lambda-max) trace
  double rho = 0.05;                                         // SAM radius
  double eps = 1e-3;                                         // epsilon-sharpness box size, relative
  int eps_steps = 10;                                        // epsilon-sharpness ascent steps
  double sigma = 0.01;                                       // average sharpness: relative noise scale
  int samples = 20;                                          // draws for avg, vectors for trace
  int iters = 20;                                            // lambda_max: most power iterations
  double tol = 1e-3;                                         // lambda_max: relative change that counts as converged
  uint64_t seed = 0;
  std::string out;  // receives sharpness.json; empty: nothing written
};

struct SharpnessMeasured {
  std::string metric;       // as requested: sam, eps, avg, lambda_max, trace
  std::string key;          // its flat key in sharpness.json, the one the experiment's flatness.json uses
  std::string what;         // the definition, for readers of the JSON and the table
  std::string detail_name;  // what value.detail is (empty: nothing)
  SharpnessValue value;
  double seconds = 0;
};

// Called in the writing process as the measurement goes, so a table can be printed while the
// slower metrics still run.
struct SharpnessObserver {
  std::function<void(const LossData& loaded, double loss)> loss_measured;
  std::function<void(const SharpnessMeasured& measured)> metric_measured;
};

// The requested names checked, "lambda-max" read as lambda_max, duplicates dropped.
std::vector<std::string> sharpness_metric_names(const std::vector<std::string>& requested);

// As check_landscape_settings.
void check_sharpness_settings(const SharpnessSettings& settings);

// Returns what sharpness.json holds and, when settings.out is set, rank 0 writes it there.
json measure_sharpness(const SharpnessSettings& settings, const MeasuringProcesses& processes = {},
                       const SharpnessObserver& observer = {});

}  // namespace flatune
