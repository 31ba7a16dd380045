// The Llama-family decoder against reference logits made outside the project, finite
// differences, and its own full forward (KV cache, batching, packing, LoRA).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "device_util.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/json.h"
#include "flatune/io/safetensors.h"
#include "flatune/model/cross_entropy_rows.h"
#include "flatune/model/generate.h"
#include "flatune/model/llama.h"
#include "flatune/model/loss.h"
#include "flatune/model/rms_norm.h"
#include "flatune/model/rope.h"
#include "flatune/model/shared_cast.h"
#include "flatune/model/swiglu.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::test_device;
using flatune::testing::testdata;

namespace {

std::map<std::string, torch::Tensor> read_vectors(const std::string& dir) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, t] : read_safetensors(dir + "/vectors.safetensors")) out[name] = t;
  return out;
}

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.rms_norm_eps = 1e-6;
  c.attention_bias = true;
  c.initializer_range = 0.3;  // large enough that every path matters
  return c;
}

torch::Tensor longs(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); }

torch::Tensor forward_logits(LlamaForCausalLM& m, const torch::Tensor& ids) {
  ForwardInput in;
  in.input_ids = ids;
  return m->forward(in);
}

}  // namespace

class ReferenceModel : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceModel, LogitsAndLossMatchReference) {
  const std::string rel = "models/" + GetParam();
  FLATUNE_REQUIRE_TESTDATA(rel);
  const std::string dir = testdata(rel);
  auto model = load_llama(dir);
  model->eval();
  auto v = read_vectors(dir);
  torch::NoGradGuard ng;
  auto logits = forward_logits(model, v.at("input_ids"));
  EXPECT_LE((logits - v.at("logits")).abs().max().item<double>(), 1e-4);
  auto short_logits = forward_logits(model, v.at("short_input_ids"));
  EXPECT_LE((short_logits - v.at("short_logits")).abs().max().item<double>(), 1e-4);
  double expected = read_json_file(dir + "/expected.json").at("loss").get<double>();
  double loss = causal_lm_loss(logits, v.at("labels")).item<double>();
  EXPECT_NEAR(loss, expected, 1e-5 * std::abs(expected));
}

INSTANTIATE_TEST_SUITE_P(Testdata, ReferenceModel,
                         ::testing::Values("llama-mha", "llama-gqa", "llama-bias", "qwen2-tied", "llama3-rope"));

TEST(Model, HfParameterNames) {
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  std::set<std::string> names;
  for (auto& [n, t] : m->weights()) names.insert(n);
  for (const char* n : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                        "model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.o_proj.bias",
                        "model.layers.1.mlp.down_proj.weight", "model.layers.0.input_layernorm.weight",
                        "model.layers.0.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_EQ(static_cast<int64_t>(names.size()), 2 + 2 * 13 + 1);
}

TEST(Model, LoadRejectsWrongShapeAndMissingTensor) {
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  auto w = m->weights();
  auto bad = w;
  bad[1].second = torch::zeros({3, 3});
  try {
    m->load_weights(bad, "dir/model.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), "dir/model.safetensors");
    EXPECT_NE(std::string(e.what()).find(w[1].first), std::string::npos) << e.what();
  }
  auto missing = w;
  missing.pop_back();
  EXPECT_THROW(m->load_weights(missing, "x"), Error);
  auto extra = w;
  extra.emplace_back("model.layers.9.mlp.up_proj.weight", torch::zeros({1}));
  EXPECT_THROW(m->load_weights(extra, "x"), Error);
}

// d loss / d theta in float64 against central differences, for every kind of parameter.
TEST(Model, GradientsMatchFiniteDifferences) {
  LlamaConfig c = tiny_config();
  c.tie_word_embeddings = false;
  LlamaForCausalLM m(c);
  m->init_weights(7);
  m->to(test_device(), torch::kDouble);
  auto ids = torch::tensor({{1, 5, 9, 2, 30, 11, 4}, {3, 3, 8, 21, 7, 0, 36}}, torch::kLong);
  auto labels = ids.clone();
  labels[1][5] = -100;
  auto loss_at = [&]() { return causal_lm_loss(forward_logits(m, ids), labels); };
  m->zero_grad();
  loss_at().backward();
  const double h = 1e-6;
  int checked = 0;
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"}) {
    torch::Tensor p = m->named_parameters()[name];
    auto flat = p.view({-1});
    auto grad = p.grad().view({-1});
    for (int64_t idx : {int64_t(0), flat.numel() / 3, flat.numel() - 1}) {
      torch::NoGradGuard ng;
      double orig = flat[idx].item<double>();
      flat[idx] = orig + h;
      double up = loss_at().item<double>();
      flat[idx] = orig - h;
      double down = loss_at().item<double>();
      flat[idx] = orig;
      double fd = (up - down) / (2 * h);
      double an = grad[idx].item<double>();
      EXPECT_NEAR(an, fd, 1e-6 + 1e-5 * std::abs(fd)) << name << "[" << idx << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 36);
}

// The fused head + loss: the gradient of Σ -log softmax(h Wᵀ)[y] in float64 against central
// differences of the plain formula, with chunks of 2 rows over 5 rows (a ragged last chunk), the
// weight's gradient summed over two groups of chunks.
TEST(FusedLoss, GradientMatchesFiniteDifferences) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto h = torch::randn({5, 6}, gen, torch::kDouble).requires_grad_(true);
  auto w = torch::randn({11, 6}, gen, torch::kDouble).requires_grad_(true);
  auto y = longs({0, 10, 3, 3, 7});
  FusedLossOptions o;
  o.chunk_rows = 2;
  o.grad_w_rows = 4;  // the weight's gradient from two groups: 2 chunks, then the ragged one
  torch::Tensor rows;
  auto loss = linear_cross_entropy_sum(h, w, y, &rows, o);
  // A non-unit upstream gradient must scale both results. The gradients are handed over once:
  // backward again through the retained graph is a clear error, not gradients scaled twice.
  (loss * 0.5).backward({}, /*retain_graph=*/true);
  EXPECT_THROW((loss * 0.5).backward(), c10::Error);
  auto plain = [&](const torch::Tensor& hh, const torch::Tensor& ww) {
    auto z = torch::mm(hh, ww.t());
    return (z.logsumexp(1) - z.gather(1, y.unsqueeze(1)).squeeze(1)).sum().item<double>();
  };
  torch::NoGradGuard ng;
  EXPECT_NEAR(loss.item<double>(), plain(h, w), 1e-12);
  auto z = torch::mm(h, w.t());
  EXPECT_LE((rows - (z.logsumexp(1) - z.gather(1, y.unsqueeze(1)).squeeze(1))).abs().max().item<double>(), 1e-12);
  const double eps = 1e-6;
  for (auto* t : {&h, &w}) {
    auto flat = t->detach().view({-1});
    auto grad = t->grad().view({-1});
    for (int64_t i = 0; i < flat.numel(); i += 4) {
      double orig = flat[i].item<double>();
      flat[i] = orig + eps;
      double up = plain(h, w);
      flat[i] = orig - eps;
      double down = plain(h, w);
      flat[i] = orig;
      EXPECT_NEAR(grad[i].item<double>(), 0.5 * (up - down) / (2 * eps), 1e-7)
          << (t == &h ? "h" : "w") << "[" << i << "]";
    }
  }
}

// With default options the fused loss never holds the logit gradients of more than half the rows
// at once (it held all of them whenever they fitted in 32 MiB: the whole [N, V] logits the chunks
// are there to avoid), and the groups' weight gradients add up to the plain formula's.
TEST(FusedLoss, DefaultGroupsHoldAtMostHalfTheRowsLogitGradients) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const int64_t N = 2048, V = 1000, H = 8;  // fp32 logits 8 MB: below 32 MiB; 4 chunks of 512
  auto h = torch::randn({N, H}, gen, torch::kFloat).requires_grad_(true);
  auto w = torch::randn({V, H}, gen, torch::kFloat).requires_grad_(true);
  auto y = torch::randint(0, V, {N}, gen, torch::kLong);
  static compat::CountingCpuAllocator counter(c10::GetCPUAllocator());
  c10::Allocator* const plain_allocator = c10::GetCPUAllocator();
  compat::install_cpu_allocator(&counter);
  const int64_t live_before = counter.live();
  counter.reset_peak();
  torch::Tensor loss = linear_cross_entropy_sum(h, w, y, nullptr, FusedLossOptions{});
  const int64_t transient = counter.peak() - live_before;
  compat::install_cpu_allocator(plain_allocator);
  const int64_t logits_bytes = N * V * static_cast<int64_t>(sizeof(float));
  // Half the logits, plus the gradients of h and w and the rows' losses (about 100 kB).
  EXPECT_LE(transient, logits_bytes / 2 + (int64_t{1} << 19)) << "bytes alive at once in the forward";
  EXPECT_GE(transient, logits_bytes / 2) << "the product's inner dimension: whole chunks, half the rows";
  loss.backward();
  auto h2 = h.detach().clone().requires_grad_(true), w2 = w.detach().clone().requires_grad_(true);
  auto z = torch::mm(h2, w2.t());
  auto want = (z.logsumexp(1) - z.gather(1, y.unsqueeze(1)).squeeze(1)).sum();
  want.backward();
  EXPECT_NEAR(loss.item<double>(), want.item<double>(), 1e-5 * std::abs(want.item<double>()));
  EXPECT_LE((w.grad() - w2.grad()).abs().max().item<double>(), 1e-4);
  EXPECT_LE((h.grad() - h2.grad()).abs().max().item<double>(), 1e-4);
}

