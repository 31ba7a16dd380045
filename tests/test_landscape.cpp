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
      l = loss();
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
