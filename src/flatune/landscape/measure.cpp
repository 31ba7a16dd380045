#include "flatune/landscape/measure.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/io/checkpoint.h"
#include "flatune/landscape/directions.h"
#include "flatune/landscape/output_files.h"
#include "flatune/model/lora.h"

namespace flatune {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string number_text(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}

std::pair<double, double> landscape_range(const LandscapeSettings& s) {
  if (s.range) return *s.range;
  return s.from.empty() ? std::make_pair(-1.0, 1.0) : std::make_pair(-0.5, 1.5);
}

const std::vector<std::string> kSharpnessMetrics = {"sam", "eps", "avg", "lambda_max", "trace"};

}  // namespace

void load_loss_data(LossData& into, const LossDataSettings& s, const std::string& model_dir) {
  if (s.threads > 0) at::set_num_threads(s.threads);
  if (s.batches < 1) fail("--batches", "must be at least 1");
  if (s.batch_size < 1) fail("--batch-size", "must be at least 1");
  into.tokenizer = load_tokenizer(model_dir);
  const Tokenizer& tok = *into.tokenizer;
  into.model = load_llama(model_dir, torch::kFloat32,
                          s.device.empty() ? compat::process_device() : compat::resolve_device(s.device));
  if (!s.adapter.empty()) load_lora_adapter(into.model, s.adapter);
  into.model->eval();
  into.max_length =
      s.max_length > 0 ? s.max_length : std::min<int64_t>(into.model->config().max_position_embeddings, 512);
  into.template_used = resolve_template(s.template_name, tok);
  auto examples = tokenize_conversations(read_conversations(s.data, s.format), tok,
                                         {into.template_used, into.max_length, false}, &into.stats);
  const int64_t pad = tok.special().pad_id.value_or(tok.special().eos_id.value_or(0));
  into.batches = fixed_batches(examples, s.batches, s.batch_size, pad, s.data);
}

json loss_data_json(const LossDataSettings& s, const LossData& loaded, const std::string& model_dir) {
  return {{"model", model_dir},
          {"adapter", s.adapter},
          {"data", s.data},
          {"data_format", s.format},
          {"template", loaded.template_used},
          {"batches", s.batches},
          {"batch_size", s.batch_size},
          {"max_length", loaded.max_length},
          {"batches_used", loaded.batches.batches.size()},
          {"examples_used", loaded.batches.examples},
          {"label_tokens", loaded.batches.label_tokens},
          {"threads", at::get_num_threads()},
          {"device", loaded.model->lm_head_weight().device().str()},
          {"torch_version", compat::torch_version()}};
}

NamedParams all_parameters(LlamaForCausalLM& model) {
  NamedParams p;
  for (auto& item : model->named_parameters(true)) p.emplace_back(item.key(), item.value());
  return p;
}

LossClosure shared_fixed_batches_loss(LlamaForCausalLM& model, const FixedBatches& batches,
                                      const MeasuringProcesses& processes) {
  return fixed_batches_loss(model, batches, processes.rank, processes.world_size, processes.sum);
}

NamedTensors direction_from_base(const NamedParams& params, LlamaForCausalLM& model, const std::string& base_dir) {
  NamedTensors difference = difference_direction(load_checkpoint_weights(base_dir), model->weights(), base_dir);
  return align_direction(params, difference, base_dir);
}

Surface1D interpolation_surface(const NamedParams& params, const NamedTensors& base_to_model, const LossClosure& loss,
                                double from, double to, int points) {
  Surface1D s = surface_1d(params, base_to_model, loss, from - 1.0, to - 1.0, points);
  for (int i = 0; i < points; ++i) s.alphas[i] = from + (to - from) * i / (points - 1);
  return s;
}

// ------------------------------------------------------------------ landscape

void check_landscape_settings(const LandscapeSettings& s) {
  const bool interpolation = !s.from.empty();
  const bool two_d = s.grid != 0;
  if (s.data.model.empty() && s.to.empty()) fail("--model", "give the model folder (or --from BASE --to TUNED)");
  if (!s.data.model.empty() && !s.to.empty() && s.data.model != s.to)
    fail("--to", "give --model or --to, not two different models");
  if (!s.to.empty() && !interpolation) fail("--to", "interpolation needs --from BASE as well");
  if (interpolation && two_d) fail("--grid", "interpolation is one-dimensional; leave out --grid");
  if (interpolation && !s.directions.empty())
    fail("--directions", "interpolation follows base -> tuned; leave out --directions");
  if (interpolation && !s.data.adapter.empty()) fail("--adapter", "interpolation is between two full model folders");
  if (two_d && s.grid < 3)
    fail("--grid", "a 2-D surface needs at least 3 points per axis, got " + std::to_string(s.grid));
  if (!two_d && s.points < 2)
    fail("--points", "a 1-D surface needs at least 2 points, got " + std::to_string(s.points));
  if (s.normalize != "filter" && s.normalize != "none")
    fail("--normalize", "filter or none, not '" + s.normalize + "'");
  const auto [lo, hi] = landscape_range(s);
  if (!(lo < hi) || !std::isfinite(lo) || !std::isfinite(hi))
    fail("--range", "expected A:B with A < B, got '" + number_text(lo) + ":" + number_text(hi) + "'");
}

