// Anti-forgetting (retain/): EWC and L2-SP penalty gradients against central finite differences
// in float64; the diagonal Fisher against a per-example brute force; Wise-FT endpoints, midpoint
// and LoRA scaling; replay counts and order across a resume; SAM + EWC + LoRA + replay resumed
// bit for bit; bad input. The Wise-FT sweep (report/) is tested in test_retain_sweep.cpp.
#include <gtest/gtest.h>

#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/data/batching.h"
#include "flatune/data/dataset.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/llama.h"
#include "flatune/model/lora.h"
#include "flatune/optim/optimizer.h"
#include "flatune/retain/fisher.h"
#include "flatune/retain/merge.h"
#include "flatune/retain/penalty.h"
#include "flatune/retain/replay.h"
#include "flatune/text/tokenizer.h"
#include "flatune/train/trainer.h"
#include "test_util.h"
#include "train_test_util.h"

using namespace flatune;
using flatune::testing::adamw_state;
using flatune::testing::run_flatune;
using flatune::testing::same_file;
using flatune::testing::TempDir;
using flatune::testing::testdata;
using flatune::testing::write_sums_alpaca;

namespace {

// One layer, a few hundred parameters: every coordinate can be differenced.
LlamaForCausalLM tiny_double_model() {
  LlamaConfig c;
  c.vocab_size = 16;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  c.max_position_embeddings = 16;
  LlamaForCausalLM model(c);
  model->init_weights(0);
  model->to(torch::kDouble);
  return model;
}

// A random positive "Fisher" for every weight of the model, as a file.
std::string write_random_fisher(LlamaForCausalLM& model, const std::string& path) {
  torch::manual_seed(11);
  NamedTensors f;
  for (const auto& p : model->named_parameters(true))
    f.emplace_back(p.key(), torch::rand(p.value().sizes(), torch::kFloat) * 1.9f + 0.1f);
  write_safetensors(path, f);
  return path;
}

void add_noise(const std::vector<torch::Tensor>& ts, double scale) {
  torch::NoGradGuard ng;
  for (const auto& t : ts) t.add_(torch::randn_like(t) * scale);
}

// Central differences of penalty.value over every coordinate of `params` against autograd.
void expect_gradients_match_differences(const RetainPenalty& penalty, LlamaForCausalLM& model,
                                        const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  std::vector<torch::Tensor> ts;
  for (const auto& [n, t] : params) ts.push_back(t);
  auto grads = torch::autograd::grad({penalty.value(model)}, ts, {}, false, false, /*allow_unused=*/true);
  const double h = 1e-4;
  int64_t checked = 0;
  for (size_t k = 0; k < ts.size(); ++k) {
    auto flat = ts[k].detach().view(-1);
    auto g = grads[k].defined() ? grads[k].reshape(-1) : torch::zeros_like(flat);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      torch::NoGradGuard ng;
      double x = flat[i].item<double>();
      flat[i] = x + h;
      double up = penalty.value(model).item<double>();
      flat[i] = x - h;
      double down = penalty.value(model).item<double>();
      flat[i] = x;
      double fd = (up - down) / (2 * h), ad = g[i].item<double>();
      ASSERT_NEAR(ad, fd, 1e-9 + 1e-8 * std::abs(fd)) << params[k].first << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

std::vector<Example> random_examples(int n, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<Example> out;
  for (int k = 0; k < n; ++k) {
    int64_t len = 8 + k;
    auto ids = torch::randint(3, vocab, {len}, torch::kLong);
    Example ex;
    for (int64_t i = 0; i < len; ++i) {
      ex.ids.push_back(ids[i].item<int64_t>());
      ex.labels.push_back(i < 3 ? -100 : ex.ids.back());  // a 3-token prompt without loss
    }
    out.push_back(ex);
  }
  return out;
}

// log p(labels | ids) of one example, summed over its labelled tokens, written out by hand:
// position t predicts token t+1.
torch::Tensor example_loglik(LlamaForCausalLM& model, const Example& ex) {
  ForwardInput in;
  in.input_ids = torch::tensor(ex.ids, torch::kLong).unsqueeze(0);
  auto logp = model->forward(in)[0].log_softmax(-1);
  torch::Tensor ll = torch::zeros({}, logp.options());
  for (size_t t = 0; t + 1 < ex.ids.size(); ++t)
    if (ex.labels[t + 1] != -100) ll = ll + logp[static_cast<int64_t>(t)][ex.labels[t + 1]];
  return ll;
}

std::map<std::string, torch::Tensor> by_name(const NamedTensors& ts) {
  std::map<std::string, torch::Tensor> m;
  for (const auto& [n, t] : ts) m[n] = t;
  return m;
}

// Alpaca records whose instruction/output are the same for every row, so every row has the
// same token count.
std::string write_repeated_alpaca(const std::string& path, int n, const std::string& instruction,
                                  const std::string& output) {
  json rows = json::array();
  for (int i = 0; i < n; ++i) rows.push_back({{"instruction", instruction}, {"input", ""}, {"output", output}});
  write_file_atomic(path, rows.dump());
  return path;
}

std::vector<json> metrics_lines(const std::string& run) {
  std::vector<json> out;
  for_each_jsonl(run + "/metrics.jsonl", [&](const json& j, size_t) { out.push_back(j); });
  return out;
}

void expect_one_line_error(const flatune::testing::CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.rfind("flatune: ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

}  // namespace

// ------------------------------------------------------------------ penalties

TEST(Penalty, FullFineTuningGradientsMatchFiniteDifferences) {
  TempDir dir;
  for (auto [ewc, l2] : std::vector<std::pair<double, double>>{{0.7, 0}, {0, 0.3}, {0.7, 0.3}}) {
    auto model = tiny_double_model();
    std::string fisher = write_random_fisher(model, dir / "fisher.safetensors");
    RetainPenalty penalty = make_retain_penalty(model, ewc > 0 ? fisher : "", ewc, l2, false);
    ASSERT_TRUE(penalty.active());
    EXPECT_EQ(penalty.value(model).item<double>(), 0.0);  // at the base
    std::vector<std::pair<std::string, torch::Tensor>> params;
    std::vector<torch::Tensor> ts;
    for (const auto& p : model->named_parameters(true)) {
      params.emplace_back(p.key(), p.value());
      ts.push_back(p.value());
    }
    torch::manual_seed(5);
    auto base = by_name(model->weights());
    for (auto& [n, t] : base) t = t.clone();
    add_noise(ts, 0.1);
    // The value by hand: lambda_e/2 sum F d^2 + lambda_l/2 sum d^2.
    auto f = by_name(read_safetensors(fisher));
    double expected = 0;
    for (const auto& [n, t] : params) {
      auto d2 = (t.detach() - base.at(n)).pow(2);
      expected +=
          0.5 * l2 * d2.sum().item<double>() + 0.5 * ewc * (f.at(n).to(torch::kDouble) * d2).sum().item<double>();
    }
    EXPECT_NEAR(penalty.value(model).item<double>(), expected, 1e-12 * expected);
    expect_gradients_match_differences(penalty, model, params);
  }
}

TEST(Penalty, LoraEffectiveWeightAndAdapterGradientsMatchFiniteDifferences) {
  TempDir dir;
  for (bool on_adapters : {false, true}) {
    auto model = tiny_double_model();
    std::string fisher = write_random_fisher(model, dir / "fisher.safetensors");
    RetainPenalty penalty =
        make_retain_penalty(model, on_adapters ? "" : fisher, on_adapters ? 0 : 0.7, 0.3, on_adapters);
    LoraOptions lo;
    lo.rank = 2;
    lo.alpha = 4;
    lo.targets = {"q_proj", "v_proj", "down_proj"};
    model->add_lora(lo);
    bind_lora_terms(penalty, model);
    auto params = model->trainable_parameters();
    ASSERT_EQ(params.size(), 6u);
    std::vector<torch::Tensor> ts;
    for (auto& [n, t] : params) ts.push_back(t);
    torch::manual_seed(6);
    add_noise(ts, 0.3);  // B leaves zero, A leaves its initial value
    if (!on_adapters) {
      // theta - theta_base = s*B*A: the value by hand.
      auto f = by_name(read_safetensors(fisher));
      double expected = 0;
      for (const auto& m : model->named_modules()) {
        auto* proj = dynamic_cast<ProjectionImpl*>(m.value().get());
        if (!proj || !proj->has_lora()) continue;
        auto d2 = (torch::matmul(proj->lora_B, proj->lora_A) * 2.0).detach().pow(2);
        expected += 0.15 * d2.sum().item<double>() +
                    0.35 * (f.at(m.key() + ".weight").to(torch::kDouble) * d2).sum().item<double>();
      }
      EXPECT_NEAR(penalty.value(model).item<double>(), expected, 1e-12 * expected);
    }
    expect_gradients_match_differences(penalty, model, params);
  }
}

// ------------------------------------------------------------------ Fisher

TEST(Fisher, EmpiricalEqualsPerExampleBruteForce) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  auto model = load_llama(testdata("models/llama-gqa"), torch::kDouble);
  auto data = random_examples(4, model->config().vocab_size, 21);
  FisherOptions fo;
  fo.examples = 3;  // the fourth example must not count
  NamedTensors fisher = compute_fisher(model, data, fo);

  // Brute force: one autograd::grad per example of its hand-written log-likelihood.
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  for (const auto& p : model->named_parameters(true)) {
    names.push_back(p.key());
    params.push_back(p.value());
    p.value().set_requires_grad(true);
  }
  std::vector<torch::Tensor> acc;
  for (auto& p : params) acc.push_back(torch::zeros_like(p));
  for (int n = 0; n < 3; ++n) {
    auto g = torch::autograd::grad({example_loglik(model, data[n])}, params, {}, false, false, true);
    for (size_t k = 0; k < params.size(); ++k)
      if (g[k].defined()) acc[k] += g[k].pow(2);
  }
  ASSERT_EQ(fisher.size(), names.size());
  for (size_t k = 0; k < names.size(); ++k) {
    EXPECT_EQ(fisher[k].first, names[k]);
    auto want = (acc[k] / 3.0).to(torch::kFloat);  // stored as float32
    ASSERT_TRUE(fisher[k].second.sizes().equals(want.sizes())) << names[k];
    EXPECT_TRUE(torch::allclose(fisher[k].second, want, 1e-5, 1e-12)) << names[k];
  }
  EXPECT_GT(by_name(fisher).at("lm_head.weight").sum().item<double>(), 0);

  // A few coordinates independently of autograd: central differences of each example's
  // log-likelihood, squared and averaged.
  auto f = by_name(fisher);
  auto pm = model->named_parameters(true);
  const int64_t token = data[0].ids[5];
  std::vector<std::pair<std::string, int64_t>> coords = {{"model.embed_tokens.weight", token * 64 + 5},
                                                         {"model.layers.1.self_attn.q_proj.weight", 7},
                                                         {"model.layers.2.mlp.down_proj.weight", 100},
                                                         {"lm_head.weight", token * 64 + 3}};
  for (const auto& [name, idx] : coords) {
    auto flat = pm[name].detach().view(-1);
    const double h = 1e-5, x = flat[idx].item<double>();
    double sum = 0;
    for (int n = 0; n < 3; ++n) {
      torch::NoGradGuard ng;
      flat[idx] = x + h;
      double up = example_loglik(model, data[n]).item<double>();
      flat[idx] = x - h;
      double down = example_loglik(model, data[n]).item<double>();
      flat[idx] = x;
      sum += std::pow((up - down) / (2 * h), 2);
    }
    double want = sum / 3, got = f.at(name).view(-1)[idx].item<double>();
    EXPECT_GT(want, 0) << name;
    EXPECT_NEAR(got, want, 1e-4 * want + 1e-12) << name;
  }
  // compute_fisher leaves no gradients behind.
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Fisher, TrueFisherIsSeededAndShapedLikeTheModel) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  auto model = load_llama(testdata("models/llama-gqa"));
  auto data = random_examples(3, model->config().vocab_size, 22);
  FisherOptions fo;
  fo.kind = "true";
  fo.seed = 5;
  NamedTensors a = compute_fisher(model, data, fo), b = compute_fisher(model, data, fo);
  fo.seed = 6;
  NamedTensors c = compute_fisher(model, data, fo);
  NamedTensors emp = compute_fisher(model, data, FisherOptions{});
  auto weights = model->weights();
  ASSERT_EQ(a.size(), weights.size());
  bool seed_matters = false, differs_from_empirical = false;
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].first, weights[k].first);
    EXPECT_TRUE(a[k].second.sizes().equals(weights[k].second.sizes())) << a[k].first;
    EXPECT_TRUE(torch::equal(a[k].second, b[k].second)) << a[k].first;
    EXPECT_TRUE(torch::isfinite(a[k].second).all().item<bool>());
    EXPECT_GE(a[k].second.min().item<double>(), 0.0);
    seed_matters |= !torch::equal(a[k].second, c[k].second);
    differs_from_empirical |= !torch::equal(a[k].second, emp[k].second);
  }
  EXPECT_TRUE(seed_matters);
  EXPECT_TRUE(differs_from_empirical);
  try {
    compute_fisher(model, data, FisherOptions{"magic", 1, 0});
    FAIL() << "no error";
  } catch (const Error& e) { EXPECT_EQ(e.where(), "--kind"); }
}

