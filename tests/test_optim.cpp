// The SAM family, schedules and clipping against closed forms worked out in the test.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include "device_util.h"
#include "flatune/core/error.h"
#include "flatune/optim/optimizer.h"
#include "flatune/optim/sam.h"

using namespace flatune;

namespace {

// f(w) = 1/2 w^T A w - b^T w over w = [vec(W) (2x2), v (3)], in float64, on the test device
// (drawn on the CPU, so the same numbers everywhere).
struct Quadratic {
  torch::Tensor A, b, W, v;
  Quadratic() {
    const torch::Device dev = flatune::testing::test_device();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    auto M = torch::randn({7, 7}, gen, torch::kDouble);
    A = (M.matmul(M.t()) + torch::eye(7, torch::kDouble)).to(dev);
    b = torch::randn({7}, gen, torch::kDouble).to(dev);
    W = torch::randn({2, 2}, gen, torch::kDouble).to(dev).requires_grad_(true);
    v = torch::randn({3}, gen, torch::kDouble).to(dev).requires_grad_(true);
  }
  torch::Tensor flat() const { return torch::cat({W.detach().reshape({-1}), v.detach()}); }
  torch::Tensor grad_at(const torch::Tensor& w) const { return A.matmul(w) - b; }
  torch::Tensor loss() {
    auto w = torch::cat({W.reshape({-1}), v});
    auto f = 0.5 * w.dot(A.matmul(w)) - b.dot(w);
    f.backward();
    return f.detach();
  }
  NamedParams params() const {
    return {{"model.layers.0.mlp.up_proj.weight", W}, {"model.layers.1.self_attn.q_proj.bias", v}};
  }
};

SamSettings settings(const std::string& kind, double rho) {
  SamSettings s;
  s.kind = kind;
  s.rho = rho;
  return s;
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, double tol = 1e-12) {
  EXPECT_LE((a - b).abs().max().item<double>(), tol) << a << "\nvs\n" << b;
}

}  // namespace

TEST(Sam, OneStepEqualsClosedForm) {
  Quadratic q;
  const double lr = 0.1, rho = 0.3;
  auto w0 = q.flat();
  auto g = q.grad_at(w0);
  auto e = rho * g / g.norm();
  auto expected = w0 - lr * q.grad_at(w0 + e);
  torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(lr));
  SamSettings s = settings("sam", rho);
  SamStepper stepper(q.params(), sgd, s, 0.0);
  auto st = stepper.step([&] { return q.loss(); });
  expect_close(q.flat(), expected);
  EXPECT_NEAR(st.e_norm, rho, 1e-12);
  EXPECT_NEAR(st.grad_norm, q.grad_at(w0 + e).norm().item<double>(), 1e-12);
  auto fw = [&](const torch::Tensor& w) { return (0.5 * w.dot(q.A.matmul(w)) - q.b.dot(w)).item<double>(); };
  EXPECT_NEAR(st.loss, fw(w0), 1e-12);
  EXPECT_NEAR(st.perturbed_loss, fw(w0 + e), 1e-12);
}

TEST(Sam, AsamStepEqualsClosedForm) {
  Quadratic q;
  const double lr = 0.05, rho = 0.5, eta = 0.01;
  auto w0 = q.flat();
  auto g = q.grad_at(w0);
  auto T = w0.abs() + eta;
  auto e = rho * T * T * g / (T * g).norm();
  auto expected = w0 - lr * q.grad_at(w0 + e);
  torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(lr));
  SamSettings s = settings("asam", rho);
  s.eta = eta;
  SamStepper stepper(q.params(), sgd, s, 0.0);
  stepper.step([&] { return q.loss(); });
  expect_close(q.flat(), expected);
}

