#include "flatune/text/sentencepiece_tokenizer.h"

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/text/added_tokens.h"
#include "flatune/text/spm_bridge.h"

namespace flatune {

namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const json& config, bool split_special) : sp_(read_file(path), path) {
    auto id_of = [this](const std::string& s) -> std::optional<int32_t> {
      int id = sp_.piece_to_id(s);
      if (id == sp_.unk_id() && s != sp_.id_to_piece(sp_.unk_id())) return std::nullopt;
      return id;
    };
    // Llama's defaults: BOS added, EOS not (LlamaTokenizer's add_bos_token / add_eos_token).
    special_ = read_special_tokens(config, id_of, true, false, path);
    if (!special_.bos_id && sp_.bos_id() >= 0) special_.bos_id = sp_.bos_id();
    if (!special_.eos_id && sp_.eos_id() >= 0) special_.eos_id = sp_.eos_id();
    if (!special_.unk_id && sp_.unk_id() >= 0) special_.unk_id = sp_.unk_id();
    if (!special_.pad_id && sp_.pad_id() >= 0) special_.pad_id = sp_.pad_id();
    if (split_special) {
      for (int id = 0; id < sp_.size(); ++id)
        if (sp_.is_control(id) || sp_.is_unknown(id))
          specials_.push_back({sp_.id_to_piece(id), id, true, false, false});
      if (config.is_object() && config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object()) {
        for (auto it = config["added_tokens_decoder"].begin(); it != config["added_tokens_decoder"].end(); ++it) {
          AddedToken a;
          a.id = std::stoi(it.key());
          a.content = it.value().value("content", std::string());
          a.special = it.value().value("special", false);
          a.lstrip = it.value().value("lstrip", false);
          a.rstrip = it.value().value("rstrip", false);
          bool known = false;
          for (const auto& s : specials_) known = known || s.id == a.id;
          if (!known && !a.content.empty()) specials_.push_back(a);
        }
      }
    }
    clean_up_ = config.is_object() && config.value("clean_up_tokenization_spaces", false);
    if (config.is_object() && config.contains("chat_template") && config["chat_template"].is_string())
      chat_template_ = config["chat_template"].get<std::string>();
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special && special_.add_bos && special_.bos_id) ids.push_back(*special_.bos_id);
    for (const auto& piece : split_added_tokens(text, specials_)) {
      if (piece.added_id >= 0) {
        ids.push_back(piece.added_id);
        continue;
      }
      std::vector<int> part = sp_.encode(std::string(piece.text));
      ids.insert(ids.end(), part.begin(), part.end());
    }
    if (add_special && special_.add_eos && special_.eos_id) ids.push_back(*special_.eos_id);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::vector<int> keep;
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_.size()) continue;
      if (skip_special && (sp_.is_control(id) || (special_.unk_id && id == *special_.unk_id))) continue;
      keep.push_back(id);
    }
    std::string out = sp_.decode(keep);
    return clean_up_ ? clean_up_tokenization(out) : out;
  }

  int64_t vocab_size() const override { return sp_.size(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int id = sp_.piece_to_id(std::string(token));
    if (id == sp_.unk_id() && token != sp_.id_to_piece(sp_.unk_id())) return std::nullopt;
    return id;
  }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < sp_.size() ? sp_.id_to_piece(id) : std::string();
  }
  const SpecialTokens& special() const override { return special_; }
  const std::string& chat_template() const override { return chat_template_; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  spm::Model sp_;
  SpecialTokens special_;
  std::vector<AddedToken> specials_;
  std::string chat_template_;
  bool clean_up_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path, const json& config,
                                                        bool split_special) {
  return std::make_unique<SentencePieceTokenizer>(path, config, split_special);
}

}  // namespace flatune