LandscapeResult measure_landscape(const LandscapeSettings& s, const MeasuringProcesses& processes) {
  check_landscape_settings(s);
  const bool interpolation = !s.from.empty();
  const bool two_d = s.grid != 0;
  const auto [lo, hi] = landscape_range(s);
  const std::string model_dir = s.to.empty() ? s.data.model : s.to;
  const bool writes = processes.writes();

  LossData m;
  load_loss_data(m, s.data, model_dir);
  if (s.lora_only && !m.model->has_lora())
    fail("--lora-only", "the model has no LoRA adapters (add them with --adapter DIR)");
  NamedParams params = all_parameters(m.model);
  LossClosure loss = shared_fixed_batches_loss(m.model, m.batches, processes);
  if (writes) make_dirs(s.out);

  LandscapeResult r;
  r.from = lo;
  r.to = hi;
  r.points = two_d ? s.grid : s.points;
  json settings = loss_data_json(s.data, m, model_dir);
  settings["processes"] = processes.world_size;
  settings["range"] = {lo, hi};
  settings["points"] = r.points;
  r.loss_at_model = loss_value(loss);
  const auto t0 = Clock::now();
  json surface;

  if (interpolation) {
    r.mode = "interpolation";
    r.file_stem = "interpolation";
    settings["from"] = s.from;
    settings["to"] = model_dir;
    r.line = interpolation_surface(params, direction_from_base(params, m.model, s.from), loss, lo, hi, s.points);
    surface = surface_1d_json(r.line);
    if (writes) write_file_atomic(join_path(s.out, r.file_stem + ".csv"), surface_1d_csv(r.line));
  } else {
    DirectionOptions o;
    o.seed = s.seed;
    o.filter_normalize = s.normalize == "filter";
    o.keep_1d = !s.ignore_1d;
    o.lora_only = s.lora_only;
    DirectionSet set;
    if (!s.directions.empty()) {
      set = load_directions(s.directions, params);
      if (two_d && set.directions.size() < 2) fail(s.directions, "holds one direction; a 2-D surface needs two");
      settings["directions_file"] = s.directions;
    } else {
      set.settings = direction_settings(o);
      set.directions.push_back(random_direction(params, o));
      if (two_d) {
        DirectionOptions o2 = o;
        o2.seed = o.seed + 1;
        set.directions.push_back(random_direction(params, o2));
        set.settings["seed_2"] = std::to_string(o2.seed);
      }
      set.settings["model"] = model_dir;
      // Saved so that the surface can be redrawn or extended along the very same directions.
      const std::string saved = join_path(s.out, "directions.safetensors");
      if (writes) save_directions(saved, set);
      settings["directions_file"] = saved;
    }
    settings["directions"] = set.settings;
    if (two_d) {
      r.mode = "2d";
      r.file_stem = "surface_2d";
      r.grid = surface_2d(params, set.directions[0], set.directions[1], loss, lo, hi, s.grid);
      surface = surface_2d_json(r.grid);
      SurfaceStats st = surface_stats(r.grid);
      surface["stats"] = {{"curvature", st.curvature},
                          {"average_gradient", st.average_gradient},
                          {"mean_abs_gradient", st.mean_abs_gradient}};
      if (writes) write_file_atomic(join_path(s.out, r.file_stem + ".csv"), surface_2d_csv(r.grid));
    } else {
      r.mode = "1d";
      r.file_stem = "surface_1d";
      r.line = surface_1d(params, set.directions[0], loss, lo, hi, s.points);
      surface = surface_1d_json(r.line);
      if (writes) write_file_atomic(join_path(s.out, r.file_stem + ".csv"), surface_1d_csv(r.line));
    }
  }
  settings["mode"] = r.mode;
  r.seconds = seconds_since(t0);
  // Measured again after the surface: equal to loss_at_model unless the weights were not restored.
  const double loss_after = loss_value(loss);
  r.record = {{"settings", settings},
              {"loss_at_model", r.loss_at_model},
              {"loss_at_model_after", loss_after},
              {"surface", surface},
              {"seconds", r.seconds}};
  if (writes) write_file_atomic(join_path(s.out, kLandscapeJsonFile), r.record.dump(2) + "\n");
  return r;
}