// ------------------------------------------------------------------ Wise-FT

TEST(WiseFt, EndpointsAreBitwiseAndTheMidpointIsExact) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string base_dir = testdata("models/llama-gqa");
  NamedTensors base = load_checkpoint_weights(base_dir), tuned;
  torch::manual_seed(7);
  for (const auto& [n, t] : base) tuned.emplace_back(n, t + torch::randn_like(t) * 0.05);
  save_checkpoint(dir / "tuned", read_json_file(base_dir + "/config.json"), tuned, SaveOptions{}, base_dir);
  for (double alpha : {0.0, 0.5, 1.0}) {
    const std::string out = dir / ("merged-" + std::to_string(alpha));
    merge_checkpoints(base_dir, dir / "tuned", alpha, false, out);
    NamedTensors merged = load_checkpoint_weights(out);
    ASSERT_EQ(merged.size(), base.size());
    auto m = by_name(merged), t = by_name(tuned);
    for (const auto& [n, b] : base) {
      torch::Tensor want = alpha == 0   ? b
                           : alpha == 1 ? t.at(n)
                                        : ((b.to(torch::kDouble) + t.at(n).to(torch::kDouble)) / 2).to(torch::kFloat);
      EXPECT_TRUE(torch::equal(m.at(n), want)) << n << " alpha " << alpha;
    }
    auto model = load_llama(out);  // a complete folder
  }
  // Beyond [0, 1] only when asked.
  auto far = interpolate_weights(base, tuned, 1.5, true, "x");
  EXPECT_TRUE(torch::allclose(far[0].second, base[0].second * -0.5 + tuned[0].second * 1.5, 0, 1e-7));
}

