// Wise-FT (Wortsman et al. 2022): theta(alpha) = (1 - alpha) * theta_base + alpha * theta_tuned.
// Full models are interpolated in that form (not base + alpha*(tuned - base)); alpha 0 and 1 are
// the endpoints themselves, bit for bit. A LoRA-tuned model is theta_base + s*B*A, so its
// interpolation is the adapter scaled by alpha: W + (alpha*s)*B*A on the adapted projections and
// the base weights, untouched, everywhere else (no rounding from (1 - alpha)*W + alpha*W).
#pragma once
#include <map>
#include <string>

#include "flatune/io/safetensors.h"
#include "flatune/model/llama.h"

namespace flatune {

// alpha must be finite and, unless extrapolate, in [0, 1] (the error names --alpha).
void check_wiseft_alpha(double alpha, bool extrapolate);

// Same names and shapes required (errors name `where`). alpha outside [0, 1] only with
// extrapolate.
NamedTensors interpolate_weights(const NamedTensors& base, const NamedTensors& tuned, double alpha, bool extrapolate,
                                 const std::string& where);

// A tuned folder as full weights: an HF model folder, or a PEFT adapter folder applied to base.
NamedTensors load_tuned_weights(const std::string& base_dir, const std::string& tuned_dir);

// The two ends of a Wise-FT path, loaded once so that a sweep over alpha reads the folders once.
struct WiseFtEnds {
  NamedTensors base;   // the base weights as stored (their dtype is the merged model's)
  NamedTensors tuned;  // full tuned weights (empty when the tuned folder is a LoRA adapter)
  struct Adapter {
    torch::Tensor product;  // B*A, float32
    double scale = 0;       // lora_alpha / r
  };
  std::map<std::string, Adapter> adapters;  // weight name -> its adapter (LoRA-tuned only)
  std::string where;                        // the tuned folder, for errors
  bool is_lora() const { return !adapters.empty(); }
};

WiseFtEnds load_wiseft_ends(const std::string& base_dir, const std::string& tuned_dir);

// theta(alpha) for every base weight, in the base's order and dtype.
NamedTensors wiseft_weights(const WiseFtEnds& ends, double alpha, bool extrapolate);

// Writes the merged model folder (config and tokenizer from the base). alpha is checked before
// anything is read.
void merge_checkpoints(const std::string& base_dir, const std::string& tuned_dir, double alpha, bool extrapolate,
                       const std::string& out_dir);

}  // namespace flatune
