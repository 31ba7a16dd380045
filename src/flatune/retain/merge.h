// Wise-FT (Wortsman et al. 2022): theta(alpha) = (1 - alpha) * theta_base + alpha * theta_tuned.
// Written in that form (not base + alpha*(tuned - base)) so alpha 0 and 1 give the endpoints
// bit for bit.
#pragma once
#include <string>

#include "flatune/io/safetensors.h"
#include "flatune/model/llama.h"

namespace flatune {

// Same names and shapes required (errors name `where`). alpha outside [0, 1] only with
// extrapolate.
NamedTensors interpolate_weights(const NamedTensors& base, const NamedTensors& tuned, double alpha, bool extrapolate,
                                 const std::string& where);

// A tuned folder as full weights: an HF model folder, or a PEFT adapter folder applied to base.
NamedTensors load_tuned_weights(const std::string& base_dir, const std::string& tuned_dir);

// Writes the merged model folder (config and tokenizer from the base).
void merge_checkpoints(const std::string& base_dir, const std::string& tuned_dir, double alpha, bool extrapolate,
                       const std::string& out_dir);

}  // namespace flatune