TEST(WiseFt, LoraMergeScalesTheAdapterByAlpha) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string base_dir = testdata("models/llama-gqa");
  auto model = load_llama(base_dir);
  LoraOptions lo;
  lo.rank = 4;
  lo.alpha = 8;
  lo.targets = {"q_proj", "v_proj", "down_proj"};
  model->add_lora(lo);
  torch::manual_seed(8);
  std::vector<torch::Tensor> adapters;
  for (auto& [n, t] : model->trainable_parameters()) adapters.push_back(t);
  add_noise(adapters, 0.1);
  save_lora_adapter(model, dir / "adapter", base_dir);
  auto base = load_checkpoint_weights(base_dir);
  // s*B*A per adapted weight, in float64, computed here.
  std::map<std::string, torch::Tensor> delta;
  for (const auto& m : model->named_modules())
    if (auto* p = dynamic_cast<ProjectionImpl*>(m.value().get()); p && p->has_lora())
      delta[m.key() + ".weight"] =
          torch::matmul(p->lora_B.detach().to(torch::kDouble), p->lora_A.detach().to(torch::kDouble)) * 2.0;
  ASSERT_EQ(delta.size(), 9u);
  for (double alpha : {0.0, 0.3, 1.0}) {
    const std::string out = dir / ("merged-" + std::to_string(alpha));
    merge_checkpoints(base_dir, dir / "adapter", alpha, false, out);
    auto merged = by_name(load_checkpoint_weights(out));
    for (const auto& [n, w] : base) {
      auto it = delta.find(n);
      if (it == delta.end() || alpha == 0) {
        EXPECT_TRUE(torch::equal(merged.at(n), w)) << n << " alpha " << alpha;  // untouched, bit for bit
      } else {
        auto want = w.to(torch::kDouble) + it->second * alpha;
        EXPECT_LT((merged.at(n).to(torch::kDouble) - want).abs().max().item<double>(), 2e-7) << n << " alpha " << alpha;
        EXPECT_GT((merged.at(n) - w).abs().max().item<double>(), 1e-4) << n;  // the adapter did something
      }
    }
    if (alpha == 1) {
      // alpha = 1 is the merged LoRA model as training exports it.
      for (const auto& [n, w] : model->weights(/*merge_lora=*/true)) EXPECT_TRUE(torch::equal(merged.at(n), w)) << n;
    }
  }
}