// Under bf16 autocast the head's products run in bf16 while the gradients land in the fp32
// inputs' dtype, close to the float64 gradient of the bf16-rounded inputs, over several chunks
// (the weight gradient summed over two groups of them in fp32, in blocks of vocabulary rows, the
// last ragged).
TEST(FusedLoss, UnderAutocastGradientsAreFp32AndCloseToTheBf16RoundedInputs) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto h = torch::randn({40, 32}, gen, torch::kFloat).requires_grad_(true);
  auto w = (torch::randn({300, 32}, gen, torch::kFloat) * 0.3).requires_grad_(true);
  auto y = torch::randint(0, 300, {40}, gen, torch::kLong);
  FusedLossOptions o;
  o.chunk_rows = 18;          // 3 chunks, the last ragged
  o.grad_w_rows = 36;         // the weight's gradient from two groups: 2 chunks, then the ragged one
  o.grad_w_block_rows = 128;  // 3 blocks of the 300 rows
  torch::Tensor loss;
  {
    compat::Bf16Autocast autocast(true, torch::kCPU);
    loss = linear_cross_entropy_sum(h, w, y, nullptr, o);
  }
  loss.backward();
  ASSERT_EQ(h.grad().scalar_type(), torch::kFloat);
  ASSERT_EQ(w.grad().scalar_type(), torch::kFloat);
  auto h64 = h.detach().to(torch::kBFloat16).to(torch::kDouble).requires_grad_(true);
  auto w64 = w.detach().to(torch::kBFloat16).to(torch::kDouble).requires_grad_(true);
  auto z = torch::mm(h64, w64.t());
  (z.logsumexp(1) - z.gather(1, y.unsqueeze(1)).squeeze(1)).sum().backward();
  const std::pair<torch::Tensor, torch::Tensor> grads[] = {{h.grad(), h64.grad()}, {w.grad(), w64.grad()}};
  for (const auto& [got, want] : grads) {
    const double rel = (got.to(torch::kDouble) - want).norm().item<double>() / want.norm().item<double>();
    EXPECT_LT(rel, 2e-2);  // bf16 products: 8 significant bits
  }
}

// On a whole model (tied and untied head, ignored labels, a fully ignored row) the fused loss
// and every parameter's gradient equal forward() + causal_lm_loss_sum in float64; the
// per-token losses equal the unreduced cross-entropy.
TEST(FusedLoss, EqualsFullLogitsLossOnModel) {
  for (bool tied : {false, true}) {
    LlamaConfig c = tiny_config();
    c.tie_word_embeddings = tied;
    LlamaForCausalLM m(c);
    m->init_weights(5);
    m->to(torch::kDouble);
    auto ids =
        torch::tensor({{1, 5, 9, 2, 30, 11, 4}, {3, 3, 8, 21, 7, 0, 36}, {2, 4, 6, 8, 10, 12, 14}}, torch::kLong);
    auto labels = ids.clone();
    labels[0][1] = -100;
    labels[0][2] = -100;
    labels[1][5] = -100;
    labels[2].fill_(-100);
    ForwardInput in;
    in.input_ids = ids;
    m->zero_grad();
    auto [ref_sum, ref_n] = causal_lm_loss_sum(m->forward(in), labels);
    ref_sum.backward();
    std::map<std::string, torch::Tensor> ref_grads;
    for (auto& p : m->named_parameters()) ref_grads[p.key()] = p.value().grad().clone();
    m->zero_grad();
    FusedLossOptions o;
    o.chunk_rows = 4;
    torch::Tensor per_token;
    auto [sum, n] = fused_causal_lm_loss_sum(m, in, labels, &per_token, o);
    sum.backward();
    EXPECT_EQ(n, ref_n);
    EXPECT_EQ(n, 4 + 5 + 0);
    EXPECT_NEAR(sum.item<double>(), ref_sum.item<double>(), 1e-12) << "tied " << tied;
    for (auto& p : m->named_parameters())
      EXPECT_LE((p.value().grad() - ref_grads[p.key()]).abs().max().item<double>(), 1e-12)
          << p.key() << " tied " << tied;
    torch::NoGradGuard ng;
    auto logits = m->forward(in).narrow(1, 0, 6).reshape({-1, c.vocab_size});
    auto expected = torch::nn::functional::cross_entropy(
        logits, labels.narrow(1, 1, 6).reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kNone));
    EXPECT_LE((per_token.reshape({-1}) - expected).abs().max().item<double>(), 1e-12);
  }
}

