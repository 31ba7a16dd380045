#include "flatune/model/llama.h"

#include <cmath>
#include <set>
#include <vector>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/rms_norm.h"
#include "flatune/model/rope.h"
#include "flatune/model/shared_cast.h"
#include "flatune/model/swiglu.h"

namespace flatune {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------- Projection (+ LoRA)

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = F::linear(x, weight, bias.defined() ? bias : torch::Tensor());
  if (lora_A.defined()) {
    torch::Tensor h = x;
    if (lora_dropout > 0 && is_training()) h = F::dropout(h, F::DropoutFuncOptions().p(lora_dropout).training(true));
    y = y + F::linear(F::linear(h, lora_A), lora_B) * lora_scale;
  }
  return y;
}

void ProjectionImpl::add_lora(const LoraOptions& o) {
  const int64_t out = weight.size(0), in = weight.size(1);
  auto opts = weight.options().requires_grad(false);
  // PEFT: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0, so the adapter
  // starts as an exact no-op.
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  auto a_holder = register_module("lora_A", std::make_shared<torch::nn::Module>());
  auto b_holder = register_module("lora_B", std::make_shared<torch::nn::Module>());
  lora_A = a_holder->register_parameter("weight", torch::empty({o.rank, in}, opts).uniform_(-bound, bound));
  lora_B = b_holder->register_parameter("weight", torch::zeros({out, o.rank}, opts));
  lora_scale = o.alpha / static_cast<double>(o.rank);
  lora_dropout = o.dropout;
}

torch::Tensor ProjectionImpl::merged_weight() const {
  if (!lora_A.defined()) return weight.detach();
  torch::NoGradGuard ng;
  return weight + torch::matmul(lora_B, lora_A) * lora_scale;
}

// ---------------------------------------------------------------- building blocks

namespace {

// A module that only holds a "weight" parameter, so names read "model.norm.weight".
std::shared_ptr<torch::nn::Module> weight_holder(torch::nn::Module& parent, const std::string& name, torch::Tensor init,
                                                 torch::Tensor* out) {
  auto m = parent.register_module(name, std::make_shared<torch::nn::Module>());
  *out = m->register_parameter("weight", std::move(init));
  return m;
}

double lowest_value(torch::ScalarType t) {
  switch (t) {
    case torch::kDouble:
      return std::numeric_limits<double>::lowest();
    case torch::kFloat:
      return std::numeric_limits<float>::lowest();
    case torch::kBFloat16:
      return -3.3895313892515355e38;  // bf16's lowest finite value
    case torch::kHalf:
      return -65504.0;
    default:
      return std::numeric_limits<float>::lowest();
  }
}

// [B, Hkv, S, D] -> [B, Hkv*groups, S, D]
torch::Tensor repeat_kv(const torch::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  auto s = x.sizes();
  return x.unsqueeze(2).expand({s[0], s[1], groups, s[2], s[3]}).reshape({s[0], s[1] * groups, s[2], s[3]});
}

// How every layer's attention decides which keys a query sees, worked out once per forward.
struct AttentionPlan {
  AttentionKernel kernel = AttentionKernel::sdpa;
  // Additive; eager: [B·heads, T, S] or [1, T, S]; sdpa: [B or 1, 1, T, S]. Undefined when
  // `causal` or `spans` says it all, or when every query sees every key (one token after a cache).
  torch::Tensor mask;
  bool causal = false;  // sdpa's is_causal: each query sees the keys up to itself
  // sdpa on packed rows whose segments are contiguous runs: [n, 3] int64 on the CPU (row, start,
  // length), each span attended causally on its own. A dense mask over a packed row costs T² per
  // head however short its examples; this costs the sum of their squares and keeps the fused
  // kernel's is_causal path.
  torch::Tensor spans;
};

// The spans of packed rows (see AttentionPlan), or undefined when some segment id comes back
// after another one in its row (the mask handles that: equal ids attend each other wherever
// they are).
torch::Tensor contiguous_segment_spans(const torch::Tensor& segment_ids) {
  const torch::Tensor seg = segment_ids.to(torch::kCPU, torch::kLong).contiguous();
  auto a = seg.accessor<int64_t, 2>();
  std::vector<int64_t> flat;
  for (int64_t r = 0; r < seg.size(0); ++r) {
    std::set<int64_t> seen;
    for (int64_t t = 0; t < seg.size(1);) {
      const int64_t id = a[r][t];
      if (!seen.insert(id).second) return {};
      int64_t end = t + 1;
      while (end < seg.size(1) && a[r][end] == id) ++end;
      flat.insert(flat.end(), {r, t, end - t});
      t = end;
    }
  }
  return torch::tensor(flat, torch::kLong).view({-1, 3});
}

// RoPE inverse frequencies with the config's scaling, in float64.
torch::Tensor rope_inv_freq(const LlamaConfig& c) {
  const int64_t dim = c.head_dim;
  torch::Tensor inv =
      1.0 / torch::pow(c.rope_theta, torch::arange(0, dim, 2, torch::kDouble) / static_cast<double>(dim));
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") {
    inv = inv / s.factor;
  } else if (s.type == "llama3") {
    // Llama 3.1: long wavelengths divided by factor, short kept, the band between smoothed.
    double old_len = static_cast<double>(s.original_max_position_embeddings);
    double low_wavelen = old_len / s.low_freq_factor;
    double high_wavelen = old_len / s.high_freq_factor;
    torch::Tensor wavelen = 2 * M_PI / inv;
    torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv / s.factor, inv);
    torch::Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    torch::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    torch::Tensor medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

}  // namespace

