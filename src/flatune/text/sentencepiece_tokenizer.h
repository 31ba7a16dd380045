// SentencePiece tokenizer.model through libsentencepiece.
#pragma once
#include <memory>
#include <string>

#include "flatune/core/json.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

// split_special: special tokens written in the text (<s>, </s>, <unk> and the config's added
// tokens) become their ids, as Hugging Face's Llama tokenizers do; off, the text is given to
// SentencePiece as it is (what `spm_encode` does). Default: on when a tokenizer_config.json
// came with the model.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path, const json& config,
                                                        bool split_special);

}  // namespace flatune
