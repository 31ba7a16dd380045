// Landscape and sharpness on a quadratic with a known Hessian, and Hessian-vector products on a
// tiny Llama (float64) against finite differences of gradients.
#include <gtest/gtest.h>

#include <cmath>

#include "flatune/core/error.h"
#include "flatune/landscape/landscape.h"
#include "flatune/model/llama.h"
#include "test_util.h"

using namespace flatune;

namespace {

const auto kF64 = torch::TensorOptions().dtype(torch::kDouble);

// L(w) = 0.5 w^T A w over one parameter vector w in R^3.
struct Quadratic {
  torch::Tensor A, w;
  NamedParams params;
  LossClosure loss;
  explicit Quadratic(torch::Tensor a, torch::Tensor w0) : A(std::move(a)), w(w0.clone().set_requires_grad(true)) {
    params = {{"w", w}};
    loss = [this] { return 0.5 * torch::dot(w, torch::mv(A, w)); };
  }
  double value_at(const torch::Tensor& x) const { return 0.5 * torch::dot(x, torch::mv(A, x)).item<double>(); }
};

// Eigenvalues 4, 2, 1; trace 7.
torch::Tensor coupled_A() { return torch::tensor({3.0, 1.0, 0.0, 1.0, 3.0, 0.0, 0.0, 0.0, 1.0}, kF64).reshape({3, 3}); }

void expect_bitwise(const NamedParams& p, const std::vector<torch::Tensor>& before) {
  for (size_t i = 0; i < p.size(); ++i) EXPECT_TRUE(torch::equal(p[i].second.detach(), before[i])) << p[i].first;
}
std::vector<torch::Tensor> copies(const NamedParams& p) {
  std::vector<torch::Tensor> out;
  for (auto& [n, t] : p) out.push_back(t.detach().clone());
  return out;
}

}  // namespace

TEST(Landscape, Surface1DIsTheAnalyticParabolaAndRestoresWeights) {
  Quadratic q(coupled_A(), torch::tensor({1.0, -1.0, 2.0}, kF64));
  auto before = copies(q.params);
  NamedTensors dir = {{"w", torch::tensor({0.5, 0.25, -1.0}, kF64)}};
  auto s = surface_1d(q.params, dir, q.loss, -2.0, 2.0, 9);
  ASSERT_EQ(s.alphas.size(), 9u);
  for (size_t i = 0; i < 9; ++i) {
    double a = -2.0 + 0.5 * i;
    EXPECT_NEAR(s.alphas[i], a, 1e-15);
    // 0.5 (w + a d)^T A (w + a d) = L(w) + a d^T A w + a^2/2 d^T A d
    double w_Ad = 0, dAd = 0;
    auto Ad = torch::mv(q.A, dir[0].second);
    w_Ad = torch::dot(before[0], Ad).item<double>();
    dAd = torch::dot(dir[0].second, Ad).item<double>();
    EXPECT_NEAR(s.losses[i], q.value_at(before[0]) + a * w_Ad + 0.5 * a * a * dAd, 1e-12);
  }
  expect_bitwise(q.params, before);
}

TEST(Landscape, Surface2DAndItsStatisticsOnAKnownSurface) {
  // Identity Hessian, w = 0, d1 = e1, d2 = e2: f(a, b) = (a^2 + b^2) / 2.
  Quadratic q(torch::eye(3, kF64), torch::zeros({3}, kF64));
  auto before = copies(q.params);
  NamedTensors d1 = {{"w", torch::tensor({1.0, 0.0, 0.0}, kF64)}}, d2 = {{"w", torch::tensor({0.0, 1.0, 0.0}, kF64)}};
  auto s = surface_2d(q.params, d1, d2, q.loss, 1.0, 5);
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < 5; ++j)
      EXPECT_NEAR(s.losses[i][j], 0.5 * (s.alphas[i] * s.alphas[i] + s.betas[j] * s.betas[j]), 1e-14);
  expect_bitwise(q.params, before);
  auto st = surface_stats(s);
  // Discrete Laplacian of a quadratic is exact: 1 + 1 = 2 everywhere.
  EXPECT_NEAR(st.curvature, 2.0, 1e-12);
  // Interior points a, b in {-0.5, 0, 0.5}; central differences are exact: grad = (a, b).
  // mean |grad| = (4*0.5 + 4*sqrt(0.5) + 0)/9; mean (|a|+|b|)/2 = (4*0.25 + 4*0.5)/9.
  EXPECT_NEAR(st.average_gradient, (2.0 + 4 * std::sqrt(0.5)) / 9, 1e-12);
  EXPECT_NEAR(st.mean_abs_gradient, 3.0 / 9, 1e-12);
}