// sam-subset's first pass takes the parameters off the subset out of the graph
// (requires_grad off): the subset's gradients and the loss must be those of the full backward,
// through the fused loss (tied head included, whose weight then needs no gradient) and through
// checkpointed layers.
TEST(Model, WeightsWithoutGradientLeaveTheOthersGradientsAsTheyWere) {
  for (bool tied : {false, true})
    for (bool checkpoint : {false, true}) {
      LlamaConfig c = tiny_config();
      c.tie_word_embeddings = tied;
      LlamaForCausalLM m(c);
      m->init_weights(8);
      m->to(test_device(), torch::kDouble);
      m->set_checkpoint_activations(checkpoint);
      ForwardInput in;
      in.input_ids = torch::tensor({{1, 5, 9, 2, 30, 11, 4}, {3, 3, 8, 21, 7, 0, 36}}, torch::kLong);
      auto loss_and_grads = [&] {
        m->zero_grad();
        auto sum = fused_causal_lm_loss_sum(m, in, in.input_ids).first;
        sum.backward();
        std::map<std::string, torch::Tensor> grads;
        for (auto& p : m->named_parameters())
          if (p.value().grad().defined()) grads[p.key()] = p.value().grad().clone();
        return std::make_pair(sum.detach(), grads);
      };
      auto [full_loss, full] = loss_and_grads();
      auto in_subset = [](const std::string& name) { return name.find("layers.1.mlp.") != std::string::npos; };
      for (auto& p : m->named_parameters())
        if (!in_subset(p.key())) p.value().set_requires_grad(false);
      auto [subset_loss, subset] = loss_and_grads();
      const std::string what = std::string("tied ") + (tied ? "1" : "0") + " checkpoint " + (checkpoint ? "1" : "0");
      EXPECT_NEAR(subset_loss.item<double>(), full_loss.item<double>(), 1e-12) << what;
      EXPECT_EQ(subset.size(), 3u) << what;  // gate, up, down of layer 1; no other gradient
      for (auto& [name, g] : subset) {
        EXPECT_TRUE(in_subset(name)) << name << " " << what;
        EXPECT_LE((g - full.at(name)).abs().max().item<double>(), 1e-12) << name << " " << what;
      }
    }
}

// The fused loss's row kernel against the formula in float64 on the same values: widths that are
// and are not whole vectors of lanes, labels at both ends, rows whose logits span a wide range.
// float64 to rounding; float32 within a few ulp (its own exp, a product by 1/sum); bf16 gradients
// within bf16's rounding of the exact ones.
TEST(CrossEntropyRows, MatchesTheFormulaInFloat64) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(21);
  for (const int64_t V : {5, 117, 2053}) {
    auto z64 = torch::randn({6, V}, gen, torch::kDouble) * 4;
    z64[1].mul_(10);
    z64[4].add_(300);  // far from 0: only the maximum keeps the exponentials in range
    auto y = longs({0, V - 1, 2, V / 2, 1, V - 1});
    for (const auto type : {torch::kDouble, torch::kFloat, torch::kBFloat16}) {
      auto z = z64.to(type);
      const auto zd = z.to(torch::kDouble);  // the values the kernel sees
      const auto want_rows = zd.logsumexp(1) - zd.gather(1, y.unsqueeze(1)).squeeze(1);
      auto want_grad = zd.softmax(1);
      want_grad.scatter_add_(1, y.unsqueeze(1), torch::full({6, 1}, -1.0, torch::kDouble));
      const auto row_type = type == torch::kDouble ? torch::kDouble : torch::kFloat;
      // Without the gradient the logits stay as they were.
      auto before = z.clone();
      auto rows = torch::empty({6}, torch::TensorOptions().dtype(row_type));
      cross_entropy_rows(z, y, rows, /*write_gradient=*/false);
      EXPECT_TRUE(torch::equal(z, before)) << type;
      const double row_tol = type == torch::kDouble ? 1e-12 : 1e-6;
      EXPECT_LE(((rows.to(torch::kDouble) - want_rows).abs() / want_rows.abs().clamp_min(1)).max().item<double>(),
                row_tol)
          << type << " V " << V;
      auto rows_g = torch::empty({6}, torch::TensorOptions().dtype(row_type));
      cross_entropy_rows(z, y, rows_g, /*write_gradient=*/true);
      EXPECT_TRUE(torch::equal(rows_g, rows)) << type;
      const auto err = (z.to(torch::kDouble) - want_grad).abs();
      const auto allowed = type == torch::kDouble  ? torch::full_like(err, 1e-14)
                           : type == torch::kFloat ? want_grad.abs() * 5e-7 + 1e-12
                                                   : want_grad.abs() * (1.0 / 256) + 1e-12;
      EXPECT_TRUE((err <= allowed).all().item<bool>())
          << type << " V " << V << " worst excess " << (err - allowed).max().item<double>();
    }
  }
}

// A label outside the vocabulary is an error before anything is written; a NaN logit makes its
// row's loss NaN and leaves the other rows alone.
TEST(CrossEntropyRows, BadLabelThrowsAndNanStaysInItsRow) {
  auto z = torch::randn({3, 40}, torch::kFloat);
  auto rows = torch::zeros({3}, torch::kFloat);
  auto before = z.clone();
  for (const int64_t bad : {int64_t{40}, int64_t{-1}}) {
    EXPECT_THROW(cross_entropy_rows(z, longs({0, bad, 3}), rows, true), c10::Error);
    EXPECT_TRUE(torch::equal(z, before));
  }
  z[1][7] = std::nan("");
  cross_entropy_rows(z, longs({0, 1, 3}), rows, true);
  EXPECT_TRUE(std::isnan(rows[1].item<float>()));
  EXPECT_TRUE(std::isfinite(rows[0].item<float>()) && std::isfinite(rows[2].item<float>()));
  EXPECT_TRUE(torch::isfinite(z[0]).all().item<bool>() && torch::isfinite(z[2]).all().item<bool>());
}

// No counted label: zero, with a graph that backward accepts, as causal_lm_loss_sum.
TEST(FusedLoss, NoCountedLabelIsZero) {
  LlamaForCausalLM m(tiny_config());
  ForwardInput in;
  in.input_ids = torch::tensor({{1, 2, 3}}, torch::kLong);
  auto [sum, n] = fused_causal_lm_loss_sum(m, in, torch::full({1, 3}, -100, torch::kLong));
  EXPECT_EQ(n, 0);
  EXPECT_EQ(sum.item<double>(), 0.0);
  EXPECT_NO_THROW(sum.backward());
}

