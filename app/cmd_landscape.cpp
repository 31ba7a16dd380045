// `flatune landscape`: loss along random directions (1-D, 2-D) or along base -> tuned, with CSV,
// JSON (every setting needed to redo it) and figures; `flatune sharpness`: the sharpness
// metrics on fixed batches; `flatune correlate`: a sharpness metric against forgetting across
// runs (Pearson, Spearman, scatter plot); `flatune bench landscape`: how long a 2-D surface and
// a lambda-max estimate take on a fresh model.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

#include "commands.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/data/dataset.h"
#include "flatune/io/checkpoint.h"
#include "flatune/landscape/directions.h"
#include "flatune/landscape/fixed_batches.h"
#include "flatune/model/lora.h"
#include "flatune/report/plot.h"
#include "flatune/report/stats.h"
#include "flatune/train/distributed.h"

namespace fs = std::filesystem;

namespace flatune::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// What the loss is measured on; shared by landscape and sharpness.
struct DataArgs {
  std::string model, adapter, data, format = "auto", template_name = "auto";
  int batches = 2;
  int64_t batch_size = 8, max_length = 0;
  int threads = 0;
};

void add_data_options(CLI::App* sub, DataArgs& a, bool model_required) {
  auto* m = sub->add_option("--model", a.model, "model folder (Hugging Face layout)");
  if (model_required) m->required();
  sub->add_option("--adapter", a.adapter, "a PEFT LoRA adapter folder to add to the model");
  sub->add_option("--data", a.data, "data the loss is measured on")->required();
  sub->add_option("--data-format", a.format, "alpaca sharegpt metamath jsonl text auto");
  sub->add_option("--template", a.template_name, "prompt template (alpaca llama2 chatml llama3 vicuna plain auto)");
  sub->add_option("--batches", a.batches, "K: the first K batches of the data, fixed");
  sub->add_option("--batch-size", a.batch_size, "B: examples per batch");
  sub->add_option("--max-length", a.max_length, "tokens per example (default: min(model's, 512))");
  sub->add_option("--threads", a.threads, "intra-op threads");
}

// The model, its tokenised data, the fixed batches; the closure refers to the members, so this
// stays where it was made (no copies).
struct Measurement {
  LlamaForCausalLM model{nullptr};
  FixedBatches batches;
  TokenizeStats stats;
  std::string template_used;
  int64_t max_length = 0;
  Measurement() = default;
  Measurement(const Measurement&) = delete;
  Measurement& operator=(const Measurement&) = delete;
};

void prepare(Measurement& m, const DataArgs& a, const std::string& model_dir) {
  if (a.threads > 0) at::set_num_threads(a.threads);
  if (a.batches < 1) fail("--batches", "must be at least 1");
  if (a.batch_size < 1) fail("--batch-size", "must be at least 1");
  auto tok = load_tokenizer(model_dir);
  m.model = load_llama(model_dir);
  if (!a.adapter.empty()) load_lora_adapter(m.model, a.adapter);
  m.model->eval();
  m.max_length = a.max_length > 0 ? a.max_length : std::min<int64_t>(m.model->config().max_position_embeddings, 512);
  m.template_used = resolve_template(a.template_name, *tok);
  auto ex = tokenize_conversations(read_conversations(a.data, a.format), *tok, {m.template_used, m.max_length, false}, &m.stats);
  const int64_t pad = tok->special().pad_id.value_or(tok->special().eos_id.value_or(0));
  m.batches = fixed_batches(ex, a.batches, a.batch_size, pad, a.data);
}

json data_settings(const DataArgs& a, const Measurement& m, const std::string& model_dir) {
  return {{"model", model_dir},
          {"adapter", a.adapter},
          {"data", a.data},
          {"data_format", a.format},
          {"template", m.template_used},
          {"batches", a.batches},
          {"batch_size", a.batch_size},
          {"max_length", m.max_length},
          {"batches_used", m.batches.batches.size()},
          {"examples_used", m.batches.examples},
          {"label_tokens", m.batches.label_tokens},
          {"threads", at::get_num_threads()},
          {"torch_version", compat::torch_version()}};
}

NamedParams all_parameters(LlamaForCausalLM& model) {
  NamedParams p;
  for (auto& item : model->named_parameters(true)) p.emplace_back(item.key(), item.value());
  return p;
}