TEST(Sam, LookSamInBetweenStepsFollowTheFormula) {
  Quadratic q;
  const double lr = 0.05, rho = 0.2, alpha = 0.7;
  torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(lr));
  SamSettings s = settings("looksam", rho);
  s.k = 3;
  s.alpha = alpha;
  SamStepper stepper(q.params(), sgd, s, 0.0);
  auto w = q.flat();
  // Step 0: full SAM, keeps g_v.
  auto g = q.grad_at(w);
  auto gs = q.grad_at(w + rho * g / g.norm());
  auto gv = gs - gs.dot(g) / g.dot(g) * g;
  w = w - lr * gs;
  EXPECT_TRUE(stepper.step([&] { return q.loss(); }).second_pass);
  expect_close(q.flat(), w);
  // Steps 1 and 2: one pass with g + alpha ||g|| / ||g_v|| g_v.
  for (int i = 1; i < 3; ++i) {
    auto gi = q.grad_at(w);
    w = w - lr * (gi + alpha * gi.norm() / gv.norm() * gv);
    EXPECT_FALSE(stepper.step([&] { return q.loss(); }).second_pass);
    expect_close(q.flat(), w);
  }
  // Step 3: full SAM again.
  EXPECT_TRUE(stepper.step([&] { return q.loss(); }).second_pass);
  // The carried state round-trips.
  auto state = stepper.state();
  EXPECT_EQ(state.size(), 3u);
  SamStepper other(q.params(), sgd, s, 0.0);
  other.load_state(state, "state");
  EXPECT_EQ(other.state()[0].second.item<int64_t>(), 4);
}

TEST(Sam, SubsetLeavesUnselectedParametersUnperturbed) {
  Quadratic q;
  torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(0.1));
  SamSettings s = settings("sam-subset", 0.5);
  s.subset = {".*\\.mlp\\..*"};
  SamStepper stepper(q.params(), sgd, s, 0.0);
  EXPECT_EQ(stepper.perturbed(), (std::vector<bool>{true, false}));
  auto v0 = q.v.detach().clone(), W0 = q.W.detach().clone();
  int pass = 0;
  bool v_untouched = false, W_moved = false;
  stepper.step([&] {
    if (pass++ == 1) {
      v_untouched = torch::equal(q.v.detach(), v0);
      W_moved = !torch::equal(q.W.detach(), W0);
    }
    return q.loss();
  });
  EXPECT_EQ(pass, 2);
  EXPECT_TRUE(v_untouched);
  EXPECT_TRUE(W_moved);
  EXPECT_FALSE(torch::equal(q.v.detach(), v0));  // but it is stepped
  SamSettings none = s;
  none.subset = {"nothing"};
  EXPECT_THROW(SamStepper(q.params(), sgd, none, 0.0), Error);
}

// sam-subset is SAM with e zero off the subset: e = rho g_S / ||g_S||, stepped with the whole
// gradient at w + e. Its first pass differentiates only the subset (the others' requires_grad off
// there, on again after, also when that pass throws).
TEST(Sam, SubsetStepEqualsClosedFormAndItsFirstPassDifferentiatesOnlyTheSubset) {
  Quadratic q;
  const double lr = 0.1, rho = 0.5;
  auto w0 = q.flat();
  auto in_subset = torch::cat({torch::ones({4}, w0.options()), torch::zeros({3}, w0.options())});
  auto g_subset = q.grad_at(w0) * in_subset;
  auto e = rho * g_subset / g_subset.norm();
  auto expected = w0 - lr * q.grad_at(w0 + e);
  torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(lr));
  SamSettings s = settings("sam-subset", rho);
  s.subset = {".*\\.mlp\\..*"};
  SamStepper stepper(q.params(), sgd, s, 0.0);
  std::vector<std::pair<bool, bool>> requires_grad;  // W's and v's, each pass
  auto st = stepper.step([&] {
    requires_grad.emplace_back(q.W.requires_grad(), q.v.requires_grad());
    return q.loss();
  });
  expect_close(q.flat(), expected);
  EXPECT_NEAR(st.e_norm, rho, 1e-12);
  using Pair = std::pair<bool, bool>;
  EXPECT_EQ(requires_grad, (std::vector<Pair>{{true, false}, {true, true}}));
  EXPECT_TRUE(q.v.requires_grad());
  EXPECT_THROW(stepper.step([&]() -> torch::Tensor { throw Error("closure", "first pass failed"); }), Error);
  EXPECT_TRUE(q.W.requires_grad());
  EXPECT_TRUE(q.v.requires_grad());
}

