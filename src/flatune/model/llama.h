// The Llama-family decoder (Llama 1/2/3, TinyLlama, Mistral, Qwen2): embeddings, RMSNorm,
// RoPE (+ linear/llama3 scaling), GQA attention with causal/padding/packing masks and a KV
// cache, SiLU-gated MLP, tied or untied head. Parameters carry Hugging Face names
// ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight"), LoRA adapters PEFT's
// ("model.layers.0.self_attn.q_proj.lora_A.weight").
#pragma once
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "flatune/io/safetensors.h"
#include "flatune/model/config.h"

namespace flatune {

// Per-layer keys and values before GQA expansion: [B, num_key_value_heads, S, head_dim].
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
  int64_t batch() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(0); }
};

struct ForwardInput {
  torch::Tensor input_ids;       // [B, T] int64
  torch::Tensor attention_mask;  // optional [B, S] (S = cached + T): 1 real token, 0 padding
  torch::Tensor position_ids;    // optional [B, T]; default from cache length or attention_mask
  torch::Tensor segment_ids;     // optional [B, T]: packing, attention only within equal ids (and to
                                 // every cached key: a shared prefix)
  KVCache* cache = nullptr;      // when given, keys/values are appended to it
};

// How attention is computed; both give the same values and gradients (tests/test_model.cpp).
// sdpa: at::scaled_dot_product_attention, libtorch's fused CPU flash-attention kernel (forward and
// backward, with masks) where it applies, its math path elsewhere. eager: scores by one baddbmm
// (scale and mask fused), softmax, bmm: ordinary ops all the way down, so twice differentiable,
// which Hessian-vector products need and the fused kernel's backward is not. A model set to sdpa
// runs eager where that is faster (compat::prefer_unfused_attention: on the CPU in bf16 over at
// most 512 keys, packed rows aside: those the fused kernel attends span by span).
enum class AttentionKernel { sdpa, eager };

struct LoraOptions {
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"q_proj", "v_proj"};  // q k v o gate up down (_proj)
};

// A linear projection y = x Wᵀ + b with an optional LoRA adapter (x Aᵀ Bᵀ · alpha/rank).
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, bool bias);
  torch::Tensor forward(const torch::Tensor& x);
  void add_lora(const LoraOptions& o);
  bool has_lora() const { return lora_A.defined(); }
  // W + scale · B A (the weight a merged export writes).
  torch::Tensor merged_weight() const;

  torch::Tensor weight, bias, lora_A, lora_B;
  double lora_scale = 0.0;
  double lora_dropout = 0.0;
};
TORCH_MODULE(Projection);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config);

  // Logits [B, T, vocab].
  torch::Tensor forward(const ForwardInput& in);
  // Final hidden states after the last norm [B, T, hidden] (the head is applied by forward).
  torch::Tensor hidden_states(const ForwardInput& in);
  torch::Tensor lm_head_weight() const;

  const LlamaConfig& config() const { return config_; }

  AttentionKernel attention_kernel() const { return attention_; }
  void set_attention_kernel(AttentionKernel k) { attention_ = k; }

  // Activation checkpointing per decoder layer while gradients are recorded: each layer keeps
  // only its input and runs again in the backward pass (memory for time). Not twice
  // differentiable: Hessian-vector products need it off.
  bool checkpoint_activations() const { return checkpoint_activations_; }
  void set_checkpoint_activations(bool on) { checkpoint_activations_ = on; }

  // Normal(0, initializer_range) for linear and embedding weights, ones for norms, zeros for
  // biases, as transformers' _init_weights does; seeded.
  void init_weights(uint64_t seed);

  // Copies weights by Hugging Face name; every model weight must be present with the config's
  // shape (errors name `where` and the tensor). Extra tensors are errors unless they are the
  // rotary inv_freq buffers older checkpoints carry.
  void load_weights(const NamedTensors& weights, const std::string& where);
  // The model's weights by Hugging Face name (LoRA adapters excluded; merged when merge_lora).
  NamedTensors weights(bool merge_lora = false) const;

  // Adds LoRA adapters to the named projections and freezes every other parameter. Throws when
  // a target names no module.
  void add_lora(const LoraOptions& o);
  bool has_lora() const { return lora_.has_value(); }
  const LoraOptions& lora_options() const {
    TORCH_CHECK(lora_.has_value(), "lora_options() of a model without LoRA adapters");
    return *lora_;  // NOLINT(bugprone-unchecked-optional-access): checked on the line above
  }
  // Adapter tensors by our names ("model.layers.0.self_attn.q_proj.lora_A.weight").
  NamedTensors lora_weights() const;

  // Parameters with requires_grad, in a fixed order, with names.
  std::vector<std::pair<std::string, torch::Tensor>> trainable_parameters() const;

  struct Layer;  // defined in llama.cpp

 private:
  LlamaConfig config_;
  std::optional<LoraOptions> lora_;
  AttentionKernel attention_ = AttentionKernel::sdpa;
  bool checkpoint_activations_ = false;
  torch::Tensor inv_freq_;  // [head_dim/2] float64, RoPE frequencies after scaling
  std::vector<std::shared_ptr<torch::nn::Module>> layers_;
  torch::Tensor embed_, norm_weight_, lm_head_;
};
TORCH_MODULE(LlamaForCausalLM);

// Sets a model's attention kernel for a scope and restores the one it had.
class AttentionKernelScope {
 public:
  AttentionKernelScope(LlamaForCausalLMImpl& model, AttentionKernel k)
      : model_(model), before_(model.attention_kernel()) {
    model_.set_attention_kernel(k);
  }
  ~AttentionKernelScope() { model_.set_attention_kernel(before_); }
  AttentionKernelScope(const AttentionKernelScope&) = delete;
  AttentionKernelScope& operator=(const AttentionKernelScope&) = delete;

 private:
  LlamaForCausalLMImpl& model_;
  AttentionKernel before_;
};

// Loads a Hugging Face folder (config.json + weights) onto `device` (default: the process's
// device, compat::process_device(), the CPU unless --device set it) as `dtype`.
LlamaForCausalLM load_llama(const std::string& dir, torch::ScalarType dtype = torch::kFloat32,
                            std::optional<torch::Device> device = std::nullopt);

// Mean cross-entropy of logits[:, :-1] against labels[:, 1:], -100 ignored (transformers'
// causal LM loss). Returns 0 with a defined graph when no label counts.
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels);
// Sum of the per-token losses and the number of counted tokens.
std::pair<torch::Tensor, int64_t> causal_lm_loss_sum(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace flatune