TEST(Landscape, PowerIterationFindsTheTopEigenvalue) {
  Quadratic q(coupled_A(), torch::tensor({1.0, -1.0, 2.0}, kF64));
  auto before = copies(q.params);
  auto v = hessian_top_eigenvalue(q.params, q.loss, 200, 1e-12, 3);
  EXPECT_TRUE(v.converged);
  EXPECT_LT(v.iterations, 200);
  EXPECT_NEAR(v.value, 4.0, 1e-8);
  expect_bitwise(q.params, before);
  // Eigenvalues -5, 1, 2: the dominant one is -5, the top one 2.
  Quadratic s(torch::diag(torch::tensor({-5.0, 1.0, 2.0}, kF64)), torch::ones({3}, kF64));
  auto t = hessian_top_eigenvalue(s.params, s.loss, 400, 1e-12, 3);
  EXPECT_TRUE(t.converged);
  EXPECT_NEAR(t.value, 2.0, 1e-8);
  EXPECT_NEAR(t.detail, -5.0, 1e-8);
}

TEST(Landscape, HutchinsonTraceWithinItsStatedError) {
  Quadratic q(coupled_A(), torch::tensor({1.0, -1.0, 2.0}, kF64));
  auto before = copies(q.params);
  auto t = hessian_trace(q.params, q.loss, 400, 11);
  // v^T A v = 7 + 2 v0 v1: each sample is 5 or 9, so the standard error is about 2/sqrt(400).
  EXPECT_EQ(t.iterations, 400);
  EXPECT_GT(t.detail, 0.05);
  EXPECT_LT(t.detail, 0.15);
  EXPECT_NEAR(t.value, 7.0, 4 * t.detail);
  // A diagonal Hessian makes every Rademacher sample exact.
  Quadratic d(torch::diag(torch::tensor({5.0, 2.0, 1.0}, kF64)), torch::ones({3}, kF64));
  auto td = hessian_trace(d.params, d.loss, 5, 1);
  EXPECT_NEAR(td.value, 8.0, 1e-12);
  EXPECT_NEAR(td.detail, 0.0, 1e-12);
  expect_bitwise(q.params, before);
}

TEST(Landscape, EpsilonSharpnessMatchesTheBoxCornerMaximum) {
  // Diagonal convex quadratic: the maximum over the box is at the corner delta_i = sign(w_i) b_i,
  // b_i = eps (|w_i| + 1).
  auto a = torch::tensor({4.0, 2.0, 1.0}, kF64);
  Quadratic q(torch::diag(a), torch::tensor({1.0, -2.0, 0.5}, kF64));
  auto before = copies(q.params);
  const double eps = 0.1;
  auto w = before[0];
  auto corner = w + torch::sign(w) * eps * (w.abs() + 1);
  double l0 = q.value_at(w), lmax = q.value_at(corner);
  auto v = epsilon_sharpness(q.params, q.loss, eps, 8);
  EXPECT_NEAR(v.detail, lmax - l0, 1e-9);
  EXPECT_NEAR(v.value, 100 * (lmax - l0) / (1 + l0), 1e-7);
  expect_bitwise(q.params, before);
}

TEST(Landscape, SamAndAverageSharpnessOnAQuadratic) {
  Quadratic q(coupled_A(), torch::tensor({1.0, -1.0, 2.0}, kF64));
  auto before = copies(q.params);
  const double rho = 0.05;
  auto g = torch::mv(q.A, before[0]);
  auto e = g * (rho / g.norm().item<double>());
  auto s = sam_sharpness(q.params, q.loss, rho);
  EXPECT_NEAR(s.value, q.value_at(before[0] + e) - q.value_at(before[0]), 1e-12);
  expect_bitwise(q.params, before);
  // E[L(w + sigma |w| z)] - L(w) = sigma^2/2 sum_i A_ii w_i^2 for a quadratic.
  auto avg = average_sharpness(q.params, q.loss, 0.1, 2000, 5);
  double expected = 0.01 / 2 * (3 * 1 + 3 * 1 + 1 * 4);
  EXPECT_EQ(avg.iterations, 2000);
  EXPECT_NEAR(avg.value, expected, 4 * avg.detail);
  expect_bitwise(q.params, before);
}