TEST(Sam, RestoresWeightsBitExactlyBeforeTheStep) {
  for (const char* kind : {"sam", "asam"}) {
    Quadratic q;
    torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(0.0));  // lr 0: step changes nothing
    SamSettings s = settings(kind, 0.37);
    SamStepper stepper(q.params(), sgd, s, 0.0);
    auto W0 = q.W.detach().clone(), v0 = q.v.detach().clone();
    // The second pass runs on w + e held apart from w: what an alias of W taken before the step
    // sees is never written, and after the step W is in its own storage again.
    const torch::Tensor alias = q.W.detach();
    const void* storage = q.W.data_ptr();
    int pass = 0;
    bool w_untouched_in_second_pass = false, perturbed_in_second_pass = false;
    stepper.step([&] {
      if (pass++ == 1) {
        w_untouched_in_second_pass = torch::equal(alias, W0);
        perturbed_in_second_pass = !torch::equal(q.W.detach(), W0);
      }
      return q.loss();
    });
    EXPECT_TRUE(w_untouched_in_second_pass);
    EXPECT_TRUE(perturbed_in_second_pass);
    EXPECT_EQ(q.W.data_ptr(), storage);
    EXPECT_TRUE(torch::equal(q.W.detach(), W0));
    EXPECT_TRUE(torch::equal(q.v.detach(), v0));
  }
}

// Linear regression: the mean gradient over N micro-batches equals one batch of N x size.
TEST(Sam, AccumulationEqualsOneLargeBatch) {
  for (const char* kind : {"none", "sam"}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
    auto X = torch::randn({8, 4}, gen, torch::kDouble), y = torch::randn({8}, gen, torch::kDouble);
    auto w0 = torch::randn({4}, gen, torch::kDouble);
    auto run = [&](int micro) {
      auto w = w0.clone().requires_grad_(true);
      auto opt = make_adamw({{"w", w}}, AdamWSettings{0.01});
      SamStepper stepper({{"w", w}}, *opt, settings(kind, 0.1), 0.0);
      for (int step = 0; step < 3; ++step) {
        stepper.step([&] {
          torch::Tensor total = torch::zeros({}, torch::kDouble);
          int64_t per = 8 / micro;
          for (int m = 0; m < micro; ++m) {
            auto xb = X.narrow(0, m * per, per), yb = y.narrow(0, m * per, per);
            auto loss = (xb.matmul(w) - yb).pow(2).sum() / 8.0;
            loss.backward();
            total += loss.detach();
          }
          return total;
        });
      }
      return w.detach();
    };
    expect_close(run(4), run(1), 1e-12);
  }
}

TEST(Optim, ClippingMatchesHandComputation) {
  auto a = torch::zeros({2}, torch::kDouble).requires_grad_(true),
       b = torch::zeros({1}, torch::kDouble).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0, 0.0}, torch::kDouble);
  b.mutable_grad() = torch::tensor({4.0}, torch::kDouble);
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 1.0).item<double>(), 5.0);
  const double scale = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * scale, 1e-15);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * scale, 1e-15);
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0).item<double>(), 5.0 * scale, 1e-12);  // below the limit: unchanged
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * scale, 1e-15);
  // Parameters without gradients (none reached them yet): norm 0, nothing to scale.
  auto c = torch::zeros({3}, torch::kDouble).requires_grad_(true);
  EXPECT_EQ(clip_grad_norm({c}, 1.0).item<double>(), 0.0);
  EXPECT_FALSE(c.grad().defined());
}

// The sum of squares over tensors of several dtypes and layouts (float32 and float64 by BLAS dot
// products, bf16 through _foreach_norm) against the float64 sum of the same values.
TEST(Optim, SumOfSquaresOverDtypesAndLayouts) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  std::vector<torch::Tensor> ts = {torch::randn({1000}, gen), torch::randn({3, 5}, gen, torch::kDouble),
                                   torch::randn({7}, gen).to(torch::kBFloat16), torch::randn({4, 6}, gen).t(),
                                   torch::zeros({0})};
  double expected = 0;
  for (const auto& t : ts) {
    if (t.scalar_type() == torch::kBFloat16)  // its norm in its own dtype, as clip_grad_norm_ takes it
      expected += std::pow(t.to(torch::kFloat).norm().to(torch::kBFloat16).item<double>(), 2);
    else expected += t.to(torch::kDouble).square().sum().item<double>();
  }
  const torch::Tensor got = sum_of_squares(ts, torch::kCPU);
  EXPECT_EQ(got.scalar_type(), torch::kDouble);
  EXPECT_NEAR(got.item<double>(), expected, 1e-6 * expected);
  EXPECT_EQ(sum_of_squares({}, torch::kCPU).item<double>(), 0.0);
}