struct AttentionImpl : torch::nn::Module {
  Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;

  explicit AttentionImpl(const LlamaConfig& c)
      : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim) {
    bool qkv_bias = c.attention_bias || c.qkv_bias;
    q_proj = register_module("q_proj", Projection(c.hidden_size, heads * head_dim, qkv_bias));
    k_proj = register_module("k_proj", Projection(c.hidden_size, kv_heads * head_dim, qkv_bias));
    v_proj = register_module("v_proj", Projection(c.hidden_size, kv_heads * head_dim, qkv_bias));
    o_proj = register_module("o_proj", Projection(heads * head_dim, c.hidden_size, c.attention_bias));
  }

  // x [B,T,H]; cos/sin [B,1,T,D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionPlan& plan, torch::Tensor* cache_k, torch::Tensor* cache_v) {
    const int64_t B = x.size(0), T = x.size(1);
    const auto in = shared_autocast_input(x, 3);
    auto q = q_proj(in[0]).view({B, T, heads, head_dim}).transpose(1, 2);
    auto k = k_proj(in[1]).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    auto v = v_proj(in[2]).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
    if (cache_k) {
      if (cache_k->defined()) {
        k = torch::cat({*cache_k, k}, 2);
        v = torch::cat({*cache_v, v}, 2);
      }
      *cache_k = k;
      *cache_v = v;
    }
    const int64_t groups = heads / kv_heads, S = k.size(2);
    torch::Tensor out;
    if (plan.kernel == AttentionKernel::sdpa && plan.spans.defined()) {
      // The keys and values are expanded to every query head here rather than with enable_gqa,
      // which libtorch's CPU flash kernel does not take (it falls back to the math path).
      const torch::Tensor kr = repeat_kv(k, groups), vr = repeat_kv(v, groups);
      auto span = plan.spans.accessor<int64_t, 2>();
      std::vector<std::vector<torch::Tensor>> rows(static_cast<size_t>(B));
      for (int64_t i = 0; i < span.size(0); ++i) {
        const int64_t r = span[i][0], start = span[i][1], len = span[i][2];
        auto part = [&](const torch::Tensor& t) { return t.narrow(0, r, 1).narrow(2, start, len); };
        rows[static_cast<size_t>(r)].push_back(
            at::scaled_dot_product_attention(part(q), part(kr), part(vr), c10::nullopt, 0.0, /*is_causal=*/true));
      }
      std::vector<torch::Tensor> joined;
      for (auto& pieces : rows) joined.push_back(pieces.size() == 1 ? pieces[0] : torch::cat(pieces, 2));
      out = B == 1 ? joined[0] : torch::cat(joined, 0);
    } else if (plan.kernel == AttentionKernel::sdpa) {
      const torch::Tensor& m = plan.mask;  // in the dtype autocast gives q here
      out = at::scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups),
                                             m.defined() ? c10::optional<torch::Tensor>(m) : c10::nullopt, 0.0,
                                             plan.causal);
    } else {
      auto kr = repeat_kv(k, groups).reshape({B * heads, S, head_dim});
      auto vr = repeat_kv(v, groups).reshape({B * heads, S, head_dim});
      // One GEMM that also scales and adds the mask: the [B·H, T, S] scores are written once
      // instead of three times (matmul, divide, add), and backward has two fewer passes over them.
      auto scores = torch::baddbmm(plan.mask, q.reshape({B * heads, T, head_dim}), kr.transpose(1, 2), 1.0,
                                   1.0 / std::sqrt(static_cast<double>(head_dim)));
      // A bf16 softmax accumulates in fp32 and rounds once, the values of an fp32 softmax cast to
      // bf16, and backward then keeps one bf16 copy of the probabilities instead of an fp32 one
      // beside the bf16 one the product keeps.
      const auto st = scores.scalar_type();
      auto probs = at::isReducedFloatingType(st)
                       ? scores.softmax(-1)
                       : scores.softmax(-1, st == torch::kDouble ? torch::kDouble : torch::kFloat);
      out = torch::bmm(probs, vr).view({B, heads, T, head_dim});
    }
    return o_proj(out.transpose(1, 2).reshape({B, T, heads * head_dim}));
  }
};
TORCH_MODULE(Attention);