TEST(Landscape, FilterNormalisationMatchesWeightRowNorms) {
  auto weight = torch::randn({4, 3}, torch::TensorOptions().dtype(torch::kFloat)).set_requires_grad(true);
  auto bias = torch::randn({4}).set_requires_grad(true);
  NamedParams p = {{"layer.weight", weight}, {"layer.bias", bias}};
  DirectionOptions o;
  o.seed = 7;
  o.keep_1d = false;
  auto d = random_direction(p, o);
  auto rows_d = d[0].second.norm(2, 1), rows_w = weight.detach().norm(2, 1);
  EXPECT_TRUE(torch::allclose(rows_d, rows_w, 1e-5, 1e-7));
  EXPECT_EQ(d[1].second.abs().sum().item<float>(), 0.0f);  // 1-D zeroed
  // Seeded: the same seed gives the same direction; a different one does not.
  EXPECT_TRUE(torch::equal(random_direction(p, o)[0].second, d[0].second));
  o.seed = 8;
  EXPECT_FALSE(torch::equal(random_direction(p, o)[0].second, d[0].second));
  o.keep_1d = true;
  auto k = random_direction(p, o);
  EXPECT_NEAR(k[1].second.norm().item<float>(), bias.detach().norm().item<float>(), 1e-5);
  // LoRA only: everything else zero.
  o.lora_only = true;
  NamedParams lp = {{"q_proj.weight", weight}, {"q_proj.lora_A.weight", weight}};
  auto l = random_direction(lp, o);
  EXPECT_EQ(l[0].second.abs().sum().item<float>(), 0.0f);
  EXPECT_GT(l[1].second.abs().sum().item<float>(), 0.0f);
}

TEST(Landscape, BadInputIsACleanError) {
  Quadratic q(coupled_A(), torch::tensor({1.0, -1.0, 2.0}, kF64));
  NamedTensors wrong_shape = {{"w", torch::zeros({4}, kF64)}};
  EXPECT_THROW(surface_1d(q.params, wrong_shape, q.loss, -1, 1, 5), Error);
  NamedTensors wrong_name = {{"v", torch::zeros({3}, kF64)}};
  EXPECT_THROW(check_direction(q.params, wrong_name, "dir.safetensors"), Error);
  NamedTensors ok = {{"w", torch::ones({3}, kF64)}};
  EXPECT_THROW(surface_1d(q.params, ok, q.loss, -1, 1, 0), Error);
  EXPECT_THROW(surface_2d(q.params, ok, ok, q.loss, 1, 0), Error);
  EXPECT_THROW(difference_direction({{"w", torch::zeros({3})}}, {{"w", torch::zeros({2})}}, "tuned"), Error);
}

TEST(Landscape, HessianVectorProductOnTinyLlamaMatchesFiniteDifferences) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  auto model = load_llama(flatune::testing::testdata("models/llama-mha"), torch::kDouble);
  auto params = model->trainable_parameters();
  auto ids = torch::tensor({{1, 5, 9, 3, 7, 2}}, torch::TensorOptions().dtype(torch::kLong));
  // A closure made by hand calls the model directly, so it asks for the twice-differentiable
  // attention itself (fixed_batches_loss does this through share_twice_differentiable).
  AttentionKernelScope eager(*model, AttentionKernel::eager);
  LossClosure loss = [&]() -> torch::Tensor {
    ForwardInput in;
    in.input_ids = ids;
    return causal_lm_loss(model->forward(in), ids);
  };
  auto before = copies(params);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  std::vector<torch::Tensor> v;
  for (auto& [n, t] : params) v.push_back(torch::randn(t.sizes(), gen, kF64));
  auto hv = hessian_vector_product(params, loss, v);
  auto grads_at = [&](double h) {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].second.detach().copy_(before[i] + h * v[i]);
    std::vector<torch::Tensor> ps;
    for (auto& [n, t] : params) ps.push_back(t);
    torch::Tensor l;
    {
      torch::AutoGradMode on(true);
      l = loss.share();
    }
    torch::AutoGradMode on(true);
    return torch::autograd::grad({l}, ps, {}, false, false, true);
  };
  const double h = 1e-5;
  auto gp = grads_at(h), gm = grads_at(-h);
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].second.detach().copy_(before[i]);
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    auto fd = (gp[i] - gm[i]) / (2 * h);
    num += (hv[i] - fd).pow(2).sum().item<double>();
    den += fd.pow(2).sum().item<double>();
  }
  EXPECT_GT(den, 0);
  EXPECT_LT(std::sqrt(num / den), 1e-6);
  expect_bitwise(params, before);
}