TEST(Model, KvCacheDecodingMatchesFullForward) {
  LlamaConfig c = tiny_config();
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 2.0;
  LlamaForCausalLM m(c);
  m->init_weights(3);
  m->eval();
  torch::NoGradGuard ng;
  auto ids = torch::randint(0, c.vocab_size, {2, 9}, torch::kLong);
  auto full = forward_logits(m, ids);
  KVCache cache;
  ForwardInput first;
  first.input_ids = ids.narrow(1, 0, 4);
  first.cache = &cache;
  auto out = m->forward(first);
  EXPECT_LE((out - full.narrow(1, 0, 4)).abs().max().item<double>(), 1e-5);
  for (int64_t t = 4; t < 9; ++t) {
    ForwardInput step;
    step.input_ids = ids.narrow(1, t, 1);
    step.cache = &cache;
    auto logits = m->forward(step);
    EXPECT_LE((logits.squeeze(1) - full.select(1, t)).abs().max().item<double>(), 1e-5) << "step " << t;
  }
  EXPECT_EQ(cache.length(), 9);
  // Continuations packed into one row after a cached context (a segment id each, positions
  // restarting after the context) each get their full-forward logits.
  KVCache ctx;
  ForwardInput c1;
  c1.input_ids = ids.narrow(0, 0, 1).narrow(1, 0, 5);
  c1.cache = &ctx;
  m->forward(c1);
  auto conts = torch::stack({longs({4, 7}), longs({11, 12})});
  ForwardInput c2;
  c2.input_ids = conts.reshape({1, 4});
  c2.position_ids = longs({5, 6, 5, 6}).unsqueeze(0);
  c2.segment_ids = longs({0, 0, 1, 1}).unsqueeze(0);
  c2.cache = &ctx;
  auto cl = m->forward(c2)[0];
  for (int64_t b = 0; b < 2; ++b) {
    auto seq = torch::cat({ids[0].narrow(0, 0, 5), conts[b]}).unsqueeze(0);
    auto ref = forward_logits(m, seq).narrow(1, 5, 2);
    EXPECT_LE((cl.narrow(0, 2 * b, 2) - ref[0]).abs().max().item<double>(), 1e-5);
  }
}

TEST(Model, LeftPaddedBatchMatchesSingleRows) {
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  m->init_weights(5);
  m->eval();
  std::vector<std::vector<int64_t>> prompts = {{1, 4, 6, 8, 10, 3}, {1, 20}, {1, 7, 7, 9}};
  GenerateOptions o;
  o.max_new_tokens = 6;
  auto batched = generate(m, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto single = generate(m, {prompts[i]}, o);
    EXPECT_EQ(batched[i], single[0]) << "prompt " << i;
  }
  // Greedy equals the argmax of a full forward at each step.
  std::vector<int64_t> seq = prompts[0];
  for (int64_t tok : batched[0]) {
    torch::NoGradGuard ng;
    auto logits = forward_logits(m, torch::tensor(seq).unsqueeze(0));
    EXPECT_EQ(logits[0][-1].argmax().item<int64_t>(), tok);
    seq.push_back(tok);
  }
  // Stops on EOS; sampling is reproducible from the seed.
  o.eos_ids = {batched[0][2]};
  EXPECT_EQ(generate(m, {prompts[0]}, o)[0].size(), 3u);
  GenerateOptions s;
  s.temperature = 1.0;
  s.top_p = 0.9;
  s.top_k = 10;
  s.seed = 42;
  s.max_new_tokens = 8;
  EXPECT_EQ(generate(m, prompts, s), generate(m, prompts, s));
}

TEST(Model, PackedSegmentsMatchSeparateForwards) {
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  m->init_weights(9);
  torch::NoGradGuard ng;
  auto a = longs({1, 5, 6, 7}), b = longs({1, 9, 8});
  ForwardInput in;
  in.input_ids = torch::cat({a, b}).unsqueeze(0);
  in.segment_ids = longs({0, 0, 0, 0, 1, 1, 1}).unsqueeze(0);
  in.position_ids = longs({0, 1, 2, 3, 0, 1, 2}).unsqueeze(0);
  auto packed = m->forward(in);
  auto la = forward_logits(m, a.unsqueeze(0)), lb = forward_logits(m, b.unsqueeze(0));
  EXPECT_LE((packed.narrow(1, 0, 4) - la).abs().max().item<double>(), 1e-5);
  EXPECT_LE((packed.narrow(1, 4, 3) - lb).abs().max().item<double>(), 1e-5);
}

// The fused attention (at::scaled_dot_product_attention) against the explicit one, in float64
// so that a difference is a bug rather than rounding: every mask flatune builds (none with
// is_causal, left padding, packing, a KV cache with several new tokens and with one), values and
// the gradients of every parameter.
TEST(Attention, SdpaEqualsEagerValuesAndGradients) {
  LlamaConfig c = tiny_config();  // GQA: 4 query heads, 2 key/value heads; biases
  c.rope_scaling.type = "llama3";
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8;
  LlamaForCausalLM m(c);
  m->init_weights(21);
  m->to(torch::kDouble);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  auto ids = torch::randint(0, c.vocab_size, {3, 11}, gen, torch::kLong);
  auto padding = torch::ones({3, 11}, torch::kLong);
  padding[1].narrow(0, 0, 4).zero_();   // left padding
  padding[2].narrow(0, 0, 10).zero_();  // a row with one real token
  // Packed rows as collate_packed lays them out (contiguous runs, padding as segment -1), which
  // sdpa attends span by span, and rows whose ids come back, which need the mask.
  auto segments = torch::tensor({0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2,  //
                                 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                                torch::kLong)
                      .view({3, 11});
  auto returning = torch::tensor({0, 0, 1, 1, 0, 0, 2, 2, 1, 1, 1}, torch::kLong).unsqueeze(0).expand({3, 11});
  struct Case {
    std::string name;
    std::function<ForwardInput()> input;
  };
  std::vector<Case> cases = {
      {"causal",
       [&] {
         ForwardInput in;
         in.input_ids = ids;
         return in;
       }},
      {"left padding",
       [&] {
         ForwardInput in;
         in.input_ids = ids;
         in.attention_mask = padding;
         return in;
       }},
      {"packing",
       [&] {
         ForwardInput in;
         in.input_ids = ids;
         in.segment_ids = segments;
         return in;
       }},
      {"segments that come back",
       [&] {
         ForwardInput in;
         in.input_ids = ids;
         in.segment_ids = returning;
         return in;
       }},
  };
  for (const auto& cs : cases) {
    std::vector<torch::Tensor> out, grads;
    for (AttentionKernel k : {AttentionKernel::eager, AttentionKernel::sdpa}) {
      AttentionKernelScope scope(*m, k);
      m->zero_grad();
      auto logits = m->forward(cs.input());
      // A fixed random weighting of the logits as the loss, so every output matters to the gradients.
      auto w = torch::randn(logits.sizes(), at::make_generator<at::CPUGeneratorImpl>(9), torch::kDouble);
      if (cs.name == "left padding") w = w * padding.unsqueeze(-1).to(torch::kDouble);  // padded rows are arbitrary
      (logits * w).sum().backward();
      out.push_back((logits * (w != 0)).detach());
      torch::Tensor flat;
      for (auto& p : m->parameters())
        flat = flat.defined() ? torch::cat({flat, p.grad().reshape({-1})}) : p.grad().reshape({-1});
      grads.push_back(flat);
    }
    EXPECT_LE((out[0] - out[1]).abs().max().item<double>(), 1e-12) << cs.name;
    EXPECT_LE((grads[0] - grads[1]).abs().max().item<double>(), 1e-10 * grads[0].abs().max().item<double>()) << cs.name;
  }
  // With a KV cache: a context, then 3 new tokens at once, then one at a time.
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> logits;
  for (AttentionKernel k : {AttentionKernel::eager, AttentionKernel::sdpa}) {
    AttentionKernelScope scope(*m, k);
    KVCache cache;
    std::vector<torch::Tensor> parts;
    for (auto [from, len] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {5, 3}, {8, 1}, {9, 1}, {10, 1}}) {
      ForwardInput in;
      in.input_ids = ids.narrow(1, from, len);
      in.cache = &cache;
      parts.push_back(m->forward(in));
    }
    logits.push_back(torch::cat(parts, 1));
  }
  EXPECT_LE((logits[0] - logits[1]).abs().max().item<double>(), 1e-12) << "kv cache";
  ForwardInput whole;
  whole.input_ids = ids;
  EXPECT_LE((logits[1] - m->forward(whole)).abs().max().item<double>(), 1e-12) << "kv cache vs one forward";
}