// ------------------------------------------------------------------ replay

TEST(Replay, MixRowsAndErrors) {
  auto three = [](const std::string&) { return std::vector<Example>(3); };
  ReplayMix mix = make_replay("general.json", 0.25, 8, three);
  EXPECT_EQ(mix.per_batch, 2);
  EXPECT_EQ(mix.examples.size(), 3u);
  EXPECT_EQ(make_replay("", 0.25, 8, three).per_batch, 0);  // no file: no replay
  for (auto [ratio, batch, where] : std::vector<std::tuple<double, int64_t, std::string>>{
           {0.3, 8, "--replay-ratio"}, {0.5, 1, "--replay-ratio"}, {1.0, 8, "--replay-ratio"}}) {
    try {
      make_replay("general.json", ratio, batch, three);
      FAIL() << ratio << " x " << batch;
    } catch (const Error& e) { EXPECT_EQ(e.where(), where) << e.what(); }
  }
  try {
    make_replay("/data/general.json", 0.25, 8, [](const std::string&) { return std::vector<Example>{}; });
    FAIL() << "no error";
  } catch (const Error& e) { EXPECT_EQ(e.where(), "/data/general.json"); }
}

TEST(Replay, OrderContinuesAcrossARestore) {
  DataOrder straight(7, 99);
  std::vector<size_t> all;
  for (int i = 0; i < 6; ++i)
    for (size_t k : straight.take(3)) all.push_back(k);  // 18 draws: across two epoch boundaries
  DataOrder first(7, 99);
  std::vector<size_t> resumed;
  for (int i = 0; i < 3; ++i)
    for (size_t k : first.take(3)) resumed.push_back(k);
  DataOrder second(7, 99);
  second.restore(first.epoch(), first.position());
  for (int i = 0; i < 3; ++i)
    for (size_t k : second.take(3)) resumed.push_back(k);
  EXPECT_EQ(all, resumed);
  // Each epoch is a permutation.
  std::vector<size_t> epoch0(all.begin(), all.begin() + 7);
  std::sort(epoch0.begin(), epoch0.end());
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(epoch0[i], i);
}

