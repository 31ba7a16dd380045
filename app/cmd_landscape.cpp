// `flatune landscape`: loss along random directions (1-D, 2-D) or along base -> tuned, with CSV,
// JSON (every setting needed to redo it) and figures; `flatune sharpness`: the sharpness
// metrics on fixed batches; `flatune correlate`: a sharpness metric against forgetting across
// runs (Pearson, Spearman, scatter plot); `flatune bench landscape`: how long a 2-D surface and
// a lambda-max estimate take on a fresh model. The measurements are landscape/measure.h, the
// figures and correlations report/; this file has the flags and the printed lines.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/landscape/directions.h"
#include "flatune/landscape/fixed_batches.h"
#include "flatune/landscape/measure.h"
#include "flatune/report/correlate.h"
#include "flatune/report/landscape_figures.h"
#include "flatune/report/run_table.h"
#include "flatune/train/distributed.h"

namespace flatune::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void add_data_options(CLI::App* sub, LossDataSettings& a, bool model_required) {
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
  add_device_option(sub, a.device);
}

// The processes of `flatune launch` (one process without it); `dist` must outlive the result.
MeasuringProcesses measuring_processes(const Distributed& dist) {
  return {dist.rank, dist.world_size, [&dist](std::vector<torch::Tensor>& ts) { dist.allreduce_sum(ts); }};
}

// "a:b" as two numbers; their order is the measurement's to check.
std::pair<double, double> parse_range(const std::string& s) {
  auto colon = s.find(':');
  if (colon == std::string::npos) fail("--range", "expected A:B, got '" + s + "'");
  try {
    size_t ua = 0, ub = 0;
    double a = std::stod(s.substr(0, colon), &ua), b = std::stod(s.substr(colon + 1), &ub);
    if (ua != colon || ub != s.size() - colon - 1) throw std::invalid_argument(s);
    return {a, b};
  } catch (const std::logic_error&) { fail("--range", "expected two numbers A:B, got '" + s + "'"); }
}

// ------------------------------------------------------------------ landscape

struct LandscapeArgs {
  LandscapeSettings settings;
  std::string range;
};

void run_landscape(const LandscapeArgs& a) {
  LandscapeSettings s = a.settings;
  if (!a.range.empty()) s.range = parse_range(a.range);
  check_landscape_settings(s);  // before the processes meet
  Distributed dist = init_distributed(use_device_option(s.data.device));
  const LandscapeResult r = measure_landscape(s, measuring_processes(dist));
  if (!dist.is_main()) return;
  write_landscape_figures(r, s.out);
  std::printf("%s surface over [%g, %g], %d points%s, loss at the model %.6f, %.1f s -> %s\n", r.mode.c_str(), r.from,
              r.to, r.points, r.mode == "2d" ? " per axis" : "", r.loss_at_model, r.seconds, s.out.c_str());
}

// ------------------------------------------------------------------ sharpness

void run_sharpness(const SharpnessSettings& s) {
  check_sharpness_settings(s);  // before the processes meet
  Distributed dist = init_distributed(use_device_option(s.data.device));
  SharpnessObserver print;
  print.loss_measured = [](const LossData& loaded, double loss) {
    std::printf("loss on %lld examples (%lld tokens): %.6f\n", static_cast<long long>(loaded.batches.examples),
                static_cast<long long>(loaded.batches.label_tokens), loss);
    std::printf("%-12s %14s %10s %10s %14s %9s  %s\n", "metric", "value", "iters", "converged", "detail", "seconds",
                "what");
  };
  print.metric_measured = [](const SharpnessMeasured& m) {
    const std::string detail = m.detail_name.empty() ? "" : m.detail_name + " " + std::to_string(m.value.detail);
    std::printf("%-12s %14.6g %10lld %10s %14s %9.1f  %s\n", m.metric.c_str(), m.value.value,
                static_cast<long long>(m.value.iterations), m.value.converged ? "yes" : "no", detail.c_str(), m.seconds,
                m.what.c_str());
  };
  measure_sharpness(s, measuring_processes(dist), print);
}

// ------------------------------------------------------------------ correlate

struct CorrelateArgs {
  std::string source, x = "lambda_max", y = "forgetting", out;
};

void run_correlate(const CorrelateArgs& a) {
  const RunCorrelation c = correlate_runs(read_runs(a.source), a.x, a.y, a.source);
  std::printf("%s against %s over %zu runs%s\n", a.y.c_str(), a.x.c_str(), c.xs.size(),
              c.left_out ? (" (" + std::to_string(c.left_out) + " without both values left out)").c_str() : "");
  std::printf("%-10s %10s %12s\n", "", "r", "p");
  std::printf("%-10s %10.4f %12.4g\n", "Pearson", c.pearson.statistic, c.pearson.p_value);
  std::printf("%-10s %10.4f %12.4g\n", "Spearman", c.spearman.statistic, c.spearman.p_value);
  if (!a.out.empty()) write_correlation(c, a.out);
}

}  // namespace