// The fused kernel in float32, the dtype training runs in, against the explicit path.
TEST(Attention, SdpaEqualsEagerInFloat32) {
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  m->init_weights(22);
  auto ids = torch::randint(0, c.vocab_size, {2, 64}, at::make_generator<at::CPUGeneratorImpl>(5), torch::kLong);
  std::vector<torch::Tensor> out, grads;
  for (AttentionKernel k : {AttentionKernel::eager, AttentionKernel::sdpa}) {
    AttentionKernelScope scope(*m, k);
    m->zero_grad();
    auto logits = forward_logits(m, ids);
    logits.logsumexp(-1).sum().backward();
    out.push_back(logits.detach());
    grads.push_back(m->named_parameters()["model.layers.0.self_attn.q_proj.weight"].grad().clone());
  }
  EXPECT_LE((out[0] - out[1]).abs().max().item<double>(), 1e-4);
  EXPECT_LE((grads[0] - grads[1]).abs().max().item<double>(), 1e-4 * (1 + grads[0].abs().max().item<double>()));
}

TEST(Model, LoraStartsAsNoOpAndMergesExactly) {
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  m->init_weights(11);
  m->eval();
  auto ids = torch::randint(0, c.vocab_size, {2, 6}, torch::kLong);
  torch::Tensor base;
  {
    torch::NoGradGuard ng;
    base = forward_logits(m, ids);
  }
  LoraOptions o;
  o.rank = 2;
  o.alpha = 4;
  o.targets = {"q_proj", "v_proj", "down_proj"};
  m->add_lora(o);
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::equal(forward_logits(m, ids), base));
  auto trainable = m->trainable_parameters();
  EXPECT_EQ(trainable.size(), 2u * 3u * 2u);
  for (auto& [n, t] : trainable) {
    EXPECT_TRUE(n.find(".lora_A.weight") != std::string::npos || n.find(".lora_B.weight") != std::string::npos) << n;
    if (n.find("lora_B") != std::string::npos) t.normal_(0, 0.5);
  }
  auto adapted = forward_logits(m, ids);
  EXPECT_GT((adapted - base).abs().max().item<double>(), 1e-3);
  LlamaForCausalLM merged(c);
  merged->load_weights(m->weights(/*merge_lora=*/true), "merged");
  merged->eval();
  EXPECT_LE((forward_logits(merged, ids) - adapted).abs().max().item<double>(), 1e-5);
  LlamaForCausalLM other(c);
  LoraOptions bad = o;
  bad.targets = {"qkv"};
  EXPECT_THROW(other->add_lora(bad), Error);
}

// bf16 autocast (flatune train --bf16): the loss and gradients stay close to fp32's, gradients
// land in fp32, and a weight changed in place between two autocast regions is seen by the second
// (autocast caches bf16 copies of the weights; a stale copy would repeat the first loss).
TEST(Bf16Autocast, CloseToFp32AndSeesInPlaceWeightChanges) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  const torch::Device dev = test_device();
  auto model = load_llama(testdata("models/llama-gqa"), torch::kFloat32, dev);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  auto ids = torch::randint(0, model->config().vocab_size, {3, 24}, gen, torch::kLong);
  auto params = model->trainable_parameters();
  auto loss_and_grads = [&](bool bf16) {
    model->zero_grad();
    ForwardInput in;
    in.input_ids = ids;
    torch::Tensor loss;
    {
      compat::Bf16Autocast autocast(bf16, dev.type());
      auto [sum, n] = fused_causal_lm_loss_sum(model, in, ids);
      loss = sum / static_cast<double>(n);
    }
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& [name, p] : params) {
      EXPECT_EQ(p.grad().scalar_type(), torch::kFloat) << name;
      g.push_back(p.grad().detach().reshape({-1}).to(torch::kDouble));
    }
    return std::make_pair(loss.item<double>(), torch::cat(g));
  };
  auto [loss32, g32] = loss_and_grads(false);
  auto [loss16, g16] = loss_and_grads(true);
  EXPECT_NE(loss16, loss32);  // bf16 really ran
  EXPECT_LT(std::abs(loss16 - loss32), 1e-2 * loss32);
  const double cosine = (g16 * g32).sum().item<double>() / (g16.norm().item<double>() * g32.norm().item<double>());
  EXPECT_GT(cosine, 0.99);
  EXPECT_LT((g16 - g32).norm().item<double>(), 0.1 * g32.norm().item<double>());
  {
    torch::NoGradGuard ng;
    for (auto& [name, p] : params)
      if (name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos) p.mul_(3.0);
  }
  auto [loss32b, g32b] = loss_and_grads(false);
  auto [loss16b, g16b] = loss_and_grads(true);
  EXPECT_GT(std::abs(loss32b - loss32),
            20 * std::abs(loss16 - loss32));  // the change matters more than bf16's rounding
  EXPECT_LT(std::abs(loss16b - loss32b), 1e-2 * loss32b);
}