struct MlpImpl : torch::nn::Module {
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  explicit MlpImpl(const LlamaConfig& c) {
    gate_proj = register_module("gate_proj", Projection(c.hidden_size, c.intermediate_size, c.mlp_bias));
    up_proj = register_module("up_proj", Projection(c.hidden_size, c.intermediate_size, c.mlp_bias));
    down_proj = register_module("down_proj", Projection(c.intermediate_size, c.hidden_size, c.mlp_bias));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto in = shared_autocast_input(x, 2);
    return down_proj(swiglu(gate_proj(in[0]), up_proj(in[1])));
  }
};
TORCH_MODULE(Mlp);

struct LlamaForCausalLMImpl::Layer : torch::nn::Module {
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  torch::Tensor input_norm, post_norm;
  double eps;
  explicit Layer(const LlamaConfig& c) : eps(c.rms_norm_eps) {
    self_attn = register_module("self_attn", Attention(c));
    mlp = register_module("mlp", Mlp(c));
    weight_holder(*this, "input_layernorm", torch::ones({c.hidden_size}), &input_norm);
    weight_holder(*this, "post_attention_layernorm", torch::ones({c.hidden_size}), &post_norm);
  }
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& cos, const torch::Tensor& sin, const AttentionPlan& plan,
                        torch::Tensor* ck, torch::Tensor* cv) {
    h = h + self_attn->forward(rms_norm(h, input_norm, eps), cos, sin, plan, ck, cv);
    return h + mlp->forward(rms_norm(h, post_norm, eps));
  }
};

// ---------------------------------------------------------------- activation checkpointing