// Over one epoch of the target data, the rows the trainer fed are exactly ratio x all rows
// replayed and every target example once. Seen through the token count: every target row has
// Lt tokens and every replayed row Lr != Lt, so the logged total fixes both counts.
TEST(Replay, AnEpochReplaysExactlyTheRatio) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string target = write_repeated_alpaca(dir / "target.json", 24, "say yes", "yes");
  const std::string general =
      write_repeated_alpaca(dir / "general.json", 5, "tell me about the sea", "it is wide and deep");
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  const std::string tpl = resolve_template("auto", *tok);
  auto length = [&](const std::string& path) {
    TokenizeStats st;
    auto ex = tokenize_conversations(read_conversations(path, "auto"), *tok, {tpl, 128, false}, &st);
    return static_cast<int64_t>(ex.at(0).ids.size());
  };
  const int64_t lt = length(target), lr = length(general);
  ASSERT_NE(lt, lr);
  for (auto [ratio, batch, accum] : std::vector<std::tuple<double, int64_t, int64_t>>{{0.25, 4, 2}, {0.5, 4, 1}}) {
    TrainOptions o;
    o.model = testdata("models/llama-gqa");
    o.data = target;
    o.replay = general;
    o.replay_ratio = ratio;
    o.batch_size = batch;
    o.grad_accum = accum;
    o.epochs = 1;
    o.lr = 1e-3;
    o.threads = 1;
    o.out = dir / ("run-" + std::to_string(ratio));
    TrainResult r = train(o);
    const int64_t target_rows_per_step = static_cast<int64_t>(batch * (1 - ratio)) * accum;
    EXPECT_EQ(r.steps, 24 / target_rows_per_step);
    auto lines = metrics_lines(o.out);
    ASSERT_EQ(static_cast<int64_t>(lines.size()), r.steps);
    for (const auto& l : lines) EXPECT_TRUE(l.contains("replay_loss"));
    const int64_t tokens = static_cast<int64_t>(lines.back().at("tokens").get<double>());
    const int64_t rows = r.steps * batch * accum;
    ASSERT_EQ((tokens - rows * lt) % (lr - lt), 0) << tokens;
    const int64_t replayed = (tokens - rows * lt) / (lr - lt);
    EXPECT_EQ(replayed, static_cast<int64_t>(ratio * rows)) << ratio;
    EXPECT_EQ(rows - replayed, 24) << ratio;  // the epoch: every target example once
  }
}