// Under `flatune launch` each process measures its share of the fixed batches and the shares
// are summed: every process computes the same surface or metric, rank 0 writes it.
LossClosure shared_loss(LlamaForCausalLM& model, const FixedBatches& fb, const Distributed& dist) {
  return fixed_batches_loss(model, fb, dist.rank, dist.world_size,
                            [&dist](std::vector<torch::Tensor>& ts) { dist.allreduce_sum(ts); });
}

// "a:b" with a < b.
std::pair<double, double> parse_range(const std::string& s) {
  auto colon = s.find(':');
  if (colon == std::string::npos) fail("--range", "expected A:B, got '" + s + "'");
  try {
    size_t ua = 0, ub = 0;
    double a = std::stod(s.substr(0, colon), &ua), b = std::stod(s.substr(colon + 1), &ub);
    if (ua != colon || ub != s.size() - colon - 1) throw std::invalid_argument(s);
    if (!(a < b) || !std::isfinite(a) || !std::isfinite(b)) fail("--range", "expected A:B with A < B, got '" + s + "'");
    return {a, b};
  } catch (const std::logic_error&) {
    fail("--range", "expected two numbers A:B, got '" + s + "'");
  }
}

void write_figure_pair(const std::string& out, const std::string& stem, const std::function<void(const std::string&)>& draw) {
  draw(join_path(out, stem + ".png"));
  draw(join_path(out, stem + ".svg"));
}

// ------------------------------------------------------------------ landscape

struct LandscapeArgs {
  DataArgs data;
  std::string out, range, from, to, directions, normalize = "filter";
  int points = 21, grid = 0;
  bool ignore_1d = false, lora_only = false;
  uint64_t seed = 0;
};