// ---------------------------------------------------------------- directions files, fixed batches

#include <algorithm>
#include <fstream>
#include <sstream>

#include "flatune/io/checkpoint.h"

#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/data/dataset.h"
#include "flatune/landscape/directions.h"
#include "flatune/landscape/fixed_batches.h"
#include "flatune/report/plot.h"

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Every tensor in the same order, bitwise equal.
void expect_same_direction(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << a[i].first;
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
}

// Names deliberately not in alphabetical order: loading must follow the model's order.
NamedParams small_params() {
  return {{"z.weight", torch::randn({4, 3})}, {"a.weight", torch::randn({2, 5})}, {"m.norm", torch::randn({3})}};
}

}  // namespace

TEST(LandscapeDirections, SaveLoadRoundTripIsBitwiseWithSettings) {
  flatune::testing::TempDir tmp;
  NamedParams params = small_params();
  DirectionOptions o;
  o.seed = 42;
  o.keep_1d = true;
  DirectionSet set;
  set.settings = direction_settings(o);
  set.directions.push_back(random_direction(params, o));
  o.seed = 43;
  set.directions.push_back(random_direction(params, o));
  set.directions[1][2].second = set.directions[1][2].second.to(torch::kDouble);  // any dtype survives
  save_directions(tmp / "d.safetensors", set);
  DirectionSet back = load_directions(tmp / "d.safetensors", params);
  ASSERT_EQ(back.directions.size(), 2u);
  expect_same_direction(back.directions[0], set.directions[0]);
  expect_same_direction(back.directions[1], set.directions[1]);
  EXPECT_EQ(back.settings.at("seed"), "42");
  EXPECT_EQ(back.settings.at("normalize"), "filter");
  EXPECT_EQ(back.settings.at("keep_1d"), "true");
  EXPECT_EQ(back.settings.at("lora_only"), "false");
  EXPECT_EQ(back.settings.at("directions"), "2");
}

TEST(LandscapeDirections, MismatchedShapesNameTheFileAndTheTensor) {
  flatune::testing::TempDir tmp;
  NamedParams params = small_params();
  DirectionSet set;
  set.directions.push_back(random_direction(params, {}));
  const std::string path = tmp / "d.safetensors";
  save_directions(path, set);
  NamedParams other = params;
  other[1].second = torch::randn({2, 4});
  try {
    load_directions(path, other);
    FAIL() << "a direction of the wrong shape loaded";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
    EXPECT_TRUE(contains(e.what(), "'a.weight' has shape [2, 5], the model's is [2, 4]")) << e.what();
  }
  NamedParams fewer(params.begin(), params.begin() + 2);
  try {
    load_directions(path, fewer);
    FAIL() << "a direction with an extra tensor loaded";
  } catch (const Error& e) { EXPECT_TRUE(contains(e.what(), "'m.norm' is not a parameter")) << e.what(); }
  NamedParams more = params;
  more.emplace_back("extra.weight", torch::zeros({1}));
  EXPECT_THROW(load_directions(path, more), Error);
  // A safetensors file that is not a directions file.
  write_safetensors(tmp / "w.safetensors", {{"z.weight", torch::zeros({4, 3})}});
  EXPECT_THROW(load_directions(tmp / "w.safetensors", params), Error);
}

TEST(LandscapeFixedBatches, LossIsTheTokenWeightedMeanOverExamples) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  auto model = load_llama(flatune::testing::testdata("models/llama-mha"));
  model->eval();
  // Three examples of different lengths and label counts, two to a batch: padding must not count.
  std::vector<Example> ex = {{{1, 5, 9, 3, 7, 2}, {-100, -100, 9, 3, 7, 2}},
                             {{1, 4, 4}, {-100, 4, 4}},
                             {{1, 8, 6, 5, 11, 12, 13, 2}, {-100, -100, -100, -100, 11, 12, 13, 2}}};
  FixedBatches fb = fixed_batches(ex, 5, 2, 0, "test");
  EXPECT_EQ(fb.batches.size(), 2u);
  EXPECT_EQ(fb.examples, 3);
  double sum = 0;
  int64_t count = 0;
  torch::NoGradGuard ng;
  for (const auto& e : ex) {  // each example alone, unpadded
    auto ids = torch::tensor(e.ids, torch::kLong).unsqueeze(0),
         labels = torch::tensor(e.labels, torch::kLong).unsqueeze(0);
    ForwardInput in;
    in.input_ids = ids;
    auto [s, n] = causal_lm_loss_sum(model->forward(in), labels);
    sum += s.item<double>();
    count += n;
  }
  EXPECT_EQ(fb.label_tokens, count);
  EXPECT_EQ(count, 4 + 2 + 4);
  EXPECT_NEAR(loss_value(fixed_batches_loss(model, fb)), sum / count, 1e-5);
  EXPECT_THROW(fixed_batches({}, 2, 2, 0, "empty.json"), Error);
  std::vector<Example> no_labels = {{{1, 2, 3}, {-100, -100, -100}}};
  EXPECT_THROW(fixed_batches(no_labels, 1, 1, 0, "prompts-only.json"), Error);
}

