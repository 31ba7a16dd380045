// The Tokenizer interface. Two implementations: SentencePiece tokenizer.model (libsentencepiece)
// and Hugging Face tokenizer.json (BPE: byte-level and SentencePiece-style). Both produce
// exactly the ids Hugging Face produces or refuse, naming the unsupported feature.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flatune {

struct SpecialTokens {
  std::optional<int32_t> bos_id, eos_id, pad_id, unk_id;
  bool add_bos = false;  // what encode(..., add_special=true) adds
  bool add_eos = false;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // add_special: BOS/EOS as the post-processor or tokenizer_config.json says.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;
  virtual const SpecialTokens& special() const = 0;
  // tokenizer_config.json's chat_template ("" when none), for the data layer to recognise.
  virtual const std::string& chat_template() const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece", "bpe-bytelevel", "bpe-sentencepiece"
};

// Loads the tokenizer of a model folder: tokenizer.json when present, else tokenizer.model;
// tokenizer_config.json read for special tokens and the chat template. A path to a single
// tokenizer.json / tokenizer.model file also works.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace flatune
