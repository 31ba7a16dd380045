// Pieces shared by the tokenizers: splitting added/special tokens out of text before the model
// sees it, tokenizer_config.json's special tokens, and transformers' decode clean-up.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flatune/core/json.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false, rstrip = false;  // the match swallows whitespace on that side
};

struct TextPiece {
  std::string_view text;
  int32_t added_id = -1;  // >= 0: the piece is this added token
};

// Leftmost-longest matches of the added tokens; the text between them as plain pieces (empty
// ones dropped).
std::vector<TextPiece> split_added_tokens(std::string_view text, const std::vector<AddedToken>& tokens);

// bos/eos/pad/unk from tokenizer_config.json (string or {"content": …}), looked up with
// `id_of`; add_bos_token / add_eos_token override the given defaults.
SpecialTokens read_special_tokens(const json& config,
                                  const std::function<std::optional<int32_t>(const std::string&)>& id_of,
                                  bool default_add_bos, bool default_add_eos, const std::string& where);

// transformers' clean_up_tokenization: " ." -> "." and the like.
std::string clean_up_tokenization(std::string s);

// One Unicode scalar from UTF-8 at s[i]; advances i. Invalid bytes count as one char each.
size_t utf8_char_len(const std::string_view& s, size_t i);

}  // namespace flatune