// ------------------------------------------------------------------ sharpness

std::vector<std::string> sharpness_metric_names(const std::vector<std::string>& requested) {
  std::vector<std::string> names;
  for (std::string name : requested) {
    if (name == "lambda-max") name = "lambda_max";
    if (std::find(kSharpnessMetrics.begin(), kSharpnessMetrics.end(), name) == kSharpnessMetrics.end())
      fail("--metrics", "unknown metric '" + name + "' (sam eps avg lambda_max trace)");
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
  }
  if (names.empty()) fail("--metrics", "name at least one metric");
  return names;
}

void check_sharpness_settings(const SharpnessSettings& s) {
  sharpness_metric_names(s.metrics);
  if (s.eps_steps < 1) fail("--eps-steps", "must be at least 1");
  if (s.samples < 1) fail("--samples", "must be at least 1");
  if (s.iters < 1) fail("--iters", "must be at least 1");
}

json measure_sharpness(const SharpnessSettings& s, const MeasuringProcesses& processes,
                       const SharpnessObserver& observer) {
  check_sharpness_settings(s);
  const std::vector<std::string> metrics = sharpness_metric_names(s.metrics);
  LossData m;
  load_loss_data(m, s.data, s.data.model);
  // Trainable ones only: with LoRA adapters, the sharpness the fine-tuning saw is over them.
  auto params = m.model->trainable_parameters();
  LossClosure loss = shared_fixed_batches_loss(m.model, m.batches, processes);
  json settings = loss_data_json(s.data, m, s.data.model);
  settings["processes"] = processes.world_size;
  settings.update({{"metrics", metrics},
                   {"rho", s.rho},
                   {"eps", s.eps},
                   {"eps_steps", s.eps_steps},
                   {"sigma", s.sigma},
                   {"samples", s.samples},
                   {"iters", s.iters},
                   {"tol", s.tol},
                   {"seed", s.seed},
                   {"parameters", m.model->has_lora() ? "lora adapters" : "all"}});
  const double base = loss_value(loss);
  json out = {{"settings", settings}, {"loss", base}};
  const bool reports = processes.writes();
  if (reports && observer.loss_measured) observer.loss_measured(m, base);
  for (const auto& name : metrics) {
    const auto t0 = Clock::now();
    SharpnessMeasured r;
    r.metric = name;
    if (name == "sam") {
      r.value = sam_sharpness(params, loss, s.rho);
      r.key = "sam_sharpness", r.what = "L(w + rho g/|g|) - L(w)";
    } else if (name == "eps") {
      r.value = epsilon_sharpness(params, loss, s.eps, s.eps_steps);
      r.key = "epsilon_sharpness", r.detail_name = "increase";
      r.what = "100 max L(w+d)-L(w) / (1+L(w)), |d_i| <= eps(|w_i|+1), " + std::to_string(s.eps_steps) +
               " ascent steps: a lower bound";
    } else if (name == "avg") {
      r.value = average_sharpness(params, loss, s.sigma, s.samples, s.seed);
      r.key = "average_sharpness", r.detail_name = "stderr";
      r.what = "E L(w + sigma|w| z) - L(w), " + std::to_string(s.samples) + " draws";
    } else if (name == "lambda_max") {
      r.value = hessian_top_eigenvalue(params, loss, s.iters, s.tol, s.seed);
      r.key = "lambda_max", r.what = "top Hessian eigenvalue, power iteration";
    } else {
      r.value = hessian_trace(params, loss, s.samples, s.seed);
      r.key = "hessian_trace", r.detail_name = "stderr";
      r.what = "Hutchinson, " + std::to_string(s.samples) + " Rademacher vectors";
    }
    r.seconds = seconds_since(t0);
    json entry = {{"value", r.value.value},
                  {"iterations", r.value.iterations},
                  {"converged", r.value.converged},
                  {"seconds", r.seconds},
                  {"what", r.what}};
    if (!r.detail_name.empty()) entry[r.detail_name] = r.value.detail;
    out["metrics"][name] = entry;
    out[r.key] = r.value.value;  // flat keys, as the experiment runner's flatness.json has them
    if (reports && observer.metric_measured) observer.metric_measured(r);
  }
  if (!s.out.empty() && processes.writes()) {
    make_dirs(s.out);
    write_file_atomic(join_path(s.out, kSharpnessJsonFile), out.dump(2) + "\n");
  }
  return out;
}

}  // namespace flatune
