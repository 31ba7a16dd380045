// Hugging Face tokenizer.json with model BPE: byte-level (GPT-2, Llama 3, Qwen) and
// SentencePiece-style (Llama 2, Mistral: Prepend/Replace normalisers, byte_fallback).
#pragma once
#include <memory>
#include <string>

#include "flatune/core/json.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

// `config` is tokenizer_config.json's content (null when absent). Unsupported components are
// errors naming them.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& tokenizer_json_path, const json& config);

}  // namespace flatune