void run_landscape(const LandscapeArgs& a) {
  const bool interpolation = !a.from.empty();
  const bool two_d = a.grid != 0;
  if (a.data.model.empty() && a.to.empty()) fail("--model", "give the model folder (or --from BASE --to TUNED)");
  if (!a.data.model.empty() && !a.to.empty() && a.data.model != a.to) fail("--to", "give --model or --to, not two different models");
  if (!a.to.empty() && !interpolation) fail("--to", "interpolation needs --from BASE as well");
  if (interpolation && two_d) fail("--grid", "interpolation is one-dimensional; leave out --grid");
  if (interpolation && !a.directions.empty()) fail("--directions", "interpolation follows base -> tuned; leave out --directions");
  if (interpolation && !a.data.adapter.empty()) fail("--adapter", "interpolation is between two full model folders");
  if (two_d && a.grid < 3) fail("--grid", "a 2-D surface needs at least 3 points per axis, got " + std::to_string(a.grid));
  if (!two_d && a.points < 2) fail("--points", "a 1-D surface needs at least 2 points, got " + std::to_string(a.points));
  if (a.normalize != "filter" && a.normalize != "none") fail("--normalize", "filter or none, not '" + a.normalize + "'");
  auto [lo, hi] = parse_range(!a.range.empty() ? a.range : interpolation ? "-0.5:1.5" : "-1:1");
  const std::string model_dir = a.to.empty() ? a.data.model : a.to;

  Distributed dist = init_distributed();
  const bool writes = dist.is_main();
  Measurement m;
  prepare(m, a.data, model_dir);
  if (a.lora_only && !m.model->has_lora()) fail("--lora-only", "the model has no LoRA adapters (add them with --adapter DIR)");
  NamedParams params = all_parameters(m.model);
  LossClosure loss = shared_loss(m.model, m.batches, dist);
  if (writes) make_dirs(a.out);

  json settings = data_settings(a.data, m, model_dir);
  settings["processes"] = dist.world_size;
  settings["range"] = {lo, hi};
  settings["points"] = two_d ? a.grid : a.points;
  const double loss_before = loss_value(loss);
  const auto t0 = Clock::now();
  json result;
  std::string title_data = "on " + fs::path(a.data.data).filename().string() + " (" + std::to_string(m.batches.examples) + " examples)";

  if (interpolation) {
    settings["mode"] = "interpolation";
    settings["from"] = a.from;
    settings["to"] = model_dir;
    // Measured from the tuned model along (tuned - base): coefficient alpha - 1, so alpha = 0 is
    // the base and alpha = 1 the tuned model exactly.
    NamedTensors dir = align_direction(params, difference_direction(load_checkpoint_weights(a.from), m.model->weights(), a.from), a.from);
    Surface1D s = surface_1d(params, dir, loss, lo - 1.0, hi - 1.0, a.points);
    for (int i = 0; i < a.points; ++i) s.alphas[i] = lo + (hi - lo) * i / (a.points - 1);
    result = surface_1d_json(s);
    if (writes) {
      write_file_atomic(join_path(a.out, "interpolation.csv"), surface_1d_csv(s));
      write_figure_pair(a.out, "interpolation", [&](const std::string& path) {
        plot_lines(path, "loss from base (0) to tuned (1) " + title_data, "interpolation alpha", "loss", {{"base -> tuned", s.alphas, s.losses}});
      });
    }
  } else {
    DirectionOptions o;
    o.seed = a.seed;
    o.filter_normalize = a.normalize == "filter";
    o.keep_1d = !a.ignore_1d;
    o.lora_only = a.lora_only;
    DirectionSet set;
    if (!a.directions.empty()) {
      set = load_directions(a.directions, params);
      if (two_d && set.directions.size() < 2) fail(a.directions, "holds one direction; a 2-D surface needs two");
      settings["directions_file"] = a.directions;
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
      const std::string saved = join_path(a.out, "directions.safetensors");
      if (writes) save_directions(saved, set);
      settings["directions_file"] = saved;
    }
    settings["directions"] = set.settings;
    if (two_d) {
      settings["mode"] = "2d";
      Surface2D s = surface_2d(params, set.directions[0], set.directions[1], loss, lo, hi, a.grid);
      result = surface_2d_json(s);
      SurfaceStats st = surface_stats(s);
      result["stats"] = {{"curvature", st.curvature}, {"average_gradient", st.average_gradient}, {"mean_abs_gradient", st.mean_abs_gradient}};
      if (writes) {
        write_file_atomic(join_path(a.out, "surface_2d.csv"), surface_2d_csv(s));
        write_figure_pair(a.out, "surface_2d", [&](const std::string& path) {
          plot_contour(path, "loss " + title_data, s.alphas, s.betas, s.losses);
        });
      }
    } else {
      settings["mode"] = "1d";
      Surface1D s = surface_1d(params, set.directions[0], loss, lo, hi, a.points);
      result = surface_1d_json(s);
      const std::string kind = set.settings.count("normalize") && set.settings.at("normalize") == "filter" ? "filter-normalised" : "Gaussian";
      if (writes) {
        write_file_atomic(join_path(a.out, "surface_1d.csv"), surface_1d_csv(s));
        write_figure_pair(a.out, "surface_1d", [&](const std::string& path) {
          plot_lines(path, "loss along a " + kind + " random direction " + title_data, "step along the direction", "loss",
                     {{"seed " + (set.settings.count("seed") ? set.settings.at("seed") : std::string("?")), s.alphas, s.losses}});
        });
      }
    }
  }
  const double seconds = seconds_since(t0);
  const double loss_after = loss_value(loss);
  json out = {{"settings", settings}, {"loss_at_model", loss_before}, {"loss_at_model_after", loss_after}, {"surface", result},
              {"seconds", seconds}};
  if (!writes) return;
  write_file_atomic(join_path(a.out, "landscape.json"), out.dump(2) + "\n");
  std::printf("%s surface over [%g, %g], %d points%s, loss at the model %.6f, %.1f s -> %s\n",
              settings["mode"].get<std::string>().c_str(), lo, hi, two_d ? a.grid : a.points, two_d ? " per axis" : "", loss_before,
              seconds, a.out.c_str());
}

// ------------------------------------------------------------------ sharpness

const std::vector<std::string> kMetrics = {"sam", "eps", "avg", "lambda_max", "trace"};

struct SharpnessArgs {
  DataArgs data;
  std::vector<std::string> metrics = {"sam", "lambda_max"};
  double rho = 0.05, eps = 1e-3, sigma = 0.01, tol = 1e-3;
  int eps_steps = 10, samples = 20, iters = 20;
  uint64_t seed = 0;
  std::string out;
};

