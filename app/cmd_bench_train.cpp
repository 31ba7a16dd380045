// `flatune bench train`: tokens/s of one optimizer step for AdamW and each SAM variant on a fresh
// model of a given shape, in one process, with the ratio to AdamW, and the memory of each
// variant. Memory is measured variant by variant (each one's own peak); time in rounds that take
// every variant in turn, each variant's best round reported: a shared 2-core VM drifts by 20-40%
// over a minute, and timing the variants one after another put that drift into their ratios.
#ifdef FLATUNE_TCMALLOC
#include <gperftools/malloc_extension_c.h>
#else
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>

#include "commands.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/model/llama.h"
#include "flatune/model/loss.h"
#include "flatune/optim/optimizer.h"
#include "flatune/optim/sam.h"

namespace flatune::cli {
namespace {

// Linux keeps the process's resident high-water mark in /proc/self/status (VmHWM); writing 5 to
// /proc/self/clear_refs resets it to the current resident size, so each variant gets its own
// peak although all run in one process. Memory the allocator keeps after the previous variant
// is given back first, or it would hide part of the next variant's growth.
int64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0) return std::stoll(line.substr(key.size()));
  return -1;
}

bool reset_peak_rss() {
#ifdef FLATUNE_TCMALLOC
  MallocExtension_ReleaseFreeMemory();
#else
  malloc_trim(0);
#endif
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.close();
  return static_cast<bool>(out);
}

// Model FLOPs of one forward-and-backward pass, per token: 2 per multiply-add of every matrix
// product forward (projections, head, LoRA adapters, and attention's two products over the
// whole window: the masked half is computed too), as much again for the gradients of the
// activations, and 2 per trainable weight for the gradients of the weights (frozen weights under
// LoRA get none; an untied embedding's gradient is a scatter, no FLOPs).
double pass_flops_per_token(LlamaForCausalLM& model, int64_t seq) {
  const LlamaConfig& c = model->config();
  double all = 0, trainable = 0;
  for (const auto& p : model->named_parameters(true)) {
    const auto& t = p.value();
    if (t.dim() != 2) continue;
    if (p.key() == "model.embed_tokens.weight" && !c.tie_word_embeddings) continue;
    all += static_cast<double>(t.numel());
    if (t.requires_grad()) trainable += static_cast<double>(t.numel());
  }
  const double attention = 2.0 * 2.0 * seq * c.num_attention_heads * c.head_dim * c.num_hidden_layers;
  const double forward = 2.0 * all + attention;
  return 2.0 * forward + 2.0 * trainable;
}

// Forward-and-backward passes a step of each variant makes, on average; NaN for sam-subset,
// whose first pass differentiates only the subset: what it skips depends on where the subset
// sits in the model, so its FLOPs (and MFU) are not given.
double passes_per_step(const SamSettings& s) {
  if (s.kind == "none") return 1.0;
  if (s.kind == "looksam") return 1.0 + 1.0 / static_cast<double>(s.k);
  if (s.kind == "sam-subset") return std::nan("");
  return 2.0;
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

json json_number(double v) { return std::isnan(v) ? json(nullptr) : json(v); }

// One variant's model, optimizer and step, alive for every round.
struct VariantBench {
  std::string name;  // adamw for none
  LlamaForCausalLM model{nullptr};
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<SamStepper> stepper;
  std::function<torch::Tensor()> closure;
  int64_t steps = 0;        // a round's steps
  int64_t state = 0;        // bytes alive between steps
  int64_t activations = 0;  // bytes the forward keeps for backward
  int64_t tensor_peak = 0;  // bytes, above what was alive before the model
  double peak_rss_mib = -1, growth_rss_mib = -1;
  double flops_per_token = 0;
  int64_t tokens_per_step = 0;
  std::vector<double> round_tokens_per_s;

  void time_round() {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) stepper->step(closure);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    round_tokens_per_s.push_back(static_cast<double>(tokens_per_step * steps) / secs);
  }
  double tokens_per_s() const {  // of the best round
    return *std::max_element(round_tokens_per_s.begin(), round_tokens_per_s.end());
  }
};

}  // namespace