// Under bf16 autocast on the CPU attention over at most 512 keys runs as plain products with a
// bf16 softmax, over more in the flash kernel (compat::prefer_unfused_attention). Both stay close
// to fp32 on the positions a long and a short row share; a left-padded batch, whose padding
// queries see no key, stays finite forward and backward (fp32's lowest mask value would be -inf in
// bf16) and matches its rows run alone. The products round the scores to bf16 (as transformers'
// eager attention does under autocast) where the flash kernel keeps them in fp32: on this model's
// sharp attention (init 0.3) that measured 0.28 against flash's 0.13 off fp32's logits, which
// reach 4.6; hence 10% of the largest logit, where a wrong mask or position is off by the whole.
TEST(Bf16Autocast, ShortAndLongWindowsAndLeftPaddingStayCloseToFp32) {
  const torch::Device dev = test_device();
  LlamaConfig c = tiny_config();
  LlamaForCausalLM m(c);
  m->init_weights(3);
  m->to(dev);
  m->eval();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const torch::Tensor long_ids = torch::randint(0, c.vocab_size, {1, 600}, gen, torch::kLong);
  const int64_t shared = 300;
  auto logits = [&](const torch::Tensor& ids, bool bf16) {
    compat::Bf16Autocast autocast(bf16, dev.type());
    return forward_logits(m, ids).to(torch::kFloat).cpu();
  };
  {
    torch::NoGradGuard ng;
    const torch::Tensor ref = logits(long_ids, false).narrow(1, 0, shared);
    const double scale = ref.abs().max().item<double>();
    const torch::Tensor long16 = logits(long_ids, true).narrow(1, 0, shared);
    const torch::Tensor short16 = logits(long_ids.narrow(1, 0, shared), true);
    EXPECT_GT((long16 - ref).abs().max().item<double>(), 0.0);  // bf16 really ran
    EXPECT_LT((long16 - ref).abs().max().item<double>(), 0.1 * scale);
    EXPECT_LT((short16 - ref).abs().max().item<double>(), 0.1 * scale);
  }
  const std::vector<std::vector<int64_t>> rows = {{1, 4, 6, 8, 10, 3}, {1, 20}, {1, 7, 7, 9}};
  const int64_t width = 6;
  torch::Tensor ids = torch::zeros({3, width}, torch::kLong), mask = torch::zeros({3, width}, torch::kLong);
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t n = static_cast<int64_t>(rows[r].size());
    ids[r].narrow(0, width - n, n).copy_(longs(rows[r]));
    mask[r].narrow(0, width - n, n).fill_(1);
  }
  ForwardInput padded;
  padded.input_ids = ids;
  padded.attention_mask = mask;
  torch::Tensor batched;
  {
    compat::Bf16Autocast autocast(true, dev.type());
    batched = m->forward(padded).to(torch::kFloat);
  }
  EXPECT_TRUE(torch::isfinite(batched).all().item<bool>());
  (batched * mask.to(dev).unsqueeze(-1)).sum().backward();
  for (auto& [name, p] : m->trainable_parameters()) EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>()) << name;
  batched = batched.detach().cpu();
  torch::NoGradGuard ng;
  for (size_t r = 0; r < rows.size(); ++r) {
    const int64_t n = static_cast<int64_t>(rows[r].size());
    const torch::Tensor alone32 = logits(longs(rows[r]).unsqueeze(0), false)[0];
    const double scale = alone32.abs().max().item<double>();
    EXPECT_LT((batched[r].narrow(0, width - n, n) - alone32).abs().max().item<double>(), 0.1 * scale) << "row " << r;
  }
}

// Tolerances of a fused op's check: its values, its gradients, its Hessian-vector products.
struct FusedOpTolerances {
  double value, grad, second_order;
};

// A fused CPU op of two float64 inputs (a, b) against its ordinary-op formulation: its values, its
// own backward (no graph of the gradient asked for), the Hessian-vector products of Σ up · y (its
// backward is differentiable), and its gradient against central differences at every
// `stride`-th element of each input.
void expect_fused_matches_ordinary_ops(
    const std::string& node, const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& fused_op,
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& plain_op, torch::Tensor a,
    torch::Tensor b, at::Generator& gen, FusedOpTolerances tol, int64_t stride) {
  a.requires_grad_(true);
  b.requires_grad_(true);
  auto fused = fused_op(a, b);
  auto plain = plain_op(a, b);
  auto up = torch::randn(fused.sizes(), gen, torch::kDouble);
  ASSERT_TRUE(fused.grad_fn() && fused.grad_fn()->name().find(node) != std::string::npos);
  EXPECT_LE((fused - plain).abs().max().item<double>(), tol.value);
  auto gf = torch::autograd::grad({fused}, {a, b}, {up}, /*retain_graph=*/true);
  auto gp = torch::autograd::grad({plain}, {a, b}, {up}, /*retain_graph=*/true, /*create_graph=*/true);
  for (int i = 0; i < 2; ++i) EXPECT_LE((gf[i] - gp[i]).abs().max().item<double>(), tol.grad) << i;

  // Second order: d/d(a, b) of (grad · v).
  auto gf2 = torch::autograd::grad({fused}, {a, b}, {up}, /*retain_graph=*/true, /*create_graph=*/true);
  auto va = torch::randn(a.sizes(), gen, torch::kDouble), vb = torch::randn(b.sizes(), gen, torch::kDouble);
  auto hf = torch::autograd::grad({(gf2[0] * va).sum() + (gf2[1] * vb).sum()}, {a, b});
  auto hp = torch::autograd::grad({(gp[0] * va).sum() + (gp[1] * vb).sum()}, {a, b});
  for (int i = 0; i < 2; ++i) EXPECT_LE((hf[i] - hp[i]).abs().max().item<double>(), tol.second_order) << i;

  torch::NoGradGuard ng;
  const double h = 1e-6;
  auto objective = [&] { return (fused_op(a, b) * up).sum().item<double>(); };
  for (int t = 0; t < 2; ++t) {
    auto flat = (t == 0 ? a : b).detach().view({-1});
    auto grad = gf[t].view({-1});
    for (int64_t i = 0; i < flat.numel(); i += stride) {
      const double orig = flat[i].item<double>();
      flat[i] = orig + h;
      const double hi = objective();
      flat[i] = orig - h;
      const double lo = objective();
      flat[i] = orig;
      EXPECT_NEAR(grad[i].item<double>(), (hi - lo) / (2 * h), 1e-7) << (t == 0 ? "a[" : "b[") << i << "]";
    }
  }
}

// The fused CPU RMSNorm against its ordinary-op formulation and against central differences, in
// float64 over rows that fill neither the kernel's 16-lane sums (37 features) nor its 16-row
// tasks (21 rows); its gradient is itself differentiable (Hessian-vector products equal the
// ordinary ops').
TEST(RmsNorm, FusedMatchesOrdinaryOpsFiniteDifferencesAndSecondOrder) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto x = torch::randn({3, 7, 37}, gen, torch::kDouble);
  auto w = 1 + 0.3 * torch::randn({37}, gen, torch::kDouble);
  const double eps = 1e-6;
  expect_fused_matches_ordinary_ops(
      "FusedRmsNorm", [&](const torch::Tensor& a, const torch::Tensor& b) { return rms_norm(a, b, eps); },
      [&](const torch::Tensor& a, const torch::Tensor& b) { return rms_norm_reference(a, b, eps); }, x, w, gen,
      {1e-13, 1e-12, 1e-11}, 29);
}

// In float32 the fused norm is within rounding of the ordinary ops, bit for bit the same on one
// thread as on several; a bf16 weight takes the ordinary ops.
TEST(RmsNorm, Float32CloseToOrdinaryOpsThreadIndependentAndBf16TakesTheOrdinaryOps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = (3 * torch::randn({5, 9, 64}, gen)).requires_grad_(true);
  auto w = torch::randn({64}, gen).requires_grad_(true);
  auto up = torch::randn({5, 9, 64}, gen);
  auto grads = [&](bool fused) {
    auto y = fused ? rms_norm(x, w, 1e-5) : rms_norm_reference(x, w, 1e-5);
    auto g = torch::autograd::grad({y}, {x, w}, {up});
    return std::vector<torch::Tensor>{y.detach(), g[0], g[1]};
  };
  auto f = grads(true), p = grads(false);
  for (int i = 0; i < 3; ++i)
    EXPECT_LE((f[i] - p[i]).abs().max().item<double>(), 2e-5 * (1 + p[i].abs().max().item<double>())) << i;
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto one = grads(true);
  at::set_num_threads(threads);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(one[i], f[i])) << i;
  // A frozen weight (LoRA): no weight gradient is formed, the input's is the same.
  auto frozen = torch::autograd::grad({rms_norm(x, w.detach(), 1e-5)}, {x}, {up});
  EXPECT_TRUE(torch::equal(frozen[0], f[1]));

  auto xb = x.detach().to(torch::kBFloat16), wb = w.detach().to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(rms_norm(xb, wb, 1e-5), rms_norm_reference(xb, wb, 1e-5)));
}