// Clipping folded into the AdamW update gives the parameters, moments and (scaled) gradients of
// clipping first and stepping after; an optimizer of another kind gets the multiplication as a
// pass of its own; a scale of 1 is a plain step, bit for bit.
TEST(Optim, StepWithScaledGradsEqualsClippingThenStepping) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  const auto w0 = torch::randn({33, 9}, gen), b0 = torch::randn({9}, gen);
  const auto gw = 5 * torch::randn({33, 9}, gen), gb = 5 * torch::randn({9}, gen);
  AdamWSettings settings;
  settings.lr = 1e-2;
  settings.weight_decay = 0.1;
  for (const bool clipping : {true, false}) {
    auto run = [&](bool folded) {
      auto w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
      auto opt = make_adamw({{"w", w}, {"b", b}}, settings);
      const double max_norm = clipping ? 1.0 : 1e9;
      for (int step = 0; step < 3; ++step) {
        w.mutable_grad() = gw * (1 + step);
        b.mutable_grad() = gb * (1 + step);
        if (folded) {
          step_with_scaled_grads(*opt, clip_scale(global_grad_norm({w, b}), max_norm));
        } else {
          clip_grad_norm({w, b}, max_norm);
          opt->step();
        }
      }
      return std::vector<torch::Tensor>{w.detach(), b.detach(), w.grad(), b.grad()};
    };
    auto folded = run(true), separate = run(false);
    for (size_t i = 0; i < folded.size(); ++i) {
      if (clipping)  // dividing by 1/scale rounds differently from multiplying by scale, now and then
        EXPECT_TRUE(torch::allclose(folded[i], separate[i], 1e-6, 1e-7)) << "clipping, tensor " << i;
      else EXPECT_TRUE(torch::equal(folded[i], separate[i])) << "no clipping, tensor " << i;
    }
  }
  auto w = w0.clone().requires_grad_(true);
  torch::optim::SGD sgd({w}, torch::optim::SGDOptions(0.1));
  w.mutable_grad() = gw.clone();
  step_with_scaled_grads(sgd, torch::tensor(0.25, torch::kDouble));
  EXPECT_TRUE(torch::allclose(w.detach(), w0 - 0.1 * 0.25 * gw, 1e-6, 1e-7));
  EXPECT_TRUE(torch::equal(w.grad(), gw * 0.25));
}

TEST(Optim, SchedulesMatchHandValues) {
  Schedule s;
  s.kind = "cosine";
  s.warmup_steps = 10;
  s.total_steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate_at(s, 1.0, 0), 0.0);
  EXPECT_DOUBLE_EQ(learning_rate_at(s, 1.0, 5), 0.5);
  EXPECT_DOUBLE_EQ(learning_rate_at(s, 1.0, 10), 1.0);
  EXPECT_NEAR(learning_rate_at(s, 1.0, 60), 0.5, 1e-15);  // half way: cos(pi/2)
  EXPECT_NEAR(learning_rate_at(s, 1.0, 35), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(learning_rate_at(s, 1.0, 110), 0.0, 1e-15);
  s.min_lr_ratio = 0.1;
  EXPECT_NEAR(learning_rate_at(s, 2.0, 110), 0.2, 1e-15);
  s.kind = "linear";
  s.min_lr_ratio = 0;
  EXPECT_NEAR(learning_rate_at(s, 1.0, 35), 0.75, 1e-15);
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(learning_rate_at(s, 3.0, 50), 3.0);
  Schedule st;
  st.kind = "step";
  st.steps_per_epoch = 4;
  st.decay_every_epochs = 2;
  st.gamma = 0.5;
  EXPECT_DOUBLE_EQ(learning_rate_at(st, 1.0, 7), 1.0);    // epoch 1
  EXPECT_DOUBLE_EQ(learning_rate_at(st, 1.0, 8), 0.5);    // epoch 2
  EXPECT_DOUBLE_EQ(learning_rate_at(st, 1.0, 17), 0.25);  // epoch 4
  Schedule bad;
  bad.kind = "exp";
  EXPECT_THROW(learning_rate_at(bad, 1.0, 20), Error);
}