void run_sharpness(const SharpnessArgs& a) {
  std::vector<std::string> metrics;
  for (std::string name : a.metrics) {
    if (name == "lambda-max") name = "lambda_max";
    if (std::find(kMetrics.begin(), kMetrics.end(), name) == kMetrics.end())
      fail("--metrics", "unknown metric '" + name + "' (sam eps avg lambda_max trace)");
    if (std::find(metrics.begin(), metrics.end(), name) == metrics.end()) metrics.push_back(name);
  }
  if (metrics.empty()) fail("--metrics", "name at least one metric");
  if (a.eps_steps < 1) fail("--eps-steps", "must be at least 1");
  if (a.samples < 1) fail("--samples", "must be at least 1");
  if (a.iters < 1) fail("--iters", "must be at least 1");
  Distributed dist = init_distributed();
  Measurement m;
  prepare(m, a.data, a.data.model);
  auto params = m.model->trainable_parameters();
  LossClosure loss = shared_loss(m.model, m.batches, dist);
  json settings = data_settings(a.data, m, a.data.model);
  settings["processes"] = dist.world_size;
  settings.update({{"metrics", metrics}, {"rho", a.rho}, {"eps", a.eps}, {"eps_steps", a.eps_steps}, {"sigma", a.sigma},
                   {"samples", a.samples}, {"iters", a.iters}, {"tol", a.tol}, {"seed", a.seed},
                   {"parameters", m.model->has_lora() ? "lora adapters" : "all"}});
  const double base = loss_value(loss);
  json out = {{"settings", settings}, {"loss", base}};
  if (dist.is_main()) {
    std::printf("loss on %lld examples (%lld tokens): %.6f\n", static_cast<long long>(m.batches.examples),
                static_cast<long long>(m.batches.label_tokens), base);
    std::printf("%-12s %14s %10s %10s %14s %9s  %s\n", "metric", "value", "iters", "converged", "detail", "seconds", "what");
  }
  for (const auto& name : metrics) {
    const auto t0 = Clock::now();
    SharpnessValue v;
    std::string key, what, detail_name;
    if (name == "sam") {
      v = sam_sharpness(params, loss, a.rho);
      key = "sam_sharpness", what = "L(w + rho g/|g|) - L(w)";
    } else if (name == "eps") {
      v = epsilon_sharpness(params, loss, a.eps, a.eps_steps);
      key = "epsilon_sharpness", detail_name = "increase";
      what = "100 max L(w+d)-L(w) / (1+L(w)), |d_i| <= eps(|w_i|+1), " + std::to_string(a.eps_steps) + " ascent steps: a lower bound";
    } else if (name == "avg") {
      v = average_sharpness(params, loss, a.sigma, a.samples, a.seed);
      key = "average_sharpness", detail_name = "stderr", what = "E L(w + sigma|w| z) - L(w), " + std::to_string(a.samples) + " draws";
    } else if (name == "lambda_max") {
      v = hessian_top_eigenvalue(params, loss, a.iters, a.tol, a.seed);
      key = "lambda_max", what = "top Hessian eigenvalue, power iteration";
    } else {
      v = hessian_trace(params, loss, a.samples, a.seed);
      key = "hessian_trace", detail_name = "stderr", what = "Hutchinson, " + std::to_string(a.samples) + " Rademacher vectors";
    }
    const double secs = seconds_since(t0);
    json entry = {{"value", v.value}, {"iterations", v.iterations}, {"converged", v.converged}, {"seconds", secs}, {"what", what}};
    if (!detail_name.empty()) entry[detail_name] = v.detail;
    out["metrics"][name] = entry;
    out[key] = v.value;  // flat keys, as the experiment runner's flatness.json has them
    if (dist.is_main())
      std::printf("%-12s %14.6g %10lld %10s %14s %9.1f  %s\n", name.c_str(), v.value, static_cast<long long>(v.iterations),
                  v.converged ? "yes" : "no", detail_name.empty() ? "" : (detail_name + " " + std::to_string(v.detail)).c_str(), secs,
                  what.c_str());
  }
  if (!a.out.empty() && dist.is_main()) {
    make_dirs(a.out);
    write_file_atomic(join_path(a.out, "sharpness.json"), out.dump(2) + "\n");
  }
}

// ------------------------------------------------------------------ correlate

// A table of runs: a label and named numeric values each.
struct RunTable {
  std::vector<std::string> labels;
  std::vector<std::map<std::string, double>> values;
};

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