// ------------------------------------------------------------------ composition and resume

// SAM + EWC + L2 + LoRA (penalties on the effective weights) + replay, 12 steps straight vs 6,
// a restart from the step-6 checkpoint and 6 more: adapters, optimizer state, SAM state, the
// logged losses (target and replay: the replay order) and the final model all bit for bit.
TEST(Composition, SamEwcLoraReplayResumesBitIdentically) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string model_dir = testdata("models/llama-gqa");
  const std::string general = write_sums_alpaca(dir / "general.json", 10);
  {
    auto model = load_llama(model_dir);
    auto tok = load_tokenizer(model_dir);
    TokenizeStats st;
    auto ex = tokenize_conversations(read_conversations(general, "auto"), *tok,
                                     {resolve_template("auto", *tok), 128, false}, &st);
    write_safetensors(dir / "fisher.safetensors", compute_fisher(model, ex, FisherOptions{}));
  }
  TrainOptions o;
  o.model = model_dir;
  o.data = write_sums_alpaca(dir / "target.json", 48);
  o.out = dir / "straight";
  o.batch_size = 4;
  o.max_steps = 12;
  o.lr = 2e-3;
  o.seed = 3;
  o.threads = 1;
  o.sam = "sam";
  o.rho = 0.1;
  o.lora_rank = 4;
  o.lora_targets = {"q_proj", "v_proj", "down_proj"};
  o.ewc = dir / "fisher.safetensors";
  o.ewc_lambda = 100;
  o.l2_base = 0.5;
  o.replay = general;
  o.replay_ratio = 0.25;
  o.save_every = 6;
  o.keep_last = 0;
  EXPECT_EQ(train(o).steps, 12);
  std::filesystem::create_directories(dir / "resumed/checkpoints");
  std::filesystem::copy(dir / "straight/checkpoints/step-6", dir / "resumed/checkpoints/step-6",
                        std::filesystem::copy_options::recursive);
  TrainOptions r = o;
  r.out = dir / "resumed";
  r.resume = true;
  EXPECT_EQ(train(r).steps, 12);
  const std::string a = dir / "straight/checkpoints/step-12", b = dir / "resumed/checkpoints/step-12";
  EXPECT_TRUE(same_file(a + "/adapter_model.safetensors", b + "/adapter_model.safetensors"));
  EXPECT_TRUE(same_file(a + "/trainer_tensors.safetensors", b + "/trainer_tensors.safetensors"));
  auto sa = adamw_state(a, o), sb = adamw_state(b, o);
  ASSERT_EQ(sa.size(), sb.size());
  ASSERT_EQ(sa.size(), 9u * 2 * 3);  // 9 projections x (A, B) x (step, m, v)
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i], sb[i])) << "optimizer tensor " << i;
  EXPECT_TRUE(same_file(dir / "straight/final/model.safetensors", dir / "resumed/final/model.safetensors"));
  auto la = metrics_lines(dir / "straight"), lb = metrics_lines(dir / "resumed");
  ASSERT_EQ(la.size(), 12u);
  ASSERT_EQ(lb.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(la[6 + i].at("step"), lb[i].at("step"));
    EXPECT_EQ(la[6 + i].at("loss").get<double>(), lb[i].at("loss").get<double>()) << i;
    EXPECT_EQ(la[6 + i].at("replay_loss").get<double>(), lb[i].at("replay_loss").get<double>()) << i;
    EXPECT_EQ(la[6 + i].at("perturbed_loss").get<double>(), lb[i].at("perturbed_loss").get<double>()) << i;
  }
  // The penalties took part: the logged objective is the data loss plus the penalty, so from
  // the second step on (the adapters have moved) it differs from a run without them.
  TrainOptions plain = o;
  plain.ewc.clear();
  plain.ewc_lambda = 0;
  plain.l2_base = 0;
  plain.max_steps = 2;
  plain.save_every = 0;
  plain.out = dir / "plain";
  train(plain);
  auto lp = metrics_lines(dir / "plain");
  EXPECT_EQ(lp[0].at("loss").get<double>(), la[0].at("loss").get<double>());  // B = 0: no penalty yet
  EXPECT_NE(lp[1].at("loss").get<double>(), la[1].at("loss").get<double>());
}