TEST(Optim, AdamWGroupsExemptNormsBiasesAndEmbeddings) {
  auto W = torch::ones({2, 2}).requires_grad_(true), bias = torch::ones({2}).requires_grad_(true);
  auto E = torch::ones({3, 2}).requires_grad_(true), n = torch::ones({2}).requires_grad_(true);
  NamedParams ps = {{"model.layers.0.mlp.up_proj.weight", W},
                    {"model.layers.0.self_attn.q_proj.bias", bias},
                    {"model.embed_tokens.weight", E},
                    {"model.norm.weight", n}};
  auto opt = make_adamw(ps, AdamWSettings{0.1, 0.9, 0.999, 1e-8, 0.5});
  ASSERT_EQ(opt->param_groups().size(), 2u);
  EXPECT_EQ(opt->param_groups()[0].params().size(), 1u);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[0].options()).weight_decay(), 0.5);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[1].options()).weight_decay(), 0.0);
  // Zero gradients: only decoupled decay moves a weight, w <- w (1 - lr wd).
  for (auto& [name, p] : ps) p.mutable_grad() = torch::zeros_like(p);
  opt->step();
  EXPECT_NEAR(W[0][0].item<double>(), 1.0 - 0.1 * 0.5, 1e-7);
  EXPECT_DOUBLE_EQ(E[0][0].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(n[0].item<double>(), 1.0);
  set_learning_rate(*opt, 0.01);
  EXPECT_DOUBLE_EQ(opt->param_groups()[1].options().get_lr(), 0.01);
}

// AdamW's update against the formula worked out here in float64 (decoupled decay on the decayed
// group only, bias-corrected moments, a learning rate changed between steps, a parameter without a
// gradient left alone), and in float32 against libtorch's own torch::optim::AdamW.
TEST(Optim, AdamWMatchesTheUpdateWorkedOutByHand) {
  const AdamWSettings st{0.03, 0.8, 0.95, 1e-6, 0.2};
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    auto W0 = torch::randn({2, 3}, gen, torch::kDouble), b0 = torch::randn({3}, gen, torch::kDouble);
    std::vector<std::pair<torch::Tensor, torch::Tensor>> grads;  // per step, for W and b
    for (int t = 0; t < 4; ++t)
      grads.emplace_back(torch::randn({2, 3}, gen, torch::kDouble), torch::randn({3}, gen, torch::kDouble));
    auto W = W0.to(dtype).clone().requires_grad_(true), b = b0.to(dtype).clone().requires_grad_(true);
    auto unused = torch::ones({2}, dtype).requires_grad_(true);
    auto opt = make_adamw({{"l.weight", W}, {"l.bias", b}, {"n.weight", unused}}, st);
    auto W2 = W0.to(dtype).clone().requires_grad_(true), b2 = b0.to(dtype).clone().requires_grad_(true);
    torch::optim::AdamW libtorch_adamw(
        std::vector<torch::optim::OptimizerParamGroup>{
            {{W2},
             std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(st.lr)
                                                              .betas({st.beta1, st.beta2})
                                                              .eps(st.eps)
                                                              .weight_decay(st.weight_decay))},
            {{b2},
             std::make_unique<torch::optim::AdamWOptions>(
                 torch::optim::AdamWOptions(st.lr).betas({st.beta1, st.beta2}).eps(st.eps).weight_decay(0.0))}},
        torch::optim::AdamWOptions(st.lr));
    torch::Tensor w_ref = W0.clone(), bias_ref = b0.clone();
    torch::Tensor m_w = torch::zeros_like(w_ref), v_w = torch::zeros_like(w_ref);
    torch::Tensor m_b = torch::zeros_like(bias_ref), v_b = torch::zeros_like(bias_ref);
    for (int t = 1; t <= 4; ++t) {
      const double lr = t <= 2 ? st.lr : st.lr / 3;
      set_learning_rate(*opt, lr);
      set_learning_rate(libtorch_adamw, lr);
      const auto& [gw, gb] = grads[t - 1];
      W.mutable_grad() = gw.to(dtype);
      b.mutable_grad() = gb.to(dtype);
      W2.mutable_grad() = gw.to(dtype);
      b2.mutable_grad() = gb.to(dtype);
      opt->step();
      libtorch_adamw.step();
      auto update = [&](torch::Tensor& w, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& g, double wd) {
        m = st.beta1 * m + (1 - st.beta1) * g;
        v = st.beta2 * v + (1 - st.beta2) * g * g;
        const torch::Tensor m_hat = m / (1 - std::pow(st.beta1, t)), v_hat = v / (1 - std::pow(st.beta2, t));
        w = w * (1 - lr * wd) - lr * m_hat / (v_hat.sqrt() + st.eps);
      };
      update(w_ref, m_w, v_w, gw, st.weight_decay);
      update(bias_ref, m_b, v_b, gb, 0.0);
    }
    const double tol = dtype == torch::kDouble ? 1e-13 : 1e-5;
    EXPECT_LE((W.detach().to(torch::kDouble) - w_ref).abs().max().item<double>(), tol) << dtype;
    EXPECT_LE((b.detach().to(torch::kDouble) - bias_ref).abs().max().item<double>(), tol) << dtype;
    EXPECT_LE((W.detach() - W2.detach()).abs().max().item<double>(), tol) << dtype;
    EXPECT_LE((b.detach() - b2.detach()).abs().max().item<double>(), tol) << dtype;
    EXPECT_TRUE(torch::equal(unused.detach(), torch::ones({2}, dtype)));
  }
}