void add_landscape_command(CLI::App& app) {
  auto a = std::make_shared<LandscapeArgs>();
  CLI::App* sub =
      app.add_subcommand("landscape",
                         "loss surface around a model: 1-D (--points N --range A:B) or 2-D (--grid N) along seeded "
                         "random directions, or the "
                         "interpolation --from BASE --to TUNED (alpha 0 = base, 1 = tuned, default range -0.5:1.5); "
                         "writes CSV, landscape.json "
                         "(every setting), PNG and SVG, and the drawn directions as directions.safetensors");
  add_data_options(sub, a->settings.data, false);
  sub->add_option("--out", a->settings.out, "output folder")->required();
  sub->add_option("--points", a->settings.points, "points along a 1-D direction or the interpolation");
  sub->add_option("--range", a->range, "A:B, the coefficients' range (default -1:1; interpolation -0.5:1.5)");
  sub->add_option("--grid", a->settings.grid, "N: a 2-D surface on an N x N grid over the range on both axes");
  sub->add_option("--from", a->settings.from, "interpolation: the base model folder");
  sub->add_option("--to", a->settings.to, "interpolation: the tuned model folder (default --model)");
  sub->add_option("--normalize", a->settings.normalize,
                  "filter (Li et al. 2018: each output row scaled to the weight row's norm) or none");
  sub->add_flag("--ignore-1d", a->settings.ignore_1d, "zero the direction on 1-D parameters (norms, biases)");
  sub->add_flag("--lora-only", a->settings.lora_only, "directions over the LoRA adapters only (needs --adapter)");
  sub->add_option("--seed", a->settings.seed, "direction seed (the second 2-D direction uses seed + 1)");
  sub->add_option("--directions", a->settings.directions,
                  "reuse directions a previous run saved (directions.safetensors)");
  sub->callback([a] { run_landscape(*a); });
}

void add_sharpness_command(CLI::App& app) {
  auto a = std::make_shared<SharpnessSettings>();
  CLI::App* sub = app.add_subcommand(
      "sharpness",
      "sharpness on fixed batches: sam (L(w + rho g/|g|) - L(w)), eps (Keskar et al. epsilon-sharpness, "
      "approximated by --eps-steps projected sign-ascent steps in the box |d_i| <= eps(|w_i|+1): a lower bound of "
      "the box maximum), avg (average increase under Gaussian noise sigma|w|, --samples draws), lambda_max (power "
      "iteration on Hessian-vector products, --iters), trace (Hutchinson, --samples vectors); prints a table, --out "
      "writes sharpness.json");
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
  CLI::App* sub = app.add_subcommand("correlate",
                                     "Pearson and Spearman (two-sided p-values) of a sharpness metric against "
                                     "forgetting across runs: an experiment folder "
                                     "(runs/*/flatness.json, sharpness.json, forgetting.json) or a CSV with a header "
                                     "row (column run|name labels rows)");
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
  CLI::App* sub =
      bench.add_subcommand("landscape", "seconds for an N x N loss surface and a lambda-max estimate on a fresh model");
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
    std::printf(
        "model %.1fM parameters (hidden %lld, %lld layers, MLP %lld, vocab %lld), batch %lld x %lld tokens, %d "
        "threads\n",
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
    std::printf("%dx%d surface                %8.1f s  (%.2f s a point)\n", a->grid, a->grid, surface_s,
                surface_s / (a->grid * a->grid));
    std::printf("lambda_max, %lld iterations   %8.1f s  (%.2f s a Hessian-vector product; lambda %.4g)\n",
                static_cast<long long>(lam.iterations), lambda_s, lambda_s / std::max<int64_t>(1, lam.iterations),
                lam.value);
    if (!a->json_out.empty())
      write_file_atomic(a->json_out, json({{"parameters", c.num_parameters()},
                                           {"threads", at::get_num_threads()},
                                           {"batch", a->batch},
                                           {"seq", a->seq},
                                           {"grid", a->grid},
                                           {"surface_seconds", surface_s},
                                           {"loss_seconds", one_forward},
                                           {"lambda_iterations", lam.iterations},
                                           {"lambda_seconds", lambda_s}})
                                             .dump(2) +
                                         "\n");
  });
}

}  // namespace flatune::cli