// ------------------------------------------------------------------ bad input

TEST(BadInput, FisherFromAnotherArchitectureNamesTheFile) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string fisher = dir / "mha-fisher.safetensors";
  {
    auto mha = load_llama(testdata("models/llama-mha"));
    write_safetensors(fisher, compute_fisher(mha, random_examples(1, 320, 3), FisherOptions{}));
  }
  auto gqa = load_llama(testdata("models/llama-gqa"));
  try {
    make_retain_penalty(gqa, fisher, 1.0, 0, false);
    FAIL() << "no error";
  } catch (const Error& e) { EXPECT_EQ(e.where(), fisher) << e.what(); }
  // And through the CLI: one line, exit code 2.
  auto r = run_flatune("train --model '" + testdata("models/llama-gqa") + "' --data '" +
                       write_sums_alpaca(dir / "d.json", 8) + "' --ewc '" + fisher +
                       "' --ewc-lambda 1 --max-steps 1 --out '" + (dir / "run") + "'");
  expect_one_line_error(r, "flatune: " + fisher + ": ");
  // A Fisher file without a strength would silently train without EWC.
  try {
    make_retain_penalty(gqa, fisher, 0.0, 0, false);
    FAIL() << "no error";
  } catch (const Error& e) { EXPECT_EQ(e.where(), "--ewc-lambda") << e.what(); }
}

TEST(BadInput, AlphaOutsideTheUnitIntervalNeedsExtrapolate) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  NamedTensors w = load_checkpoint_weights(testdata("models/llama-gqa"));
  for (double alpha : {-0.1, 1.5, std::nan("")}) {
    try {
      interpolate_weights(w, w, alpha, false, "tuned");
      FAIL() << alpha;
    } catch (const Error& e) { EXPECT_EQ(e.where(), "--alpha"); }
  }
  EXPECT_NO_THROW(interpolate_weights(w, w, 1.5, true, "tuned"));
  const std::string m = testdata("models/llama-gqa");
  auto r = run_flatune("merge --base '" + m + "' --tuned '" + m + "' --alpha 1.5 --out '" + (dir / "merged") + "'");
  expect_one_line_error(r, "flatune: --alpha: must be in [0, 1]");
  EXPECT_FALSE(std::filesystem::exists(dir / "merged"));
  r = run_flatune("merge --base '" + m + "' --tuned '" + m + "' --alpha 1.5 --extrapolate --out '" + (dir / "merged") +
                  "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(BadInput, EmptyReplayFileNamesTheFile) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  write_file_atomic(dir / "empty.json", "[]");
  write_file_atomic(dir / "empty.txt", "");
  const std::string data = write_sums_alpaca(dir / "d.json", 8);
  for (const char* name : {"empty.json", "empty.txt"}) {
    TrainOptions o;
    o.model = testdata("models/llama-gqa");
    o.data = data;
    o.replay = dir / name;
    o.replay_ratio = 0.25;
    o.max_steps = 1;
    o.out = dir / (std::string("run-") + name);
    try {
      train(o);
      FAIL() << name;
    } catch (const Error& e) { EXPECT_EQ(e.where(), dir / name) << e.what(); }
    auto r = run_flatune("train --model '" + testdata("models/llama-gqa") + "' --data '" + data + "' --replay '" +
                         (dir / name) + "' --replay-ratio 0.25 --max-steps 1 --out '" + (dir / "cli-run") + "'");
    expect_one_line_error(r, "flatune: " + (dir / name) + ": ");
  }
}