// Saving AdamW's state after 3 steps and loading it into a fresh optimizer continues bitwise as
// the optimizer that was never interrupted.
TEST(Optim, SavedStateContinuesBitIdentically) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto X = torch::randn({6, 3}, gen), y = torch::randn({6}, gen);
  auto w0 = torch::randn({3}, gen), b0 = torch::randn({1}, gen);
  const AdamWSettings settings{0.05, 0.8, 0.95, 1e-6, 0.1};
  auto one_step = [&](torch::optim::Optimizer& opt, torch::Tensor& w, torch::Tensor& b) {
    opt.zero_grad();
    ((X.matmul(w) + b - y).pow(2).mean()).backward();
    opt.step();
  };
  auto w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
  auto straight = make_adamw({{"w.weight", w}, {"b.bias", b}}, settings);
  for (int i = 0; i < 6; ++i) one_step(*straight, w, b);

  auto w2 = w0.clone().requires_grad_(true), b2 = b0.clone().requires_grad_(true);
  auto first = make_adamw({{"w.weight", w2}, {"b.bias", b2}}, settings);
  for (int i = 0; i < 3; ++i) one_step(*first, w2, b2);
  const std::string path = ::testing::TempDir() + "/flatune_optim_state.pt";
  save_optimizer_state(*first, path);
  auto resumed = make_adamw({{"w.weight", w2}, {"b.bias", b2}}, settings);
  load_optimizer_state(*resumed, path);
  for (int i = 0; i < 3; ++i) one_step(*resumed, w2, b2);
  EXPECT_TRUE(torch::equal(w.detach(), w2.detach()));
  EXPECT_TRUE(torch::equal(b.detach(), b2.detach()));
  std::remove(path.c_str());
  EXPECT_THROW(load_optimizer_state(*resumed, path), Error);  // missing file: a clean error
}

TEST(Sam, ReportsLearningRateAndRestoresWeightsWhenTheSecondPassThrows) {
  Quadratic q;
  torch::optim::SGD sgd({q.W, q.v}, torch::optim::SGDOptions(0.125));
  SamSettings s = settings("sam", 0.2);
  SamStepper stepper(q.params(), sgd, s, 0.0);
  EXPECT_DOUBLE_EQ(stepper.step([&] { return q.loss(); }).lr, 0.125);
  auto W0 = q.W.detach().clone(), v0 = q.v.detach().clone();
  int pass = 0;
  EXPECT_THROW(stepper.step([&] {
    if (pass++ == 1) throw Error("closure", "second pass failed");
    return q.loss();
  }),
               Error);
  EXPECT_TRUE(torch::equal(q.W.detach(), W0));
  EXPECT_TRUE(torch::equal(q.v.detach(), v0));
}