TEST(LandscapePlots, AKnownSurfaceIsRenderedAsPngAndSvg) {
  // f(a, b) = (a^2 + b^2) / 2 from the quadratic with identity Hessian, on a 9 x 9 grid.
  Quadratic q(torch::eye(3, kF64), torch::zeros({3}, kF64));
  NamedTensors d1 = {{"w", torch::tensor({1.0, 0.0, 0.0}, kF64)}}, d2 = {{"w", torch::tensor({0.0, 1.0, 0.0}, kF64)}};
  auto s = surface_2d(q.params, d1, d2, q.loss, -2.0, 2.0, 9);
  EXPECT_NEAR(s.losses[0][8], 4.0, 1e-14);
  flatune::testing::TempDir tmp;
  plot_contour(tmp / "s.png", "known paraboloid", s.alphas, s.betas, s.losses);
  plot_contour(tmp / "s.svg", "known paraboloid", s.alphas, s.betas, s.losses);
  std::string png = read_file(tmp / "s.png"), svg = read_file(tmp / "s.svg");
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // IHDR: width and height, big-endian, right after the signature and chunk header.
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(png[at])) << 24) | (uint8_t(png[at + 1]) << 16) | (uint8_t(png[at + 2]) << 8) |
           uint8_t(png[at + 3]);
  };
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(be32(16), 800u);
  EXPECT_EQ(be32(20), 560u);
  EXPECT_TRUE(contains(svg, "<svg"));
  EXPECT_TRUE(contains(svg, "</svg>"));
  // The 1-D curve through the same surface's middle row.
  Surface1D row{s.alphas, s.losses[4]};
  EXPECT_EQ(surface_1d_csv(row).substr(0, 11), "alpha,loss\n");
  plot_lines(tmp / "c.svg", "middle row", "a", "loss", {{"b = 0", row.alphas, row.losses}});
  EXPECT_TRUE(contains(read_file(tmp / "c.svg"), "</svg>"));
}

// ---------------------------------------------------------------- the CLI verbs, end to end

namespace {

using flatune::testing::run_flatune;
using flatune::testing::TempDir;

std::string q(const std::string& s) { return "'" + s + "'"; }

// Alpaca records short enough for the tiny models' 128 positions with the plain template.
std::string write_data(const TempDir& tmp) {
  const std::string path = tmp / "data.json";
  write_file_atomic(path, R"([
  {"instruction": "add 2 and 3", "input": "", "output": "5"},
  {"instruction": "name a colour", "input": "", "output": "blue, like the sky"},
  {"instruction": "say hi", "input": "", "output": "hi there"},
  {"instruction": "count to four", "input": "", "output": "1 2 3 4"}
])");
  return path;
}