// The fused CPU RoPE against its ordinary-op formulation, bit for bit: q laid out as the
// projections leave it ([B, T, heads, D] transposed), cos and sin whose halves differ (so the
// backward's transpose is checked, not assumed symmetric) and broadcast over the batch; half of D
// odd (a vector loop's tail) and more rows than one parallel task. bf16 q with float32 cos is
// computed in float32 and rounded once, forward and backward.
TEST(Rope, FusedMatchesOrdinaryOpsBitForBit) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(23);
  for (auto [B, T, heads, D, cos_batch] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{2, 37, 3, 10, 2}, {3, 100, 2, 8, 1}}) {
    for (auto dtype : {torch::kDouble, torch::kFloat, torch::kBFloat16}) {
      const auto compute = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
      auto x = torch::randn({B, T, heads, D}, gen, compute).to(dtype).transpose(1, 2).requires_grad_(true);
      auto cos = torch::randn({cos_batch, 1, T, D}, gen, compute),
           sin = torch::randn({cos_batch, 1, T, D}, gen, compute);
      auto up = torch::randn({B, heads, T, D}, gen, compute).to(dtype);
      auto y = apply_rope(x, cos, sin);
      ASSERT_TRUE(y.grad_fn() && y.grad_fn()->name().find("FusedRope") != std::string::npos);
      EXPECT_EQ(y.scalar_type(), dtype);
      auto gx = torch::autograd::grad({y}, {x}, {up})[0];
      // The reference in the compute dtype, rounded once.
      auto x_c = x.detach().to(compute).requires_grad_(true);
      auto y_ref = apply_rope_reference(x_c, cos, sin);
      auto gx_ref = torch::autograd::grad({y_ref}, {x_c}, {up.to(compute)})[0];
      const std::string what = std::string(c10::toString(dtype)) + " D=" + std::to_string(D);
      EXPECT_TRUE(torch::equal(y, y_ref.to(dtype))) << what;
      EXPECT_TRUE(torch::equal(gx, gx_ref.to(dtype))) << what;
      EXPECT_TRUE(torch::equal(apply_rope_reference(x, cos, sin), y)) << what;  // the reference's own cast
    }
  }
  // bf16 cos (a bf16 model) rounds after each op, as transformers does there: the ordinary ops.
  auto xb = torch::randn({1, 2, 3, 4}, gen).to(torch::kBFloat16);
  auto cb = torch::randn({1, 1, 3, 4}, gen).to(torch::kBFloat16);
  EXPECT_TRUE(
      torch::equal(apply_rope(xb, cb, cb), xb * cb + torch::cat({-xb.narrow(-1, 2, 2), xb.narrow(-1, 0, 2)}, -1) * cb));
}

// The fused RoPE's gradient against central differences in float64, and its gradient's own
// gradient (the backward is linear in the incoming gradient: d(grad·v)/d(up) = rope(v)).
TEST(Rope, FusedGradientFiniteDifferencesAndSecondOrder) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(29);
  auto x = torch::randn({2, 5, 3, 6}, gen, torch::kDouble).transpose(1, 2).requires_grad_(true);
  auto cos = torch::randn({2, 1, 5, 6}, gen, torch::kDouble), sin = torch::randn({2, 1, 5, 6}, gen, torch::kDouble);
  auto up = torch::randn({2, 3, 5, 6}, gen, torch::kDouble).requires_grad_(true);
  // The kernel's backward (no graph of the gradient asked for), then the recorded one.
  auto gx = torch::autograd::grad({apply_rope(x, cos, sin)}, {x}, {up})[0];
  auto gx_graph =
      torch::autograd::grad({apply_rope(x, cos, sin)}, {x}, {up}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  EXPECT_LE((gx_graph - gx).abs().max().item<double>(), 1e-12);
  auto v = torch::randn(x.sizes(), gen, torch::kDouble);
  auto second = torch::autograd::grad({(gx_graph * v).sum()}, {up})[0];
  EXPECT_LE((second - apply_rope_reference(v, cos, sin)).abs().max().item<double>(), 1e-12);

  torch::NoGradGuard ng;
  const double h = 1e-6;
  auto flat = x.detach();
  for (int64_t i = 0; i < 2 * 3 * 5 * 6; i += 7) {
    const int64_t b = i / 90, head = i / 30 % 3, t = i / 6 % 5, d = i % 6;
    auto at = flat[b][head][t][d];
    const double orig = at.item<double>();
    auto objective = [&] { return (apply_rope(x, cos, sin) * up).sum().item<double>(); };
    at.fill_(orig + h);
    const double hi = objective();
    at.fill_(orig - h);
    const double lo = objective();
    at.fill_(orig);
    EXPECT_NEAR(gx[b][head][t][d].item<double>(), (hi - lo) / (2 * h), 1e-7) << i;
  }
}

// The fused CPU SwiGLU against its ordinary-op formulation and central differences in float64
// (a length that fills no vector and more elements than one parallel task), and its gradient's
// own gradient (Hessian-vector products equal the ordinary ops').
TEST(Swiglu, FusedMatchesOrdinaryOpsFiniteDifferencesAndSecondOrder) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(31);
  auto g = 3 * torch::randn({3, 4099}, gen, torch::kDouble);
  auto u = torch::randn({3, 4099}, gen, torch::kDouble);
  expect_fused_matches_ordinary_ops("FusedSwiglu", swiglu, swiglu_reference, g, u, gen, {1e-14, 1e-13, 1e-12}, 611);
}