namespace {

// One decoder layer whose activations are not kept: the forward runs without recording, and the
// backward runs the layer's forward again from its saved input (with the random state and
// autocast the first forward had, so LoRA dropout and bf16 give the same numbers) and
// backpropagates through that, accumulating the parameters' gradients as the plain backward
// would. What is kept per layer is its input; the rest is recomputed, about a third more
// compute for most of the activation memory.
struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  // Only x is an autograd input; the rest comes by pointer (an undefined mask cannot be an
  // input of a custom function).
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               LlamaForCausalLMImpl::Layer* layer, const torch::Tensor* cos_ptr,
                               const torch::Tensor* sin_ptr, const AttentionPlan* plan_ptr) {
    const torch::Tensor &cos = *cos_ptr, &sin = *sin_ptr;
    const AttentionPlan& plan = *plan_ptr;
    ctx->save_for_backward({x});
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    ctx->saved_data["has_mask"] = plan.mask.defined();
    if (plan.mask.defined()) ctx->saved_data["mask"] = plan.mask;
    ctx->saved_data["has_spans"] = plan.spans.defined();
    if (plan.spans.defined()) ctx->saved_data["spans"] = plan.spans;
    ctx->saved_data["causal"] = plan.causal;
    ctx->saved_data["kernel"] = static_cast<int64_t>(plan.kernel);
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    // The generator and autocast state of the device the layer runs on (LoRA dropout draws
    // from the GPU's generator there, and CUDA autocast is separate from the CPU's).
    ctx->saved_data["rng"] = compat::default_generator(x.device()).get_state();
    ctx->saved_data["autocast"] = at::autocast::is_autocast_enabled(x.device().type());
    torch::NoGradGuard no_grad;
    return layer->forward(x, cos, sin, plan, nullptr, nullptr);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    // The layer outlives the graph (it is the model's); saved_data holds only IValues.
    // NOLINTNEXTLINE(performance-no-int-to-ptr)
    auto* layer = reinterpret_cast<LlamaForCausalLMImpl::Layer*>(ctx->saved_data["layer"].toInt());
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    AttentionPlan plan;
    plan.kernel = static_cast<AttentionKernel>(ctx->saved_data["kernel"].toInt());
    plan.causal = ctx->saved_data["causal"].toBool();
    if (ctx->saved_data["has_mask"].toBool()) plan.mask = ctx->saved_data["mask"].toTensor();
    if (ctx->saved_data["has_spans"].toBool()) plan.spans = ctx->saved_data["spans"].toTensor();
    at::Generator gen = compat::default_generator(x.device());
    const torch::Tensor rng_now = gen.get_state();
    gen.set_state(ctx->saved_data["rng"].toTensor());
    torch::Tensor out;
    {
      torch::AutoGradMode grad(true);
      compat::Bf16Autocast autocast(ctx->saved_data["autocast"].toBool(), x.device().type());
      out = layer->forward(x, ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(), plan, nullptr,
                           nullptr);
    }
    gen.set_state(rng_now);
    torch::autograd::backward({out}, {grad_out[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

// ---------------------------------------------------------------- the model

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : config_(c) {
  auto body = register_module("model", std::make_shared<torch::nn::Module>());
  weight_holder(*body, "embed_tokens", torch::empty({c.vocab_size, c.hidden_size}), &embed_);
  auto list = body->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    auto layer = std::make_shared<Layer>(c);
    list->push_back(layer);
    layers_.push_back(layer);
  }
  weight_holder(*body, "norm", torch::ones({c.hidden_size}), &norm_weight_);
  if (!c.tie_word_embeddings) weight_holder(*this, "lm_head", torch::empty({c.vocab_size, c.hidden_size}), &lm_head_);
  inv_freq_ = rope_inv_freq(c);
  init_weights(0);
}

torch::Tensor LlamaForCausalLMImpl::lm_head_weight() const { return config_.tie_word_embeddings ? embed_ : lm_head_; }

void LlamaForCausalLMImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double std = config_.initializer_range;
  for (auto& p : named_parameters(/*recurse=*/true)) {
    const std::string& name = p.key();
    const torch::Tensor& t = p.value();
    if (name.find("lora_") != std::string::npos) continue;
    if (name.find("norm") != std::string::npos) {
      t.fill_(1.0);
    } else if (t.dim() == 1) {
      t.zero_();  // biases
    } else {
      // Sample on CPU in float32 from our generator so the values do not depend on device/dtype.
      t.copy_(torch::empty(t.sizes(), torch::kFloat).normal_(0.0, std, gen));
    }
  }
}

torch::Tensor LlamaForCausalLMImpl::hidden_states(const ForwardInput& in) {
  // Inputs follow the weights: callers build ids and masks on the CPU (tokenizers, collate) and
  // the model may live on a GPU. A tensor already there is not copied.
  const auto dev = embed_.device();
  auto on_device = [&dev](const torch::Tensor& t) { return t.defined() ? t.to(dev, /*non_blocking=*/true) : t; };
  const torch::Tensor ids = on_device(in.input_ids);
  const torch::Tensor attention_mask = on_device(in.attention_mask);
  const torch::Tensor segment_ids = on_device(in.segment_ids);
  TORCH_CHECK(ids.dim() == 2, "input_ids must be [B, T]");
  const int64_t B = ids.size(0), T = ids.size(1);
  const int64_t past = in.cache ? in.cache->length() : 0;
  const int64_t S = past + T;
  torch::Tensor x = F::embedding(ids, embed_);
  const auto dtype = x.scalar_type();

  torch::Tensor pos = on_device(in.position_ids);
  if (!pos.defined()) {
    if (attention_mask.defined()) {
      // As transformers' generate: positions count real tokens only (left padding).
      pos = attention_mask.to(torch::kLong).cumsum(-1) - 1;
      pos = pos.masked_fill(attention_mask == 0, 1).narrow(1, S - T, T);
    } else {
      pos = torch::arange(past, S, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0).expand({B, T});
    }
  }
  if (inv_freq_.device() != dev) inv_freq_ = inv_freq_.to(dev);  // once per device, not per forward
  torch::Tensor freqs = pos.to(torch::kDouble).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  torch::Tensor cos = emb.cos().to(dtype).unsqueeze(1), sin = emb.sin().to(dtype).unsqueeze(1);

  // With neither padding nor packing, the fused kernel needs no mask: a query sees every key up to
  // itself (no cache: is_causal), or all keys (one new token after a cache).
  AttentionPlan plan;
  plan.kernel = attention_;
  if (attention_ == AttentionKernel::sdpa && segment_ids.defined() && !attention_mask.defined() && past == 0)
    plan.spans = contiguous_segment_spans(segment_ids);
  // Packed rows keep the fused kernel span by span: the sum of the spans' squares rather than the
  // row's square (measured: plain products over the whole packed row were no faster at 10M bf16).
  const auto attention_dtype = compat::attention_dtype(dev, dtype);
  if (attention_ == AttentionKernel::sdpa && !plan.spans.defined() &&
      compat::prefer_unfused_attention(dev, attention_dtype, S))
    plan.kernel = AttentionKernel::eager;
  const bool plain = !attention_mask.defined() && !segment_ids.defined();
  const bool sdpa = plan.kernel == AttentionKernel::sdpa;
  plan.causal = sdpa && plain && past == 0 && T > 1;
  if (!sdpa || (!(plain && (past == 0 || T == 1)) && !plan.spans.defined())) {
    // allowed[b, i, j]: query i (absolute position past+i) may attend key j.
    auto kpos = torch::arange(S, torch::TensorOptions().dtype(torch::kLong).device(dev));
    auto qpos = torch::arange(past, S, torch::TensorOptions().dtype(torch::kLong).device(dev));
    torch::Tensor allowed = (kpos.view({1, S}) <= qpos.view({T, 1})).unsqueeze(0);  // [1, T, S]
    if (attention_mask.defined()) {
      TORCH_CHECK(attention_mask.size(1) == S, "attention_mask must cover cached and new tokens");
      allowed = allowed & (attention_mask != 0).unsqueeze(1);
    }
    if (segment_ids.defined()) {
      torch::Tensor same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1);  // [B, T, T]
      // The cache's keys are a prefix every segment shares (the choices of one item after its
      // context, packed).
      if (past > 0) same = torch::cat({torch::ones({B, T, past}, same.options()), same}, 2);
      allowed = allowed & same;
    }
    // Additive mask with the lowest value of the dtype attention runs in, as transformers uses:
    // fully masked rows (left padding) stay finite instead of becoming NaN (fp32's lowest would
    // round to -inf in bf16).
    torch::Tensor mask = torch::zeros({}, x.options().dtype(attention_dtype))
                             .masked_fill(~allowed, lowest_value(attention_dtype));  // [1 or B, T, S]
    if (sdpa) {
      mask = mask.unsqueeze(1);  // [1 or B, 1, T, S], broadcast over heads
    } else if (mask.size(0) > 1) {
      // Eager attention runs on [B·heads, T, S]; a per-row mask is laid out that way once for all layers.
      const int64_t heads = config_.num_attention_heads;
      mask = mask.unsqueeze(1).expand({B, heads, T, S}).reshape({B * heads, T, S});
    }
    plan.mask = mask;
  }

  if (in.cache && in.cache->k.empty()) {
    in.cache->k.resize(layers_.size());
    in.cache->v.resize(layers_.size());
  }
  const bool checkpointing = checkpoint_activations_ && torch::GradMode::is_enabled() && !in.cache;
  // A checkpointed layer reaches the backward pass only through its input; with frozen
  // embeddings (LoRA) that input must be made to require a gradient, or the adapters' gradients
  // would never be computed.
  if (checkpointing && !x.requires_grad()) x = x.detach().requires_grad_(true);
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto* layer = static_cast<Layer*>(layers_[i].get());
    if (checkpointing) x = CheckpointedLayer::apply(x, layer, &cos, &sin, &plan);
    else
      x = layer->forward(x, cos, sin, plan, in.cache ? &in.cache->k[i] : nullptr, in.cache ? &in.cache->v[i] : nullptr);
  }
  return rms_norm(x, norm_weight_, config_.rms_norm_eps);
}