// Header row, then one row per run; a column "run" or "name" labels the rows. Empty, "nan" and
// "n/a" cells are missing values.
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
      fail(path + ":" + std::to_string(lineno), std::to_string(cells.size()) + " cells, the header has " + std::to_string(header.size()));
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

// An experiment folder (or its runs/): every run's flatness.json and sharpness.json numbers,
// with forgetting (before's overall score - the run's) from the experiment's forgetting.json.
RunTable read_runs_folder(const std::string& dir) {
  std::string exp = dir_exists(join_path(dir, "runs")) ? dir : fs::path(dir).lexically_normal().parent_path().string();
  const std::string runs = join_path(exp, "runs");
  if (!dir_exists(runs)) fail(dir, "neither an experiment folder (with runs/) nor its runs/ folder");
  std::map<std::string, double> forgetting, target_gain;
  const std::string fj = join_path(exp, "forgetting.json");
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
    } catch (const json::exception& e) {
      fail(fj, std::string("unexpected structure: ") + e.what());
    }
  }
  RunTable t;
  std::vector<fs::path> folders;
  for (const auto& e : fs::directory_iterator(runs))
    if (e.is_directory()) folders.push_back(e.path());
  std::sort(folders.begin(), folders.end());
  for (const auto& p : folders) {
    std::map<std::string, double> row;
    bool any = false;
    for (const char* file : {"flatness.json", "sharpness.json"}) {
      const std::string f = (p / file).string();
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

struct CorrelateArgs {
  std::string source, x = "lambda_max", y = "forgetting", out;
};

void run_correlate(const CorrelateArgs& a) {
  if (!file_exists(a.source) && !dir_exists(a.source)) fail(a.source, "no such file or folder");
  RunTable t = dir_exists(a.source) ? read_runs_folder(a.source) : read_runs_csv(a.source);
  std::set<std::string> names;
  for (const auto& row : t.values)
    for (const auto& [k, v] : row) names.insert(k);
  for (const auto* which : {&a.x, &a.y})
    if (!names.count(*which)) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : " ") + n;
      fail(which == &a.x ? "--x" : "--y", "no run has '" + *which + "' (known: " + known + ")");
    }
  std::vector<double> xs, ys;
  std::vector<std::string> labels;
  size_t skipped = 0;
  for (size_t i = 0; i < t.labels.size(); ++i) {
    auto x = t.values[i].find(a.x), y = t.values[i].find(a.y);
    if (x == t.values[i].end() || y == t.values[i].end() || !std::isfinite(x->second) || !std::isfinite(y->second)) {
      ++skipped;
      continue;
    }
    xs.push_back(x->second);
    ys.push_back(y->second);
    labels.push_back(t.labels[i]);
  }
  if (xs.size() < 3) fail(a.source, "correlation needs at least 3 runs with both values, found " + std::to_string(xs.size()));
  TestResult p = pearson(xs, ys), s = spearman(xs, ys);
  std::printf("%s against %s over %zu runs%s\n", a.y.c_str(), a.x.c_str(), xs.size(),
              skipped ? (" (" + std::to_string(skipped) + " without both values left out)").c_str() : "");
  std::printf("%-10s %10s %12s\n", "", "r", "p");
  std::printf("%-10s %10.4f %12.4g\n", "Pearson", p.statistic, p.p_value);
  std::printf("%-10s %10.4f %12.4g\n", "Spearman", s.statistic, s.p_value);
  if (a.out.empty()) return;
  make_dirs(a.out);
  json runs = json::array();
  for (size_t i = 0; i < xs.size(); ++i) runs.push_back({{"run", labels[i]}, {a.x, xs[i]}, {a.y, ys[i]}});
  json j = {{"source", a.source}, {"x", a.x}, {"y", a.y}, {"n", xs.size()}, {"left_out", skipped},
            {"pearson", {{"r", p.statistic}, {"p_value", p.p_value}}}, {"spearman", {{"rho", s.statistic}, {"p_value", s.p_value}}},
            {"runs", runs}};
  write_file_atomic(join_path(a.out, "correlation.json"), j.dump(2) + "\n");
  char title[160];
  std::snprintf(title, sizeof title, "%s vs %s (Pearson %.2f, Spearman %.2f, %zu runs)", a.y.c_str(), a.x.c_str(), p.statistic, s.statistic,
                xs.size());
  write_figure_pair(a.out, "correlation", [&](const std::string& path) { plot_scatter(path, title, a.x, a.y, xs, ys, labels); });
}

}  // namespace

