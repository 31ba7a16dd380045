#include "flatune/report/experiment.h"

#include <sys/utsname.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/log.h"
#include "flatune/core/progress.h"
#include "flatune/data/batching.h"
#include "flatune/data/dataset.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/forgetting.h"
#include "flatune/io/checkpoint.h"
#include "flatune/landscape/fixed_batches.h"
#include "flatune/landscape/landscape.h"
#include "flatune/landscape/measure.h"
#include "flatune/model/llama.h"
#include "flatune/report/experiment_layout.h"
#include "flatune/report/plot.h"
#include "flatune/report/stats.h"
#include "flatune/report/watch.h"
#include "flatune/report/wiseft_sweep.h"
#include "flatune/retain/merge.h"
#include "flatune/train/run_folder.h"
#include "flatune/train/signals.h"
#include "flatune/train/trainer.h"

namespace fs = std::filesystem;

namespace flatune {

// ------------------------------------------------------------------ the grid file

namespace {

std::string scalar(const YAML::Node& n, const std::string& where) {
  if (n.IsSequence()) {
    std::string s;
    for (const auto& e : n) s += (s.empty() ? "" : ",") + e.as<std::string>();
    return s;
  }
  if (!n.IsScalar()) fail(where, "expected a value");
  return n.as<std::string>();
}

// Relative paths in a grid file are relative to the file.
std::string resolve(const std::string& p, const std::string& base_dir) {
  if (p.empty() || p[0] == '/' || base_dir.empty()) return p;
  return (fs::path(base_dir) / p).lexically_normal().string();
}

const std::set<std::string> kPathKeys = {"model", "init", "tokenizer", "data", "replay", "ewc"};

std::map<std::string, std::string> options(const YAML::Node& n, const std::string& where, const std::string& dir,
                                           const std::set<std::string>& skip = {}) {
  std::map<std::string, std::string> out;
  if (!n) return out;
  if (!n.IsMap()) fail(where, "expected a map of training options");
  for (const auto& kv : n) {
    std::string k = kv.first.as<std::string>();
    if (skip.count(k)) continue;
    std::string v = scalar(kv.second, where + ": " + k);
    out[k] = kPathKeys.count(k) ? resolve(v, dir) : v;
    TrainOptions probe;
    set_train_option(probe, k, out[k]);  // rejects unknown keys and bad values now, not hours later
  }
  return out;
}

}  // namespace

Grid grid_from_yaml_text(const std::string& text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(where, "malformed YAML at line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (!root.IsMap()) fail(where, "expected a map");
  const std::string dir = fs::path(where).parent_path().string();
  // A misspelt section would otherwise be ignored without a word.
  static const std::set<std::string> sections = {"name",     "before", "stages",      "targets",
                                                 "methods",  "seeds",  "train",       "eval",
                                                 "flatness", "watch",  "stage-cache", "comparisons"};
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    if (!sections.count(key))
      fail(where + ": line " + std::to_string(kv.first.Mark().line + 1),
           "key '" + key +
               "': not a grid section (name, before, stages, targets, methods, seeds, train, eval, "
               "flatness, watch, stage-cache, comparisons)");
  }
  Grid g;
  std::string section;  // the section being read, for errors
  try {
    section = "name";
    if (root["name"]) g.name = root["name"].as<std::string>();
    section = "before";
    if (root["before"]) g.before = resolve(root["before"].as<std::string>(), dir);
    section = "stages";
    for (const auto& s : root["stages"]) {
      GridStage st;
      st.name = s["name"].as<std::string>();
      st.train = options(s["train"], where + ": stage " + st.name, dir);
      g.stages.push_back(st);
    }
    section = "targets";
    for (const auto& t : root["targets"]) {
      GridTarget gt;
      gt.name = t["name"].as<std::string>();
      gt.data = resolve(t["data"].as<std::string>(), dir);
      if (t["format"]) gt.format = t["format"].as<std::string>();
      if (t["test"]) gt.test = resolve(t["test"].as<std::string>(), dir);
      g.targets.push_back(gt);
    }
    section = "methods";
    for (const auto& m : root["methods"]) {
      GridMethod gm;
      gm.name = m["name"].as<std::string>();
      if (m["wiseft-alpha"]) gm.wiseft_alpha = m["wiseft-alpha"].as<double>();
      if (m["rho-reference-norm"]) {
        gm.rho_reference_norm = m["rho-reference-norm"].as<double>();
        if (!(gm.rho_reference_norm > 0) || !std::isfinite(gm.rho_reference_norm))
          fail(where, "method " + gm.name + ": rho-reference-norm must be a positive number");
        if (!m["rho"] || !m["sam"])
          fail(where,
               "method " + gm.name + ": rho-reference-norm scales the method's own rho, so it needs sam: and rho:");
      }
      gm.train = options(m, where + ": method " + gm.name, dir, {"name", "wiseft-alpha", "rho-reference-norm"});
      g.methods.push_back(gm);
    }
    section = "seeds";
    if (root["seeds"]) {
      g.seeds.clear();
      for (const auto& s : root["seeds"]) g.seeds.push_back(s.as<uint64_t>());
    }
    section = "train";
    g.train = options(root["train"], where + ": train", dir);
    section = "eval";
    if (const auto& e = root["eval"]) {
      static const std::set<std::string> eval_keys = {"suites", "perplexity", "categories",     "template",
                                                      "limit",  "batch-size", "max-new-tokens", "wiseft-sweep"};
      if (e.IsMap())
        for (const auto& kv : e)
          if (!eval_keys.count(kv.first.Scalar())) {
            std::string known;
            for (const auto& k : eval_keys) known += (known.empty() ? "" : ", ") + k;
            fail(where + ": line " + std::to_string(kv.first.Mark().line + 1),
                 "key 'eval: " + kv.first.Scalar() + "': not an eval setting (" + known + ")");
          }
      for (const auto& s : e["suites"]) g.suites.push_back(resolve(s.as<std::string>(), dir));
      for (const auto& s : e["perplexity"]) g.perplexity.push_back(resolve(s.as<std::string>(), dir));
      if (e["categories"]) g.categories = resolve(e["categories"].as<std::string>(), dir);
      if (e["template"]) g.eval_template = e["template"].as<std::string>();
      if (e["limit"]) g.eval_limit = e["limit"].as<int64_t>();
      if (e["max-new-tokens"]) {
        g.eval_max_new_tokens = e["max-new-tokens"].as<int64_t>();
        if (g.eval_max_new_tokens < 1) fail(where, "eval: max-new-tokens must be positive");
      }
      if (e["batch-size"]) {
        g.eval_batch = e["batch-size"].as<int64_t>();
        if (g.eval_batch < 1) fail(where, "eval: batch-size must be positive");
      }
      for (const auto& a : e["wiseft-sweep"]) {
        double alpha = a.as<double>();
        if (!(alpha >= 0 && alpha <= 1))
          fail(where, "eval: wiseft-sweep: alpha " + a.as<std::string>() + " is outside [0, 1]");
        g.wiseft_sweep.push_back(alpha);
      }
    }
    section = "flatness";
    if (const auto& f = root["flatness"]) {
      if (f["batches"]) g.flatness_batches = f["batches"].as<int>();
      if (f["points"]) g.surface_points = f["points"].as<int>();
      if (f["range"]) g.surface_range = f["range"].as<double>();
      if (f["two-d"]) g.surface_2d = f["two-d"].as<bool>();
      if (f["lambda-iters"]) g.lambda_iters = f["lambda-iters"].as<int>();
      if (f["rho"]) g.sam_rho = f["rho"].as<double>();
    }
    section = "watch";
    if (const auto& w = root["watch"]) {
      g.watch = true;
      if (w["every"]) g.watch_every = w["every"].as<int64_t>();
      if (w["limit"]) g.watch_limit = w["limit"].as<int64_t>();
      if (g.watch_every < 0) fail(where, "watch: every must be 0 (start and end only) or positive");
    }
    section = "comparisons";
    for (const auto& c : root["comparisons"]) {
      GridComparison gc{c["method"].as<std::string>(), c["against"].as<std::string>(),
                        c["design"] ? c["design"].as<std::string>() : "equal steps"};
      for (const std::string* name : {&gc.method, &gc.against}) {
        bool known = false;
        for (const auto& m : g.methods) known = known || m.name == *name;
        if (!known)
          fail(where + ": line " + std::to_string(c.Mark().line + 1),
               "key 'comparisons': '" + *name + "' is not one of the methods");
      }
      g.comparisons.push_back(gc);
    }
    section = "stage-cache";
    if (root["stage-cache"]) g.stage_cache = resolve(root["stage-cache"].as<std::string>(), dir);
  } catch (const YAML::Exception& e) {
    fail(where + ": line " + std::to_string(e.mark.line + 1), "key '" + section + "': " + e.msg);
  }
  if (g.targets.empty()) fail(where, "no targets");
  if (g.methods.empty()) fail(where, "no methods");
  if (g.before.empty() && g.stages.empty()) fail(where, "give 'before' (a model folder) or 'stages' that build one");
  if (g.watch && g.suites.empty()) fail(where, "watch: needs eval: suites to watch");
  if (g.comparisons.empty())
    for (size_t i = 1; i < g.methods.size(); ++i)
      g.comparisons.push_back({g.methods[i].name, g.methods[0].name, "equal steps"});
  return g;
}

Grid load_grid(const std::string& path) { return grid_from_yaml_text(read_file(path), path); }

// ------------------------------------------------------------------ running

namespace {

// Every suite, every target test and every perplexity text, into <dest>/eval/.
// What the grid's eval section sets for every evaluation of a run (final, Wise-FT sweep).
EvalOptions grid_eval_options(const Grid& g) {
  EvalOptions eo;
  eo.limit = g.eval_limit;
  if (g.eval_batch > 0) eo.batch_size = g.eval_batch;
  if (g.eval_max_new_tokens > 0) eo.max_new_tokens = g.eval_max_new_tokens;
  return eo;
}

void evaluate_into(const std::string& model_dir, const Grid& g, const std::string& dest) {
  auto tok = load_tokenizer(model_dir);
  auto model = load_llama(model_dir);
  make_dirs(join_path(dest, "eval"));
  EvalOptions eo = grid_eval_options(g);
  std::vector<std::pair<std::string, bool>> tasks;  // path, is a target test
  for (const auto& s : g.suites) tasks.emplace_back(s, false);
  for (const auto& t : g.targets)
    if (!t.test.empty()) tasks.emplace_back(t.test, true);
  for (const auto& [path, is_target] : tasks) {
    Task task = read_task(path);
    EvalOptions o = eo;
    if (is_target) o.template_name = g.eval_template;
    write_task_result(evaluate_task(model, *tok, task, o), join_path(dest, "eval"), {{"model", model_dir}});
  }
  for (const auto& path : g.perplexity) {
    auto p = rolling_perplexity(model, *tok, read_file(path), model->config().max_position_embeddings);
    json j = perplexity_to_json(fs::path(path).stem().string(), p);
    j["model"] = model_dir;
    write_file_atomic(join_path(dest, "eval/" + fs::path(path).stem().string() + ".json"), j.dump(2) + "\n");
  }
}

json measure_flatness(const std::string& model_dir, const std::string& before_dir, const Grid& g,
                      const GridTarget& target, uint64_t seed, const std::string& run_dir) {
  TrainOptions defaults;
  for (const auto& [k, v] : g.train) set_train_option(defaults, k, v);
  // The target data as the runs were trained on it: their template, length and batch size.
  LossDataSettings on_target;
  on_target.data = target.data;
  on_target.format = target.format;
  on_target.template_name = defaults.template_name;
  on_target.batches = g.flatness_batches;
  on_target.batch_size = defaults.batch_size;
  on_target.max_length = defaults.max_length;
  LossData d;
  load_loss_data(d, on_target, model_dir);
  LlamaForCausalLM& model = d.model;
  std::vector<FixedBatches> general;
  if (!g.perplexity.empty())
    general.push_back(fixed_batches(text_blocks(g.perplexity[0], *d.tokenizer, std::min<int64_t>(d.max_length, 128)),
                                    g.flatness_batches, defaults.batch_size, 0, g.perplexity[0]));
  NamedParams params = all_parameters(model);
  auto loss = fixed_batches_loss(model, d.batches);
  json out;
  out["loss_target"] = loss_value(loss);
  auto sam = sam_sharpness(params, loss, g.sam_rho);
  out["sam_sharpness"] = sam.value;
  auto lam = hessian_top_eigenvalue(params, loss, g.lambda_iters, 1e-3, seed);
  out["lambda_max"] = lam.value;
  out["lambda_max_iterations"] = lam.iterations;
  out["lambda_max_converged"] = lam.converged;
  const std::string landscape_dir = experiment_layout::landscape_dir(run_dir);
  make_dirs(landscape_dir);
  DirectionOptions dopt;
  dopt.seed = 1000 + seed;  // the same direction seed for every method with this seed
  NamedTensors dir = random_direction(params, dopt);
  auto s1 = surface_1d(params, dir, loss, -g.surface_range, g.surface_range, g.surface_points);
  out["surface_target"] = surface_1d_json(s1);
  write_file_atomic(join_path(landscape_dir, "surface_target.csv"), surface_1d_csv(s1));
  {
    // Interpolation from the before model (alpha 0) through the tuned one (alpha 1) and beyond.
    const NamedTensors from_before = direction_from_base(params, model, before_dir);
    auto si = interpolation_surface(params, from_before, loss, -0.5, 1.5, 9);
    out["interpolation_target"] = surface_1d_json(si);
    write_file_atomic(join_path(landscape_dir, "interpolation_target.csv"), surface_1d_csv(si));
    if (!general.empty()) {
      auto gl = fixed_batches_loss(model, general[0]);
      auto sg = interpolation_surface(params, from_before, gl, -0.5, 1.5, 9);
      out["interpolation_general"] = surface_1d_json(sg);
      auto sgen = surface_1d(params, dir, gl, -g.surface_range, g.surface_range, g.surface_points);
      out["surface_general"] = surface_1d_json(sgen);
    }
  }
  if (g.surface_2d) {
    DirectionOptions d2 = dopt;
    d2.seed += 7;
    auto s2 = surface_2d(params, dir, random_direction(params, d2), loss, g.surface_range, g.surface_points);
    out["surface_2d_target"] = surface_2d_json(s2);
    auto stats = surface_stats(s2);
    out["surface_curvature"] = stats.curvature;
    out["surface_average_gradient"] = stats.average_gradient;
    out["surface_mean_abs_gradient"] = stats.mean_abs_gradient;
    plot_contour(join_path(landscape_dir, "surface_2d_target.png"), "loss on target data around the tuned model",
                 s2.alphas, s2.betas, s2.losses);
  }
  return out;
}

std::string stage_dir(const Grid& g, const std::string& out, const GridStage& s) {
  return join_path(g.stage_cache.empty() ? experiment_layout::stages_dir(out) : g.stage_cache, s.name);
}

// A signal stops the run being trained with a checkpoint; rerunning the experiment resumes it
// (and skips what is done), so the hint is that, not --resume.
void train_in_experiment(const TrainOptions& o, const std::string& what,
                         const std::optional<WatchScore>& start_score = std::nullopt) {
  try {
    TrainHooks hooks = make_watch_hooks(o);
    hooks.start_score = start_score;
    train(o, hooks);
  } catch (const Interrupted& e) {
    throw Interrupted(e.signal, "interrupted by " + signal_name(e.signal) + " while training " + what + " (" + o.out +
                                    "); rerun the same command to continue: finished runs are kept, this one resumes "
                                    "from its checkpoint");
  }
}

}  // namespace

void run_experiment(const Grid& g, const ExperimentOptions& eo) {
  make_dirs(eo.out);
  const auto start = std::chrono::steady_clock::now();
  // The "before" model: given, or built stage by stage (each stage fine-tunes the previous).
  std::string before = g.before;
  for (const auto& st : g.stages) {
    std::string dir = stage_dir(g, eo.out, st);
    const RunFolder stage{dir};
    if (!file_exists(join_path(stage.final_dir(), "config.json"))) {
      log_info("stage " + st.name + ": training into " + dir);
      TrainOptions o;
      if (!before.empty()) o.model = before;
      for (const auto& [k, v] : st.train) set_train_option(o, k, v);
      if (!o.init_config.empty()) o.model.clear();
      o.out = dir;
      o.resume = true;
      if (o.save_every == 0) o.save_every = std::max<int64_t>(1, o.max_steps / 4);
      if (eo.threads > 0) o.threads = eo.threads;
      train_in_experiment(o, "stage " + st.name);
    }
    before = stage.final_dir();
  }
  const std::string base_dir = experiment_layout::base_dir(eo.out);
  if (!file_exists(experiment_layout::done_marker(base_dir))) {
    log_info("evaluating the before model " + before);
    evaluate_into(before, g, base_dir);
    write_file_atomic(experiment_layout::done_marker(base_dir), before + "\n");
  }
  const size_t total = g.targets.size() * g.methods.size() * g.seeds.size();
  size_t index = 0;
  Progress progress("study", static_cast<int64_t>(total), "run", 0.0);
  // Every run of a target starts from the before model, so its step-0 watch is the same: scored
  // by the first run, reused by the others (1.5-2 s a run on 2 cores). Keyed by what changes the
  // numbers: the target test and the precision.
  std::map<std::string, WatchScore> start_scores;
  double before_norm = 0;
  if (std::any_of(g.methods.begin(), g.methods.end(), [](const GridMethod& m) { return m.rho_reference_norm > 0; })) {
    before_norm = checkpoint_weight_norm(before);
    write_file_atomic(experiment_layout::weight_norm_file(eo.out),
                      json{{"norm", before_norm}, {"model", before}}.dump(2) + "\n");
  }
  for (const auto& target : g.targets)
    for (const auto& method : g.methods)
      for (uint64_t seed : g.seeds) {
        ++index;
        const std::string name = experiment_layout::run_name(target.name, method.name, seed);
        const std::string run_dir = experiment_layout::run_dir(eo.out, name);
        if (file_exists(experiment_layout::done_marker(run_dir))) {
          progress.update(static_cast<int64_t>(index), name + " (done before)");
          continue;
        }
        log_info("run " + std::to_string(index) + " of " + std::to_string(total) + ": " + name);
        auto t0 = std::chrono::steady_clock::now();
        TrainOptions o;
        for (const auto& [k, v] : g.train) set_train_option(o, k, v);
        for (const auto& [k, v] : method.train) set_train_option(o, k, v);
        if (method.rho_reference_norm > 0) {
          o.rho = method_rho(method, o.rho, before_norm);
          log_info(method.name + ": rho " + std::to_string(o.rho) + " (the method's rho scaled by ||before|| " +
                   std::to_string(before_norm) + " / " + std::to_string(method.rho_reference_norm) + ")");
        }
        o.model = before;
        o.data = target.data;
        o.format = target.format;
        o.seed = seed;
        o.out = run_dir;
        o.resume = true;
        if (o.save_every == 0) o.save_every = std::max<int64_t>(1, o.max_steps / 3);
        if (g.watch) {
          o.watch = g.suites;
          o.watch_target = target.test;
          o.watch_categories = g.categories;
          o.watch_template = g.eval_template;
          o.watch_every = g.watch_every;
          o.watch_limit = g.watch_limit >= 0 ? g.watch_limit : g.eval_limit;
          o.watch_batch_size = g.eval_batch;
          o.watch_max_new_tokens = g.eval_max_new_tokens;
        }
        if (eo.threads > 0) o.threads = eo.threads;
        const std::string start_key = target.name + (o.bf16 ? "|bf16" : "|fp32");
        std::optional<WatchScore> start_score;
        if (auto it = start_scores.find(start_key); it != start_scores.end()) start_score = it->second;
        train_in_experiment(o, "run " + name, start_score);
        if (g.watch && !start_score) {
          const auto rows = read_watch_csv(RunFolder{run_dir}.watch_csv_path(), 0);
          if (!rows.empty() && rows.front().step == 0) start_scores[start_key] = rows.front().score;
        }
        std::string model_dir = RunFolder{run_dir}.final_dir();
        if (method.wiseft_alpha >= 0) {
          const std::string merged = experiment_layout::wiseft_model_dir(run_dir);
          merge_checkpoints(before, model_dir, method.wiseft_alpha, false, merged);
          model_dir = merged;
        }
        evaluate_into(model_dir, g, run_dir);
        json flat = measure_flatness(model_dir, before, g, target, seed, run_dir);
        write_file_atomic(experiment_layout::flatness_file(run_dir), flat.dump(2) + "\n");
        if (!g.wiseft_sweep.empty() && method.wiseft_alpha < 0 && !target.test.empty()) {
          WiseFtSweepOptions so;
          so.base_dir = before;
          so.tuned_dir = model_dir;
          so.alphas = g.wiseft_sweep;
          so.general_tasks = g.suites;
          so.target_task = target.test;
          if (!g.categories.empty()) so.categories = load_categories(g.categories);
          so.eval = grid_eval_options(g);
          so.target_template = g.eval_template;
          so.out_dir = experiment_layout::wiseft_sweep_dir(run_dir);
          run_wiseft_sweep(so);
        }
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        json done = {
            {"target", target.name}, {"method", method.name}, {"seed", seed}, {"seconds", secs}, {"model", model_dir}};
        write_file_atomic(experiment_layout::done_marker(run_dir), done.dump(2) + "\n");
        progress.update(static_cast<int64_t>(index), name);
      }
  progress.finish();
  json timing = {
      {"seconds_this_invocation", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
  write_file_atomic(join_path(eo.out, "timing.json"), timing.dump(2) + "\n");
  write_report(g, eo.out);
}

}  // namespace flatune