std::vector<std::vector<double>> read_csv_numbers(const std::string& path, std::string* header) {
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, *header);
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::stringstream cells(line);
    std::string cell;
    while (std::getline(cells, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

// The loss the CLI should report, computed here example by example without padding.
double reference_loss(const std::string& model_dir, const std::string& data) {
  auto tok = load_tokenizer(model_dir);
  auto model = load_llama(model_dir);
  model->eval();
  TokenizeStats st;
  auto ex = tokenize_conversations(read_conversations(data, "alpaca"), *tok, {"plain", 128, false}, &st);
  torch::NoGradGuard ng;
  double sum = 0;
  int64_t n = 0;
  for (const auto& e : ex) {
    ForwardInput in;
    in.input_ids = torch::tensor(e.ids, torch::kLong).unsqueeze(0);
    auto [s, c] = causal_lm_loss_sum(model->forward(in), torch::tensor(e.labels, torch::kLong).unsqueeze(0));
    sum += s.item<double>();
    n += c;
  }
  return sum / n;
}

bool is_png(const std::string& path) { return file_exists(path) && read_file(path).substr(0, 4) == "\x89PNG"; }
bool is_svg(const std::string& path) { return file_exists(path) && contains(read_file(path), "</svg>"); }

}  // namespace

TEST(LandscapeCli, OneDimensionalSurfaceWritesEverySettingAndReusesItsDirections) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  TempDir tmp;
  const std::string model = flatune::testing::testdata("models/llama-mha"), data = write_data(tmp);
  const std::string common = " --model " + q(model) + " --data " + q(data) +
                             " --template plain --batches 2 --batch-size 2 --points 5 --range -1:1";
  auto r = run_flatune("landscape" + common + " --seed 3 --out " + q(tmp / "a"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string header;
  auto rows = read_csv_numbers(tmp / "a/surface_1d.csv", &header);
  EXPECT_EQ(header, "alpha,loss");
  ASSERT_EQ(rows.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_DOUBLE_EQ(rows[i][0], -1.0 + 0.5 * i);
  json j = read_json_file(tmp / "a/landscape.json");
  const json& s = j["settings"];
  EXPECT_EQ(s["mode"], "1d");
  EXPECT_EQ(s["model"], model);
  EXPECT_EQ(s["data"], data);
  EXPECT_EQ(s["template"], "plain");
  EXPECT_EQ(s["batches"], 2);
  EXPECT_EQ(s["batch_size"], 2);
  EXPECT_EQ(s["examples_used"], 4);
  EXPECT_EQ(s["points"], 5);
  EXPECT_EQ(s["range"], json::array({-1.0, 1.0}));
  EXPECT_EQ(s["directions"]["seed"], "3");
  EXPECT_EQ(s["directions"]["normalize"], "filter");
  EXPECT_EQ(s["directions"]["keep_1d"], "true");
  // The weights were restored: the loss at the model is the same before and after, equals the
  // surface's alpha = 0 point, and equals the loss computed here independently.
  const double l0 = j["loss_at_model"].get<double>();
  EXPECT_EQ(l0, j["loss_at_model_after"].get<double>());
  EXPECT_EQ(rows[2][1], l0);
  EXPECT_NEAR(l0, reference_loss(model, data), 1e-5);
  EXPECT_TRUE(is_png(tmp / "a/surface_1d.png"));
  EXPECT_TRUE(is_svg(tmp / "a/surface_1d.svg"));
  // The saved directions redraw the same curve, bit for bit.
  r = run_flatune("landscape" + common + " --directions " + q(tmp / "a/directions.safetensors") + " --out " +
                  q(tmp / "b"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(tmp / "b/surface_1d.csv"), read_file(tmp / "a/surface_1d.csv"));
  EXPECT_EQ(read_json_file(tmp / "b/landscape.json")["settings"]["directions"]["seed"], "3");
}

TEST(LandscapeCli, TwoDimensionalGridAndInterpolation) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  TempDir tmp;
  const std::string model = flatune::testing::testdata("models/llama-mha"), data = write_data(tmp);
  auto r = run_flatune(
      "landscape --model " + q(model) + " --data " + q(data) +
      " --template plain --batches 1 --batch-size 4 --grid 3 --range -0.5:0.5 --normalize none --ignore-1d --out " +
      q(tmp / "g"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string header;
  auto rows = read_csv_numbers(tmp / "g/surface_2d.csv", &header);
  EXPECT_EQ(header, "alpha,beta,loss");
  ASSERT_EQ(rows.size(), 9u);
  json j = read_json_file(tmp / "g/landscape.json");
  EXPECT_EQ(rows[4][0], 0.0);
  EXPECT_EQ(rows[4][1], 0.0);
  EXPECT_EQ(rows[4][2], j["loss_at_model"].get<double>());
  EXPECT_EQ(j["settings"]["directions"]["normalize"], "none");
  EXPECT_EQ(j["settings"]["directions"]["keep_1d"], "false");
  EXPECT_TRUE(j["surface"]["stats"].contains("curvature"));
  EXPECT_TRUE(is_png(tmp / "g/surface_2d.png"));
  EXPECT_TRUE(is_svg(tmp / "g/surface_2d.svg"));
  EXPECT_EQ(SafetensorsFile(tmp / "g/directions.safetensors").header().metadata.at("directions"), "2");

  // A "tuned" model: the same folder with perturbed weights.
  const std::string tuned = tmp / "tuned";
  std::filesystem::copy(model, tuned);
  NamedTensors w = load_checkpoint_weights(model);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (auto& [n, t] : w) t = t + 0.05 * torch::randn(t.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat));
  write_safetensors(tuned + "/model.safetensors", w);
  r = run_flatune("landscape --from " + q(model) + " --to " + q(tuned) + " --data " + q(data) +
                  " --template plain --batches 1 --batch-size 4 --points 9 --out " + q(tmp / "i"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  rows = read_csv_numbers(tmp / "i/interpolation.csv", &header);
  ASSERT_EQ(rows.size(), 9u);  // -0.5, -0.25, 0 (base), ..., 1 (tuned), 1.25, 1.5
  EXPECT_DOUBLE_EQ(rows[0][0], -0.5);
  EXPECT_DOUBLE_EQ(rows[8][0], 1.5);
  EXPECT_NEAR(rows[2][1], reference_loss(model, data), 1e-5);
  EXPECT_NEAR(rows[6][1], reference_loss(tuned, data), 1e-5);
  EXPECT_EQ(rows[6][1], read_json_file(tmp / "i/landscape.json")["loss_at_model"].get<double>());
  EXPECT_TRUE(is_png(tmp / "i/interpolation.png"));
}

TEST(LandscapeCli, SharpnessPrintsATableAndWritesEveryMetric) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  TempDir tmp;
  const std::string model = flatune::testing::testdata("models/llama-mha"), data = write_data(tmp);
  auto r = run_flatune(
      "sharpness --model " + q(model) + " --data " + q(data) +
      " --template plain --batches 1 --batch-size 4 --metrics sam,eps,avg,lambda_max,trace --rho 0.01 --eps-steps 2"
      " --samples 3 --iters 4 --out " +
      q(tmp / "s"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* m : {"sam", "eps", "avg", "lambda_max", "trace"}) EXPECT_TRUE(contains(r.output, m)) << r.output;
  json j = read_json_file(tmp / "s/sharpness.json");
  EXPECT_NEAR(j["loss"].get<double>(), reference_loss(model, data), 1e-5);
  EXPECT_EQ(j["settings"]["rho"], 0.01);
  EXPECT_EQ(j["metrics"]["eps"]["iterations"], 2);
  EXPECT_TRUE(contains(j["metrics"]["eps"]["what"].get<std::string>(), "lower bound"));
  EXPECT_EQ(j["metrics"]["avg"]["iterations"], 3);
  EXPECT_EQ(j["metrics"]["trace"]["iterations"], 3);
  EXPECT_LE(j["metrics"]["lambda_max"]["iterations"].get<int>(), 4);
  // For a small radius the SAM increase is first order, rho |g| > 0.
  EXPECT_GT(j["sam_sharpness"].get<double>(), 0);
  for (const char* k : {"epsilon_sharpness", "average_sharpness", "lambda_max", "hessian_trace"})
    EXPECT_TRUE(std::isfinite(j[k].get<double>())) << k;
}

TEST(LandscapeCli, CorrelateMatchesHandComputedPearsonAndSpearman) {
  TempDir tmp;
  // x = 1 2 3 4 10, y = 2 1 4 4 5 (a tie), and a run without y that is left out.
  write_file_atomic(tmp / "runs.csv", "run,lambda_max,forgetting\na,1,2\nb,2,1\nc,3,4\nd,4,4\ne,10,5\nf,7,n/a\n");
  auto r = run_flatune("correlate " + q(tmp / "runs.csv") + " --x lambda_max --y forgetting --out " + q(tmp / "c"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json j = read_json_file(tmp / "c/correlation.json");
  EXPECT_EQ(j["n"], 5);
  EXPECT_EQ(j["left_out"], 1);
  // Pearson: dx = -3 -2 -1 0 6, dy = -1.2 -2.2 .8 .8 1.8: r = 18 / sqrt(50 * 10.8) = sqrt(0.6).
  // Spearman: ranks 1..5 against 2 1 3.5 3.5 5: rho = 8.5 / sqrt(10 * 9.5).
  const double r_p = std::sqrt(0.6), r_s = 8.5 / std::sqrt(95.0);
  // Two-sided p of Student's t with 3 degrees of freedom in closed form: 1 - (2/pi)(th + sin th cos th),
  // th = atan(t / sqrt 3), t = r sqrt(3 / (1 - r^2)).
  auto p3 = [](double rr) {
    double t = rr * std::sqrt(3 / (1 - rr * rr)), th = std::atan(t / std::sqrt(3.0));
    return 1 - 2 / M_PI * (th + std::sin(th) * std::cos(th));
  };
  EXPECT_NEAR(j["pearson"]["r"].get<double>(), r_p, 1e-12);
  EXPECT_NEAR(j["pearson"]["p_value"].get<double>(), p3(r_p), 1e-6);
  EXPECT_NEAR(j["spearman"]["rho"].get<double>(), r_s, 1e-12);
  EXPECT_NEAR(j["spearman"]["p_value"].get<double>(), p3(r_s), 1e-6);
  EXPECT_TRUE(is_png(tmp / "c/correlation.png"));
  EXPECT_TRUE(is_svg(tmp / "c/correlation.svg"));

  // The same numbers as an experiment folder: runs/*/flatness.json and forgetting.json (delta =
  // tuned - before, so forgetting = -delta).
  const std::vector<std::string> names = {"a", "b", "c", "d", "e"};
  const std::vector<double> xs = {1, 2, 3, 4, 10}, ys = {2, 1, 4, 4, 5};
  json deltas = json::array();
  for (size_t i = 0; i < names.size(); ++i) {
    make_dirs(tmp / ("exp/runs/" + names[i]));
    write_file_atomic(tmp / ("exp/runs/" + names[i] + "/flatness.json"), json({{"lambda_max", xs[i]}}).dump());
    deltas.push_back(-ys[i]);
  }
  write_file_atomic(tmp / "exp/forgetting.json",
                    json({{"tuned", names}, {"overall", {{"delta", deltas}}}, {"targets", json::array()}}).dump());
  r = run_flatune("correlate " + q(tmp / "exp") + " --out " + q(tmp / "c2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  json k = read_json_file(tmp / "c2/correlation.json");
  EXPECT_NEAR(k["pearson"]["r"].get<double>(), r_p, 1e-12);
  EXPECT_NEAR(k["spearman"]["rho"].get<double>(), r_s, 1e-12);
}

TEST(LandscapeCli, BadInputIsOneCleanLineAndExitTwo) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir tmp;
  const std::string model = flatune::testing::testdata("models/llama-mha"), data = write_data(tmp);
  write_file_atomic(tmp / "empty.json", "[]");
  write_file_atomic(tmp / "nothing.json", "");
  // Directions drawn for another model (llama-gqa has other shapes).
  auto gqa = load_llama(flatune::testing::testdata("models/llama-gqa"));
  NamedParams gp;
  for (auto& item : gqa->named_parameters(true)) gp.emplace_back(item.key(), item.value());
  DirectionSet set;
  set.directions.push_back(random_direction(gp, {}));
  save_directions(tmp / "gqa.safetensors", set);
  write_file_atomic(tmp / "bad.csv", "run,x,y\na,1,2\nb,two,3\n");
  write_file_atomic(tmp / "good.csv", "run,x,y\na,1,2\nb,2,3\nc,3,1\n");
  const std::string base = "landscape --model " + q(model) + " --template plain --out " + q(tmp / "o");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {base + " --data " + q(data) + " --directions " + q(tmp / "gqa.safetensors"),
       "gqa.safetensors: direction 1: tensor"},
      {base + " --data " + q(tmp / "empty.json"), "empty.json"},
      {base + " --data " + q(tmp / "nothing.json"), "nothing.json"},
      {base + " --data " + q(data) + " --points 0", "--points"},
      {base + " --data " + q(data) + " --points 1", "--points"},
      {base + " --data " + q(data) + " --grid 2", "--grid"},
      {base + " --data " + q(data) + " --range 1:1", "--range"},
      {base + " --data " + q(data) + " --range 0:x", "--range"},
      {base + " --data " + q(data) + " --normalize layer", "--normalize"},
      {base + " --data " + q(data) + " --lora-only", "--lora-only"},
      {"sharpness --model " + q(model) + " --data " + q(data) + " --metrics sam,flatness", "unknown metric 'flatness'"},
      {"correlate " + q(tmp / "bad.csv") + " --x x --y y", "bad.csv:3"},
      {"correlate " + q(tmp / "good.csv") + " --x z --y y", "--x: no run has 'z'"},
      {"correlate " + q(tmp / "missing.csv"), "missing.csv"},
  };
  for (const auto& [args, expected] : cases) {
    auto r = run_flatune(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("flatune: ", 0), 0u) << args << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, expected)) << args << "\n" << r.output;
  }
}