void add_bench_train_command(CLI::App& bench) {
  struct Args {
    int64_t hidden = 256, layers = 8, heads = 4, ffn = 688, vocab = 8000, seq = 256, batch = 8, steps = 5, rounds = 3,
            lora_rank = 0;
    std::vector<std::string> variants = {"none", "sam", "asam", "looksam", "sam-subset"};
    int threads = 0;
    bool unfused_loss = false, bf16 = false, checkpoint_activations = false;
    std::string device;
    int64_t kv_heads = 0;
    std::string json_out, profile;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = bench.add_subcommand("train", "tokens/s of AdamW and each SAM variant on a fresh model");
  sub->add_option("--hidden", a->hidden, "hidden size");
  sub->add_option("--layers", a->layers, "layers");
  sub->add_option("--heads", a->heads, "attention heads");
  sub->add_option("--kv-heads", a->kv_heads, "key/value heads (grouped-query attention; default: --heads)");
  sub->add_option("--ffn", a->ffn, "MLP size");
  sub->add_option("--vocab", a->vocab, "vocabulary size");
  sub->add_option("--seq", a->seq, "sequence length");
  sub->add_option("--batch", a->batch, "rows per step");
  sub->add_option("--steps", a->steps, "timed steps per variant and round (after one warm-up step)");
  sub->add_option("--rounds", a->rounds, "timing rounds, every variant in each; the best round counts (default 3)");
  sub->add_option("--lora-rank", a->lora_rank, "LoRA rank (0: full fine-tuning)");
  sub->add_option("--variants", a->variants, "none sam asam looksam sam-subset");
  sub->add_option("--threads", a->threads, "intra-op threads");
  add_device_option(sub, a->device);
  sub->add_flag("--bf16", a->bf16, "bf16 autocast for the forward passes, as flatune train --bf16");
  sub->add_flag("--checkpoint-activations", a->checkpoint_activations,
                "recompute each layer in the backward pass, as flatune train --checkpoint-activations");
  sub->add_flag("--unfused-loss", a->unfused_loss,
                "full logits then cross-entropy, as transformers does (default: the fused head + loss)");
  sub->add_option("--json", a->json_out, "also write the results as JSON");
  sub->add_option("--profile", a->profile, "write a Chrome trace (chrome://tracing) of the timed steps to this file");
  sub->callback([a] {
    if (a->threads > 0) at::set_num_threads(a->threads);
    if (a->steps < 1) fail("--steps", "must be at least 1");
    if (a->rounds < 1) fail("--rounds", "must be at least 1");
    const torch::Device device = use_device_option(a->device);
    const bool gpu = !device.is_cpu();
    // Counts tensor storage from here on; it must outlive every tensor, hence static. It sees CPU
    // storage only: on a GPU the memory columns are left out (-1 in the JSON).
    static compat::CountingCpuAllocator counter(c10::GetCPUAllocator());
    compat::install_cpu_allocator(&counter);
    // On a GPU the peak of its GEMMs, 4096^3 (1024^3 does not fill one).
    const int64_t g = gpu ? 4096 : 1024;
    // Taken again after every round, the best kept: the utilisation is the best round's against
    // the best the machine showed during the run.
    double peak_fp32 = 0, peak_bf16 = 0;
    auto measure_peak = [&](double seconds) {
      peak_fp32 = std::max(peak_fp32, gemm_rate(g, g, g, torch::kFloat, seconds, device));
      peak_bf16 = std::max(peak_bf16, gemm_rate(g, g, g, torch::kBFloat16, seconds, device));
    };
    measure_peak(1.0);
    LlamaConfig c;
    c.vocab_size = a->vocab;
    c.hidden_size = a->hidden;
    c.intermediate_size = a->ffn;
    c.num_hidden_layers = a->layers;
    c.num_attention_heads = a->heads;
    c.num_key_value_heads = a->kv_heads > 0 ? a->kv_heads : a->heads;
    if (c.num_key_value_heads > a->heads || a->heads % c.num_key_value_heads != 0)
      fail("--kv-heads", "must divide --heads (" + std::to_string(a->heads) + ")");
    c.head_dim = a->hidden / a->heads;
    c.max_position_embeddings = a->seq;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    auto ids = torch::randint(0, a->vocab, {a->batch, a->seq}, gen, torch::kLong).to(device);
    json results = json::array();
    std::printf("model %.1fM parameters, batch %lld x %lld tokens, %s, %s (MFU against the GEMM peak)\n",
                c.num_parameters() / 1e6, static_cast<long long>(a->batch), static_cast<long long>(a->seq),
                gpu ? device.str().c_str() : (std::to_string(at::get_num_threads()) + " threads").c_str(),
                a->bf16 ? "bf16 autocast" : "fp32");
    // Memory, variant by variant: each builds its model, takes a warm-up step, then its first
    // timed round under a fresh peak. Every variant stays alive for the later rounds.
    std::vector<std::unique_ptr<VariantBench>> benches;
    for (const auto& v : a->variants) {
      auto b = std::make_unique<VariantBench>();
      VariantBench& vb = *b;
      vb.name = v == "none" ? "adamw" : v;
      vb.tokens_per_step = a->batch * a->seq;
      const bool peak_known = reset_peak_rss();
      const int64_t rss_start = status_kib("VmRSS");
      const int64_t live_start = counter.live();
      vb.model = LlamaForCausalLM(c);
      vb.model->init_weights(0);
      vb.model->to(device);
      vb.model->set_checkpoint_activations(a->checkpoint_activations);
      if (a->lora_rank > 0) {
        LoraOptions lo;
        lo.rank = a->lora_rank;
        vb.model->add_lora(lo);
      }
      auto params = vb.model->trainable_parameters();
      vb.opt = make_adamw(params, AdamWSettings{});
      SamSettings s;
      s.kind = v;
      // Half the layers: their MLP weights, or with LoRA their adapters (the only trainable ones).
      s.subset = {a->lora_rank > 0 ? ".*layers\\.[0-9]*[13579]\\..*" : ".*layers\\.[0-9]*[13579]\\.mlp\\..*"};
      vb.stepper = std::make_unique<SamStepper>(params, *vb.opt, s, 1.0);
      vb.closure = [&vb, &ids, a, device] {
        ForwardInput in;
        in.input_ids = ids;
        const int64_t live_before = counter.live();
        torch::Tensor loss;
        {
          compat::Bf16Autocast autocast(a->bf16, device.type());
          if (a->unfused_loss) {
            loss = causal_lm_loss(vb.model->forward(in), ids);
          } else {
            auto [sum, n] = fused_causal_lm_loss_sum(vb.model, in, ids);
            loss = sum / static_cast<double>(n);
          }
        }
        vb.activations = std::max(vb.activations, counter.live() - live_before);  // what backward will read
        loss.backward();
        return loss.detach();
      };
      vb.stepper->step(vb.closure);  // warm-up
      // Between steps what is alive is the state: weights, gradients, optimizer (and SAM) state.
      vb.state = counter.live() - live_start;
      counter.reset_peak();
      vb.flops_per_token = pass_flops_per_token(vb.model, a->seq) * passes_per_step(s);
      // LookSAM does its full SAM step once every k steps: time whole cycles so its ratio is fair.
      vb.steps = v == "looksam" ? (a->steps + s.k - 1) / s.k * s.k : a->steps;
      std::unique_ptr<torch::autograd::profiler::RecordProfile> trace;
      if (!a->profile.empty())
        trace = std::make_unique<torch::autograd::profiler::RecordProfile>(a->profile + "." + vb.name + ".json");
      vb.time_round();
      trace.reset();
      // Without a resettable high-water mark the peak would be the whole run's: not reported.
      if (peak_known) {
        vb.peak_rss_mib = status_kib("VmHWM") / 1024.0;
        vb.growth_rss_mib = (status_kib("VmHWM") - rss_start) / 1024.0;
      }
      vb.tensor_peak = counter.peak() - live_start;
      benches.push_back(std::move(b));
    }
    // Time: the other rounds take every variant in turn, each round starting one variant later, so
    // that none always runs first: this VM's speed drifts within a round (three copies of one 50M
    // AdamW run in a row: 583, 574, 530 tokens/s), which a fixed order would put into the ratios.
    measure_peak(0.25);
    const size_t n = benches.size();
    for (int64_t r = 1; r < a->rounds; ++r) {
      for (size_t i = 0; i < n; ++i) benches[(i + static_cast<size_t>(r)) % n]->time_round();
      measure_peak(0.25);
    }

    std::printf("GEMM peak (%lld^3, best during the run): fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s\n",
                static_cast<long long>(g), peak_fp32, peak_bf16);
    std::printf("%-10s %9s %8s %6s %9s %9s %9s %9s %9s %7s\n", "variant", "tokens/s", "vs adamw", "MFU", "state",
                "activ.", "tensors", "RSS peak", "RSS grow", "grow/sum");
    const double adamw_tps = benches.front()->name == "adamw" ? benches.front()->tokens_per_s() : 0;
    for (const auto& b : benches) {
      const VariantBench& vb = *b;
      const double tps = vb.tokens_per_s();
      const double ratio = adamw_tps > 0 ? adamw_tps / tps : 0;
      const double mfu_fp32 = tps * vb.flops_per_token / (peak_fp32 * 1e9),
                   mfu_bf16 = tps * vb.flops_per_token / (peak_bf16 * 1e9);
      const double mfu = a->bf16 ? mfu_bf16 : mfu_fp32;  // against the peak of the precision the GEMMs run in
      const double sum_mib = mib(vb.state + vb.activations);
      auto counted = [gpu](double v) { return gpu ? -1.0 : v; };  // the counter sees CPU storage only
      char mfu_text[16] = "-";
      if (!std::isnan(mfu)) std::snprintf(mfu_text, sizeof mfu_text, "%.0f%%", 100 * mfu);
      std::printf("%-10s %9.0f %7.2fx %6s %9.0f %9.0f %9.0f %9.0f %9.0f %6.2fx\n", vb.name.c_str(), tps, ratio,
                  mfu_text, counted(mib(vb.state)), counted(mib(vb.activations)), counted(mib(vb.tensor_peak)),
                  vb.peak_rss_mib, vb.growth_rss_mib, counted(vb.growth_rss_mib / sum_mib));
      json row = {{"variant", vb.name},
                  {"tokens_per_s", tps},
                  {"step_time_vs_adamw", ratio},
                  {"rounds_in_process_tokens_per_s", vb.round_tokens_per_s},
                  {"model_flops_per_token", json_number(vb.flops_per_token)},
                  {"bf16", a->bf16},
                  {"checkpoint_activations", a->checkpoint_activations},
                  {"mfu_fp32", json_number(mfu_fp32)},
                  {"mfu_bf16", json_number(mfu_bf16)},
                  {"gemm_peak_fp32_gflops", peak_fp32},
                  {"gemm_peak_bf16_gflops", peak_bf16},
                  {"device", device.str()},
                  {"state_mib", counted(mib(vb.state))},
                  {"activations_mib", counted(mib(vb.activations))},
                  {"tensor_peak_mib", counted(mib(vb.tensor_peak))}};
      if (vb.peak_rss_mib >= 0) {
        row["peak_rss_mib"] = vb.peak_rss_mib;
        row["peak_growth_mib"] = vb.growth_rss_mib;
      }
      results.push_back(row);
    }
    if (!a->json_out.empty()) write_file_atomic(a->json_out, results.dump(2) + "\n");
  });
}

}  // namespace flatune::cli