torch::Tensor LlamaForCausalLMImpl::forward(const ForwardInput& in) {
  return F::linear(hidden_states(in), lm_head_weight());
}

// ---------------------------------------------------------------- weights by name

namespace {
bool is_lora_name(const std::string& n) {
  return n.find(".lora_A.") != std::string::npos || n.find(".lora_B.") != std::string::npos;
}
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
std::string shape_str(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

void LlamaForCausalLMImpl::load_weights(const NamedTensors& weights, const std::string& where) {
  std::map<std::string, const torch::Tensor*> given;
  for (const auto& [name, t] : weights) given[name] = &t;
  torch::NoGradGuard ng;
  for (auto& p : named_parameters(true)) {
    if (is_lora_name(p.key())) continue;
    auto it = given.find(p.key());
    if (it == given.end()) fail(where, "missing tensor '" + p.key() + "'");
    const torch::Tensor& src = *it->second;
    if (!src.sizes().equals(p.value().sizes()))
      fail(where, "tensor '" + p.key() + "' has shape " + shape_str(src.sizes()) + ", config.json implies " +
                      shape_str(p.value().sizes()));
    p.value().copy_(src.to(p.value().scalar_type()));
    given.erase(it);
  }
  for (const auto& [name, t] : given) {
    (void)t;
    if (ends_with(name, "rotary_emb.inv_freq")) continue;  // older checkpoints store the buffer
    if (name == "lm_head.weight" && config_.tie_word_embeddings) continue;
    fail(where, "unexpected tensor '" + name + "' (not part of a " + config_.model_type + " model with this config)");
  }
}

NamedTensors LlamaForCausalLMImpl::weights(bool merge_lora) const {
  std::map<std::string, torch::Tensor> merged;
  if (merge_lora) {
    for (const auto& m : named_modules()) {
      if (auto* proj = dynamic_cast<ProjectionImpl*>(m.value().get()); proj && proj->has_lora())
        merged[m.key() + ".weight"] = proj->merged_weight();
    }
  }
  NamedTensors out;
  for (const auto& p : named_parameters(true)) {
    if (is_lora_name(p.key())) continue;
    auto it = merged.find(p.key());
    out.emplace_back(p.key(), it != merged.end() ? it->second : p.value().detach());
  }
  return out;
}

void LlamaForCausalLMImpl::add_lora(const LoraOptions& o) {
  if (lora_) fail("lora", "the model already has LoRA adapters");
  if (o.rank <= 0) fail("lora", "rank must be positive");
  const std::vector<std::string> known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (const auto& t : o.targets) {
    if (std::find(known.begin(), known.end(), t) == known.end())
      fail("lora",
           "target '" + t + "' names no module (known: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)");
  }
  for (auto& p : parameters(true)) p.set_requires_grad(false);
  int64_t added = 0;
  for (const auto& m : named_modules()) {
    auto* proj = dynamic_cast<ProjectionImpl*>(m.value().get());
    if (!proj) continue;
    std::string leaf = m.key().substr(m.key().rfind('.') + 1);
    if (std::find(o.targets.begin(), o.targets.end(), leaf) == o.targets.end()) continue;
    proj->add_lora(o);
    proj->lora_A.set_requires_grad(true);
    proj->lora_B.set_requires_grad(true);
    ++added;
  }
  if (added == 0) fail("lora", "no module matched the targets");
  lora_ = o;
}

NamedTensors LlamaForCausalLMImpl::lora_weights() const {
  NamedTensors out;
  for (const auto& p : named_parameters(true))
    if (is_lora_name(p.key())) out.emplace_back(p.key(), p.value().detach());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaForCausalLMImpl::trainable_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : named_parameters(true))
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value());
  return out;
}

// ---------------------------------------------------------------- loading and loss

LlamaForCausalLM load_llama(const std::string& dir, torch::ScalarType dtype, std::optional<torch::Device> device) {
  LlamaConfig config = load_llama_config(dir + "/config.json");
  LlamaForCausalLM model(config);
  model->load_weights(load_checkpoint_weights(dir), dir);
  model->to(device.value_or(compat::process_device()), dtype);
  return model;
}

std::pair<torch::Tensor, int64_t> causal_lm_loss_sum(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t V = logits.size(-1);
  auto shift_logits = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, V});
  auto shift_labels = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1}).to(logits.device());
  int64_t count = (shift_labels != -100).sum().item<int64_t>();
  auto sum = F::cross_entropy(shift_logits.to(logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat),
                              shift_labels, F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  return {sum, count};
}

torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  auto [sum, count] = causal_lm_loss_sum(logits, labels);
  return sum / static_cast<double>(std::max<int64_t>(count, 1));
}

}  // namespace flatune