// float32 within a few ulp of ATen's silu and products (the kernel's own exponential); bf16 with
// the same rounding points as the ordinary bf16 ops: equal but for the rare value an ulp of the
// exponential moves across a bf16 rounding boundary, and then by one bf16 ulp. Gates cover
// silu's flat tails and the exponential's clamp.
TEST(Swiglu, Float32AndBf16CloseToOrdinaryOps) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(37);
  auto g32 =
      torch::cat({4 * torch::randn({50000}, gen), torch::tensor({-200.f, -90.f, -88.5f, 0.f, 88.5f, 90.f, 200.f})});
  auto u32 = torch::randn(g32.sizes(), gen);
  auto up32 = torch::randn(g32.sizes(), gen);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    auto g = g32.to(dtype).requires_grad_(true), u = u32.to(dtype).requires_grad_(true);
    auto up = up32.to(dtype);
    auto run = [&](bool fused) {
      auto y = fused ? swiglu(g, u) : swiglu_reference(g, u);
      auto grads = torch::autograd::grad({y}, {g, u}, {up});
      return std::vector<torch::Tensor>{y.detach(), grads[0], grads[1]};
    };
    auto f = run(true), p = run(false);
    for (int i = 0; i < 3; ++i) {
      auto a = f[i].to(torch::kDouble), b = p[i].to(torch::kDouble);
      ASSERT_TRUE(torch::isfinite(a).all().item<bool>()) << i;
      auto err = (a - b).abs();
      auto scale = b.abs() + 1e-20;  // silu(−88.5) and below: values under 1e-36
      if (dtype == torch::kFloat) {
        // Eight ulp of each value; the gate's gradient, σ·(1 + g·(1 − σ))·(dy·u), cancels near
        // g = −1.28, so there of the terms it is made of: |dy·u|·(1 + |g|).
        if (i == 1) scale = (up32 * u32).abs().to(torch::kDouble) * (1 + g32.abs().to(torch::kDouble)) + 1e-20;
        EXPECT_LE((err / scale).max().item<double>(), 1e-6) << "float32, output " << i;
      } else {
        const double differing = (err > 0).to(torch::kDouble).mean().item<double>();
        EXPECT_LE(differing, 0.01) << "bf16, output " << i;
        EXPECT_LE((err / scale).max().item<double>(), 1.0 / 128) << "bf16, output " << i;  // one bf16 ulp
      }
    }
  }
}

// Under bf16 autocast three projections of one float32 input through one shared cast: the same
// products as three separate casts, and the input's gradient their three gradients summed in
// float32 (within float32 rounding of the separate casts' sum, whose order autograd picks); the
// weights' gradients unchanged. Without autocast the input itself; without a graph one cast.
TEST(SharedCast, EqualsSeparateAutocastCasts) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(41);
  auto x0 = torch::randn({2, 33, 48}, gen);
  std::vector<torch::Tensor> w, up;
  for (int k = 0; k < 3; ++k) {
    w.push_back(torch::randn({40, 48}, gen).requires_grad_(true));
    up.push_back(torch::randn({2, 33, 40}, gen));
  }
  auto run = [&](bool shared) {
    auto x = x0.clone().requires_grad_(true);
    // Not a leaf, as a norm's output: autocast caches the cast of a leaf that requires a gradient
    // (so a leaf is cast once anyway, its gradients summed in bf16).
    auto h = x * 1.0f;
    std::vector<torch::Tensor> ys;
    {
      compat::Bf16Autocast autocast(true, torch::kCPU);
      const auto in = shared ? shared_autocast_input(h, 3) : std::vector<torch::Tensor>{h, h, h};
      for (int k = 0; k < 3; ++k) ys.push_back(torch::nn::functional::linear(in[k], w[k]));
    }
    torch::Tensor loss = torch::zeros({});
    for (int k = 0; k < 3; ++k) loss = loss + (ys[k].to(torch::kFloat) * up[k]).sum();
    auto g = torch::autograd::grad({loss}, {x, w[0], w[1], w[2]});
    g.insert(g.end(), ys.begin(), ys.end());
    return g;
  };
  auto shared = run(true), separate = run(false);
  EXPECT_EQ(shared[0].scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(shared[0], separate[0], 1e-6, 1e-6));
  for (size_t i = 1; i < shared.size(); ++i) EXPECT_TRUE(torch::equal(shared[i], separate[i])) << i;
  // The float32 sum of the bf16 gradients: against their float64 sum.
  EXPECT_LE((shared[0] - separate[0]).abs().max().item<double>(), 1e-5 * separate[0].abs().max().item<double>());

  auto plain = shared_autocast_input(x0, 2);
  EXPECT_TRUE(plain[0].is_same(x0) && plain[1].is_same(x0));
  compat::Bf16Autocast autocast(true, torch::kCPU);
  auto once = shared_autocast_input(x0, 2);
  EXPECT_EQ(once[0].scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(once[0].is_same(once[1]));
}

// Activation checkpointing recomputes each layer in the backward pass: the gradients of every
// parameter and the loss equal the plain run's (float64, both attention kernels, padding), also
// with LoRA dropout (the recomputation replays the first forward's random draws) and under bf16
// autocast (the recomputation runs under the autocast the first forward had).
TEST(Model, ActivationCheckpointingGivesThePlainGradients) {
  const torch::Device dev = test_device();
  LlamaConfig c = tiny_config();
  auto ids = torch::randint(0, c.vocab_size, {3, 9}, at::make_generator<at::CPUGeneratorImpl>(6), torch::kLong);
  auto padding = torch::ones({3, 9}, torch::kLong);
  padding[1].narrow(0, 0, 3).zero_();
  // Packed rows too: sdpa attends their spans one by one, and the recomputed layer must as well.
  auto segments = torch::tensor({0, 0, 0, 1, 1, 1, 1, 1, -1}, torch::kLong).unsqueeze(0).expand({3, 9});
  auto run = [&](LlamaForCausalLM& m, bool checkpoint, bool bf16, bool packed = false) {
    m->set_checkpoint_activations(checkpoint);
    m->zero_grad();
    torch::manual_seed(99);  // LoRA dropout's draws
    ForwardInput in;
    in.input_ids = ids;
    if (packed) in.segment_ids = segments;
    else in.attention_mask = padding;
    torch::Tensor loss;
    {
      compat::Bf16Autocast autocast(bf16, dev.type());
      loss = m->forward(in).to(torch::kDouble).logsumexp(-1).sum();
    }
    loss.backward();
    std::vector<torch::Tensor> grads = {loss.detach()};
    for (auto& [name, p] : m->trainable_parameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  auto expect_equal = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b, double tol,
                         const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < a.size(); ++i)
      EXPECT_LE((a[i] - b[i]).abs().max().item<double>(), tol * (1 + a[i].abs().max().item<double>()))
          << what << " tensor " << i;
  };
  LlamaForCausalLM m(c);
  m->init_weights(23);
  m->to(dev, torch::kDouble);
  for (AttentionKernel k : {AttentionKernel::eager, AttentionKernel::sdpa}) {
    AttentionKernelScope scope(*m, k);
    expect_equal(run(m, false, false), run(m, true, false), 1e-12, "float64");
    expect_equal(run(m, false, false, true), run(m, true, false, true), 1e-12, "float64, packed");
  }
  LoraOptions lo;
  lo.rank = 2;
  lo.dropout = 0.3;
  lo.targets = {"q_proj", "v_proj", "down_proj"};
  LlamaForCausalLM lora(c);
  lora->init_weights(24);
  lora->add_lora(lo);
  for (auto& [name, p] : lora->trainable_parameters()) {
    torch::NoGradGuard ng;
    p.normal_(0, 0.1);  // lora_B starts at zero; make every adapter matter
  }
  lora->to(dev, torch::kDouble);
  lora->train();
  auto plain = run(lora, false, false), checkpointed = run(lora, true, false);
  expect_equal(plain, checkpointed, 1e-12, "LoRA with dropout");
  // Without replaying the draws the dropout masks would differ: the check above can fail.
  LlamaForCausalLM f32(c);
  f32->init_weights(25);
  f32->to(dev);
  expect_equal(run(f32, false, true), run(f32, true, true), 1e-6, "bf16 autocast");
}