void add_landscape_command(CLI::App& app) {
  auto a = std::make_shared<LandscapeArgs>();
  CLI::App* sub = app.add_subcommand(
      "landscape",
      "loss surface around a model: 1-D (--points N --range A:B) or 2-D (--grid N) along seeded random directions, or the "
      "interpolation --from BASE --to TUNED (alpha 0 = base, 1 = tuned, default range -0.5:1.5); writes CSV, landscape.json "
      "(every setting), PNG and SVG, and the drawn directions as directions.safetensors");
  add_data_options(sub, a->data, false);
  sub->add_option("--out", a->out, "output folder")->required();
  sub->add_option("--points", a->points, "points along a 1-D direction or the interpolation");
  sub->add_option("--range", a->range, "A:B, the coefficients' range (default -1:1; interpolation -0.5:1.5)");
  sub->add_option("--grid", a->grid, "N: a 2-D surface on an N x N grid over the range on both axes");
  sub->add_option("--from", a->from, "interpolation: the base model folder");
  sub->add_option("--to", a->to, "interpolation: the tuned model folder (default --model)");
  sub->add_option("--normalize", a->normalize, "filter (Li et al. 2018: each output row scaled to the weight row's norm) or none");
  sub->add_flag("--ignore-1d", a->ignore_1d, "zero the direction on 1-D parameters (norms, biases)");
  sub->add_flag("--lora-only", a->lora_only, "directions over the LoRA adapters only (needs --adapter)");
  sub->add_option("--seed", a->seed, "direction seed (the second 2-D direction uses seed + 1)");
  sub->add_option("--directions", a->directions, "reuse directions a previous run saved (directions.safetensors)");
  sub->callback([a] { run_landscape(*a); });
}

void add_sharpness_command(CLI::App& app) {
  auto a = std::make_shared<SharpnessArgs>();
  CLI::App* sub = app.add_subcommand(
      "sharpness",
      "sharpness on fixed batches: sam (L(w + rho g/|g|) - L(w)), eps (Keskar et al. epsilon-sharpness, approximated by "
      "--eps-steps projected sign-ascent steps in the box |d_i| <= eps(|w_i|+1): a lower bound of the box maximum), avg "
      "(average increase under Gaussian noise sigma|w|, --samples draws), lambda_max (power iteration on Hessian-vector "
      "products, --iters), trace (Hutchinson, --samples vectors); prints a table, --out writes sharpness.json");
  add_data_options(sub, a->data, true);
  sub->add_option("--metrics", a->metrics, "sam eps avg lambda_max trace (comma or space separated)")->delimiter(',');
  sub->add_option("--rho", a->rho, "SAM radius");
  sub->add_option("--eps", a->eps, "epsilon-sharpness box size (relative)");
  sub->add_option("--eps-steps", a->eps_steps, "epsilon-sharpness ascent steps");
  sub->add_option("--sigma", a->sigma, "average sharpness: relative noise scale");
  sub->add_option("--samples", a->samples, "draws for avg and vectors for trace");
  sub->add_option("--iters", a->iters, "lambda_max: most power iterations");
  sub->add_option("--tol", a->tol, "lambda_max: relative change that counts as converged");
  sub->add_option("--seed", a->seed, "seed of the random vectors");
  sub->add_option("--out", a->out, "folder (e.g. a run folder) that receives sharpness.json");
  sub->callback([a] { run_sharpness(*a); });
}

void add_correlate_command(CLI::App& app) {
  auto a = std::make_shared<CorrelateArgs>();
  CLI::App* sub = app.add_subcommand(
      "correlate",
      "Pearson and Spearman (two-sided p-values) of a sharpness metric against forgetting across runs: an experiment folder "
      "(runs/*/flatness.json, sharpness.json, forgetting.json) or a CSV with a header row (column run|name labels rows)");
  sub->add_option("source", a->source, "experiment folder, its runs/ folder, or a CSV file")->required();
  sub->add_option("--x", a->x, "the sharpness metric (e.g. lambda_max sam_sharpness surface_curvature)");
  sub->add_option("--y", a->y, "forgetting (before's overall score - the run's), target_gain, or another column");
  sub->add_option("--out", a->out, "folder for correlation.json and correlation.png/.svg");
  sub->callback([a] { run_correlate(*a); });
}

void add_bench_landscape_command(CLI::App& bench) {
  struct Args {
    int64_t hidden = 256, layers = 8, heads = 4, ffn = 688, vocab = 8000, seq = 128, batch = 8;
    int grid = 21, iters = 20, threads = 0;
    std::string json_out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = bench.add_subcommand("landscape", "seconds for an N x N loss surface and a lambda-max estimate on a fresh model");
  sub->add_option("--hidden", a->hidden, "hidden size");
  sub->add_option("--layers", a->layers, "layers");
  sub->add_option("--heads", a->heads, "attention heads");
  sub->add_option("--ffn", a->ffn, "MLP size");
  sub->add_option("--vocab", a->vocab, "vocabulary size");
  sub->add_option("--seq", a->seq, "tokens per row");
  sub->add_option("--batch", a->batch, "rows in the one fixed batch");
  sub->add_option("--grid", a->grid, "N of the N x N surface");
  sub->add_option("--iters", a->iters, "power iterations (tolerance 0: all of them run)");
  sub->add_option("--threads", a->threads, "intra-op threads");
  sub->add_option("--json", a->json_out, "also write the results as JSON");
  sub->callback([a] {
    if (a->threads > 0) at::set_num_threads(a->threads);
    if (a->grid < 3) fail("--grid", "at least 3");
    LlamaConfig c;
    c.vocab_size = a->vocab, c.hidden_size = a->hidden, c.intermediate_size = a->ffn, c.num_hidden_layers = a->layers;
    c.num_attention_heads = a->heads, c.num_key_value_heads = a->heads, c.head_dim = a->hidden / a->heads;
    c.max_position_embeddings = a->seq;
    LlamaForCausalLM model(c);
    model->init_weights(0);
    model->eval();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    FixedBatches fb;
    Batch b;
    b.input_ids = torch::randint(0, a->vocab, {a->batch, a->seq}, gen, torch::kLong);
    b.labels = b.input_ids;
    b.label_tokens = a->batch * (a->seq - 1);
    fb.batches.push_back(b);
    fb.label_tokens = b.label_tokens;
    LossClosure loss = fixed_batches_loss(model, fb);
    NamedParams params = all_parameters(model);
    std::printf("model %.1fM parameters (hidden %lld, %lld layers, MLP %lld, vocab %lld), batch %lld x %lld tokens, %d threads\n",
                c.num_parameters() / 1e6, static_cast<long long>(a->hidden), static_cast<long long>(a->layers),
                static_cast<long long>(a->ffn), static_cast<long long>(a->vocab), static_cast<long long>(a->batch),
                static_cast<long long>(a->seq), at::get_num_threads());
    DirectionOptions o;
    auto d1 = random_direction(params, o);
    o.seed = 1;
    auto d2 = random_direction(params, o);
    auto t0 = Clock::now();
    loss_value(loss);
    const double one_forward = seconds_since(t0);
    t0 = Clock::now();
    surface_2d(params, d1, d2, loss, -1.0, 1.0, a->grid);
    const double surface_s = seconds_since(t0);
    t0 = Clock::now();
    SharpnessValue lam = hessian_top_eigenvalue(params, loss, a->iters, 0.0, 0);
    const double lambda_s = seconds_since(t0);
    std::printf("one loss evaluation          %8.2f s\n", one_forward);
    std::printf("%dx%d surface                %8.1f s  (%.2f s a point)\n", a->grid, a->grid, surface_s, surface_s / (a->grid * a->grid));
    std::printf("lambda_max, %lld iterations   %8.1f s  (%.2f s a Hessian-vector product; lambda %.4g)\n",
                static_cast<long long>(lam.iterations), lambda_s, lambda_s / std::max<int64_t>(1, lam.iterations), lam.value);
    if (!a->json_out.empty())
      write_file_atomic(a->json_out, json({{"parameters", c.num_parameters()}, {"threads", at::get_num_threads()},
                                           {"batch", a->batch}, {"seq", a->seq}, {"grid", a->grid}, {"surface_seconds", surface_s},
                                           {"loss_seconds", one_forward}, {"lambda_iterations", lam.iterations},
                                           {"lambda_seconds", lambda_s}})
                                          .dump(2) + "\n");
  });
}

}  // namespace flatune::cli
