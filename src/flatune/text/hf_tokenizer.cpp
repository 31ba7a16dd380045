#include "flatune/text/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>
#include <queue>
#include <set>
#include <tuple>
#include <unordered_map>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/text/added_tokens.h"

namespace flatune {

namespace {

// ---------------------------------------------------------------- byte-level alphabet
// GPT-2's reversible map from bytes to printable code points: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100 onwards in byte order.
struct ByteAlphabet {
  std::array<std::string, 256> to_char;
  std::unordered_map<uint32_t, uint8_t> to_byte;
  ByteAlphabet() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = keep ? b : next++;
      to_char[b] = encode_utf8(cp);
      to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
  static std::string encode_utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += char(cp);
    else if (cp < 0x800) {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | (cp >> 12));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | (cp >> 18));
      s += char(0x80 | ((cp >> 12) & 0x3F));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
    return s;
  }
};
const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}

uint32_t decode_utf8_at(const std::string& s, size_t i, size_t n) {
  unsigned char c = s[i];
  if (n == 1) return c;
  uint32_t cp = c & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

// Replaces invalid UTF-8 with U+FFFD per maximal invalid subsequence (as String::from_utf8_lossy).
std::string utf8_lossy(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t n = c < 0x80                   ? 1
               : (c >= 0xC2 && c <= 0xDF) ? 2
               : (c >= 0xE0 && c <= 0xEF) ? 3
               : (c >= 0xF0 && c <= 0xF4) ? 4
                                          : 0;
    bool ok = n > 0 && i + n <= s.size();
    size_t valid = 1;
    if (n > 1) {
      for (size_t k = 1; k < n && i + k < s.size(); ++k) {
        unsigned char d = s[i + k];
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1) {
          if (c == 0xE0) lo = 0xA0;
          if (c == 0xED) hi = 0x9F;
          if (c == 0xF0) lo = 0x90;
          if (c == 0xF4) hi = 0x8F;
        }
        if (d < lo || d > hi) {
          ok = false;
          break;
        }
        ++valid;
      }
      if (valid < n) ok = false;
    }
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += std::max<size_t>(1, n > 1 ? valid : 1);
    }
  }
  return out;
}

// ---------------------------------------------------------------- regex (PCRE2, UTF + UCP)
class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      fail(where, "cannot compile pre-tokenizer pattern at offset " + std::to_string(off) + ": " +
                      reinterpret_cast<char*>(buf));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches [begin, end) in s (valid UTF-8 expected; invalid input is checked
  // by PCRE2 and then treated as having no matches).
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& s) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= s.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, 0, md, nullptr);
      if (rc < 0) break;
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // empty match: step one character
        if (b >= s.size()) break;
        start = b + utf8_char_len(s, b);
        continue;
      }
      out.emplace_back(b, e);
      start = e;
    }
    pcre2_match_data_free(md);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
};

const char* kGpt2Pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// ---------------------------------------------------------------- pipeline components

struct Normalizer {
  std::string type;  // NFC Prepend Replace
  std::string a, b;  // Prepend: a; Replace: a -> b
};

struct PreTokenizer {
  std::string type;  // ByteLevel Split Metaspace
  bool add_prefix_space = false, use_regex = true;
  std::shared_ptr<Regex> regex;
  std::string split_behavior;  // Isolated Removed MergedWithPrevious MergedWithNext
  std::string replacement = "\xE2\x96\x81";
  std::string prepend_scheme = "always";
  bool split = true;
};

struct Decoder {
  std::string type;  // ByteLevel ByteFallback Fuse Strip Replace Metaspace
  std::string a, b;
  int start = 0, stop = 0;
  std::string prepend_scheme = "always";
};

struct Piece {
  std::string text;
  bool first = false;  // first piece of the input (Metaspace prepend_scheme "first")
};

std::string get_pattern(const json& p, const std::string& where, const std::string& component, bool* is_regex) {
  if (!p.is_object()) fail(where, component + ": pattern must be an object");
  if (p.contains("String")) {
    *is_regex = false;
    return p["String"].get<std::string>();
  }
  if (p.contains("Regex")) {
    *is_regex = true;
    return p["Regex"].get<std::string>();
  }
  fail(where, component + ": pattern must be {\"String\": …} or {\"Regex\": …}");
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

void parse_normalizer(const json& j, const std::string& where, std::vector<Normalizer>& out) {
  if (j.is_null()) return;
  std::string type = j.value("type", std::string());
  if (type == "Sequence") {
    for (const auto& n : j.at("normalizers")) parse_normalizer(n, where, out);
  } else if (type == "NFC") {
    out.push_back({"NFC", "", ""});
  } else if (type == "Prepend") {
    out.push_back({"Prepend", j.at("prepend").get<std::string>(), ""});
  } else if (type == "Replace") {
    bool is_regex = false;
    std::string pat = get_pattern(j.at("pattern"), where, "Replace normalizer", &is_regex);
    if (is_regex) fail(where, "unsupported normalizer: Replace with a Regex pattern");
    out.push_back({"Replace", pat, j.at("content").get<std::string>()});
  } else {
    fail(where, "unsupported normalizer type '" + type + "'");
  }
}

void parse_pre_tokenizer(const json& j, const std::string& where, std::vector<PreTokenizer>& out) {
  if (j.is_null()) return;
  std::string type = j.value("type", std::string());
  PreTokenizer p;
  p.type = type;
  if (type == "Sequence") {
    for (const auto& n : j.at("pretokenizers")) parse_pre_tokenizer(n, where, out);
    return;
  } else if (type == "ByteLevel") {
    p.add_prefix_space = j.value("add_prefix_space", false);
    p.use_regex = j.value("use_regex", true);
    if (p.use_regex) p.regex = std::make_shared<Regex>(kGpt2Pattern, where);
  } else if (type == "Split") {
    bool is_regex = false;
    std::string pat = get_pattern(j.at("pattern"), where, "Split pre_tokenizer", &is_regex);
    if (!is_regex) {
      // A literal string: escape it for PCRE2.
      std::string esc;
      for (char c : pat) {
        if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) esc += '\\';
        esc += c;
      }
      pat = esc;
    }
    p.regex = std::make_shared<Regex>(pat, where);
    p.split_behavior = j.value("behavior", std::string("Isolated"));
    if (j.value("invert", false)) fail(where, "unsupported pre_tokenizer option: Split with invert=true");
    if (p.split_behavior != "Isolated" && p.split_behavior != "Removed" && p.split_behavior != "MergedWithPrevious" &&
        p.split_behavior != "MergedWithNext")
      fail(where, "unsupported Split behavior '" + p.split_behavior + "'");
  } else if (type == "Metaspace") {
    p.replacement = j.value("replacement", p.replacement);
    if (j.contains("prepend_scheme")) p.prepend_scheme = j["prepend_scheme"].get<std::string>();
    else if (j.contains("add_prefix_space")) p.prepend_scheme = j["add_prefix_space"].get<bool>() ? "always" : "never";
    p.split = j.value("split", true);
  } else {
    fail(where, "unsupported pre_tokenizer type '" + type + "'");
  }
  out.push_back(std::move(p));
}

void parse_decoder(const json& j, const std::string& where, std::vector<Decoder>& out) {
  if (j.is_null()) return;
  std::string type = j.value("type", std::string());
  Decoder d;
  d.type = type;
  if (type == "Sequence") {
    for (const auto& n : j.at("decoders")) parse_decoder(n, where, out);
    return;
  } else if (type == "ByteLevel" || type == "ByteFallback" || type == "Fuse") {
  } else if (type == "Strip") {
    d.a = j.at("content").get<std::string>();
    d.start = j.value("start", 0);
    d.stop = j.value("stop", 0);
  } else if (type == "Replace") {
    bool is_regex = false;
    d.a = get_pattern(j.at("pattern"), where, "Replace decoder", &is_regex);
    if (is_regex) fail(where, "unsupported decoder: Replace with a Regex pattern");
    d.b = j.at("content").get<std::string>();
  } else if (type == "Metaspace") {
    d.a = j.value("replacement", std::string("\xE2\x96\x81"));
    if (j.contains("prepend_scheme")) d.prepend_scheme = j["prepend_scheme"].get<std::string>();
    else if (j.contains("add_prefix_space")) d.prepend_scheme = j["add_prefix_space"].get<bool>() ? "always" : "never";
  } else {
    fail(where, "unsupported decoder type '" + type + "'");
  }
  out.push_back(std::move(d));
}

// ---------------------------------------------------------------- the tokenizer

class HfBpeTokenizer : public Tokenizer {
 public:
  HfBpeTokenizer(const std::string& path, const json& config) : path_(path) {
    json j = read_json_file(path);
    if (!j.is_object()) fail(path, "expected a JSON object");
    try {
      load(j, config);
    } catch (const json::exception& e) { fail(path, std::string("unexpected structure: ") + e.what()); }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special) ids.insert(ids.end(), template_prefix_.begin(), template_prefix_.end());
    bool first = true;
    for (const auto& piece : split_added_tokens(text, added_)) {
      if (piece.added_id >= 0) {
        ids.push_back(piece.added_id);
      } else {
        encode_plain(std::string(piece.text), first, ids);
      }
      first = false;
    }
    if (add_special) ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::vector<std::string> tokens;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size())) continue;
      if (skip_special && special_ids_.count(id)) continue;
      tokens.push_back(id_to_token_[id]);
    }
    for (const auto& d : decoders_) tokens = apply_decoder(d, tokens);
    std::string out;
    for (const auto& t : tokens) out += t;
    if (clean_up_) out = clean_up_tokenization(out);
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    auto it = vocab_.find(std::string(token));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < static_cast<int32_t>(id_to_token_.size()) ? id_to_token_[id] : std::string();
  }
  const SpecialTokens& special() const override { return special_; }
  const std::string& chat_template() const override { return chat_template_; }
  std::string kind() const override { return byte_level_ ? "bpe-bytelevel" : "bpe-sentencepiece"; }

 private:
  void load(const json& j, const json& config) {
    const json& model = j.at("model");
    std::string type = model.value("type", std::string("BPE"));
    if (type != "BPE") fail(path_, "unsupported model type '" + type + "' (only BPE)");
    if (!model.value("dropout", json()).is_null() && model["dropout"].get<double>() != 0.0)
      fail(path_, "unsupported model option: BPE dropout");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(k) && !model[k].is_null() && !model[k].get<std::string>().empty())
        fail(path_, std::string("unsupported model option: ") + k);
    byte_fallback_ = model.value("byte_fallback", false);
    fuse_unk_ = model.value("fuse_unk", false);
    ignore_merges_ = model.value("ignore_merges", false);
    for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
      int32_t id = token_id(it.value(), it.key());
      vocab_[it.key()] = id;
      if (static_cast<size_t>(id) >= id_to_token_.size()) id_to_token_.resize(id + 1);
      id_to_token_[id] = it.key();
    }
    if (model.contains("unk_token") && !model["unk_token"].is_null()) {
      std::string unk = model["unk_token"].get<std::string>();
      auto it = vocab_.find(unk);
      if (it == vocab_.end()) fail(path_, "unk_token '" + unk + "' is not in the vocabulary");
      unk_id_ = it->second;
    }
    int32_t rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string a, b;
      if (m.is_string()) {
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ', 1);
        if (sp == std::string::npos) fail(path_, "merge '" + s + "' is not two tokens separated by a space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(path_, "merge #" + std::to_string(rank) + " must be \"a b\" or [a, b]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end())
        fail(path_, "merge #" + std::to_string(rank) + " names unknown token '" + (ia == vocab_.end() ? a : b) + "'");
      if (im == vocab_.end())
        fail(path_, "merge #" + std::to_string(rank) + " makes '" + a + b + "', which is not in the vocabulary");
      merges_[pair_key(ia->second, ib->second)] = {rank++, im->second};
    }
    for (const auto& t : j.value("added_tokens", json::array())) {
      AddedToken a;
      a.content = t.at("content").get<std::string>();
      a.id = token_id(t.at("id"), a.content);
      a.special = t.value("special", false);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      if (t.value("single_word", false))
        fail(path_, "unsupported added token option: single_word (token '" + a.content + "')");
      if (t.value("normalized", false) && !a.special)
        fail(path_, "unsupported added token option: normalized=true (token '" + a.content + "')");
      if (static_cast<size_t>(a.id) >= id_to_token_.size()) id_to_token_.resize(a.id + 1);
      id_to_token_[a.id] = a.content;
      vocab_[a.content] = a.id;
      if (a.special) special_ids_.insert(a.id);
      added_.push_back(a);
    }
    parse_normalizer(j.value("normalizer", json()), path_, normalizers_);
    parse_pre_tokenizer(j.value("pre_tokenizer", json()), path_, pre_tokenizers_);
    parse_decoder(j.value("decoder", json()), path_, decoders_);
    for (const auto& p : pre_tokenizers_) byte_level_ = byte_level_ || p.type == "ByteLevel";
    parse_post_processor(j.value("post_processor", json()));
    for (const auto* ids : {&template_prefix_, &template_suffix_})
      for (int32_t id : *ids)
        if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()))
          fail(path_, "post_processor adds id " + std::to_string(id) + ", which is not in the vocabulary");

    // tokenizer_config.json: special tokens; for Llama tokenizer classes transformers rebuilds
    // the post-processor from add_bos_token/add_eos_token, so those decide there.
    auto id_of = [this](const std::string& s) { return token_to_id(s); };
    special_ = read_special_tokens(config, id_of, false, false, path_);
    if (!special_.unk_id && unk_id_ >= 0) special_.unk_id = unk_id_;
    std::string cls = config.is_object() ? config.value("tokenizer_class", std::string()) : std::string();
    if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast" || cls == "CodeLlamaTokenizer" ||
        cls == "CodeLlamaTokenizerFast") {
      bool bos = config.value("add_bos_token", true), eos = config.value("add_eos_token", false);
      template_prefix_.clear();
      template_suffix_.clear();
      if (bos && special_.bos_id) template_prefix_.push_back(*special_.bos_id);
      if (eos && special_.eos_id) template_suffix_.push_back(*special_.eos_id);
    }
    auto has = [](const std::vector<int32_t>& v, std::optional<int32_t> id) {
      return id && std::find(v.begin(), v.end(), *id) != v.end();
    };
    special_.add_bos = has(template_prefix_, special_.bos_id);
    special_.add_eos = has(template_suffix_, special_.eos_id);
    clean_up_ = config.is_object() && config.value("clean_up_tokenization_spaces", false);
    if (config.is_object() && config.contains("chat_template") && config["chat_template"].is_string())
      chat_template_ = config["chat_template"].get<std::string>();
  }

  // Ids index a dense table, so one absurd id would allocate gigabytes: real vocabularies stay
  // far below 2^24 (Llama 3: 128,256; Qwen: 151,665).
  int32_t token_id(const json& v, const std::string& token) const {
    constexpr int64_t kMaxId = 1 << 24;
    if (!v.is_number_integer()) fail(path_, "id of token '" + token + "' is not an integer");
    if (v.is_number_unsigned() ? v.get<uint64_t>() >= static_cast<uint64_t>(kMaxId)
                               : (v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxId))
      fail(path_, "id " + v.dump() + " of token '" + token + "' is outside [0, " + std::to_string(kMaxId) + ")");
    return static_cast<int32_t>(v.get<int64_t>());
  }

  void parse_post_processor(const json& j) {
    if (j.is_null()) return;
    std::string type = j.value("type", std::string());
    if (type == "Sequence") {
      for (const auto& p : j.at("processors")) parse_post_processor(p);
    } else if (type == "ByteLevel") {
      // Only adjusts offsets; ids are unchanged.
    } else if (type == "TemplateProcessing") {
      bool seen_sequence = false;
      for (const auto& item : j.at("single")) {
        if (item.contains("Sequence")) {
          seen_sequence = true;
          continue;
        }
        std::string name = item.at("SpecialToken").at("id").get<std::string>();
        const json& st = j.at("special_tokens").at(name);
        for (const auto& id : st.at("ids"))
          (seen_sequence ? template_suffix_ : template_prefix_).push_back(id.get<int32_t>());
      }
    } else {
      fail(path_, "unsupported post_processor type '" + type + "'");
    }
  }

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::string normalize(std::string s) const {
    for (const auto& n : normalizers_) {
      if (n.type == "NFC") {
        // ASCII text is already in NFC: skip the two UTF-16 conversions ICU needs.
        if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) continue;
        UErrorCode err = U_ZERO_ERROR;
        const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
        if (U_FAILURE(err)) fail(path_, "ICU NFC normaliser unavailable");
        icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
        icu::UnicodeString r = nfc->normalize(u, err);
        if (U_FAILURE(err)) continue;
        s.clear();
        r.toUTF8String(s);
      } else if (n.type == "Prepend") {
        if (!s.empty()) s = n.a + s;
      } else if (n.type == "Replace") {
        replace_all(s, n.a, n.b);
      }
    }
    return s;
  }

  // Splits s around the pattern's matches; `behavior` says what happens to the matches, as in
  // tokenizers' SplitDelimiterBehavior.
  static std::vector<std::string> split_by(const std::string& s, const Regex& re, const std::string& behavior) {
    std::vector<std::pair<std::string, bool>> segs;  // (text, is_match)
    size_t prev = 0;
    for (auto [b, e] : re.find_all(s)) {
      if (b > prev) segs.emplace_back(s.substr(prev, b - prev), false);
      segs.emplace_back(s.substr(b, e - b), true);
      prev = e;
    }
    if (prev < s.size()) segs.emplace_back(s.substr(prev), false);
    std::vector<std::string> out;
    for (size_t k = 0; k < segs.size(); ++k) {
      const auto& [text, is_match] = segs[k];
      if (behavior == "Isolated") {
        out.push_back(text);
      } else if (behavior == "Removed") {
        if (!is_match) out.push_back(text);
      } else if (behavior == "MergedWithPrevious") {
        if (is_match && !out.empty()) out.back() += text;
        else out.push_back(text);
      } else {  // MergedWithNext
        if (is_match && k + 1 < segs.size() && !segs[k + 1].second) {
          out.push_back(text + segs[k + 1].first);
          ++k;
        } else {
          out.push_back(text);
        }
      }
    }
    return out;
  }

  std::vector<Piece> pre_tokenize(const std::string& s, bool first_piece) const {
    std::vector<Piece> pieces = {{s, first_piece}};
    for (const auto& p : pre_tokenizers_) {
      std::vector<Piece> next;
      for (const auto& piece : pieces) {
        if (p.type == "Split") {
          for (auto& t : split_by(piece.text, *p.regex, p.split_behavior)) next.push_back({t, piece.first});
        } else if (p.type == "ByteLevel") {
          std::string text = piece.text;
          if (p.add_prefix_space && !text.empty() && text[0] != ' ') text = " " + text;
          std::vector<std::string> parts;
          if (p.use_regex) parts = split_by(text, *p.regex, "Isolated");
          else parts = {text};
          for (const auto& part : parts) {
            std::string mapped;
            for (unsigned char c : part) mapped += byte_alphabet().to_char[c];
            next.push_back({mapped, piece.first});
          }
        } else if (p.type == "Metaspace") {
          std::string text = piece.text;
          replace_all(text, " ", p.replacement);
          bool prepend = p.prepend_scheme == "always" || (p.prepend_scheme == "first" && piece.first);
          if (prepend && text.compare(0, p.replacement.size(), p.replacement) != 0) text = p.replacement + text;
          if (!p.split) {
            next.push_back({text, piece.first});
          } else {
            size_t start = 0;
            for (size_t pos = text.find(p.replacement, 1); pos != std::string::npos;
                 pos = text.find(p.replacement, pos + 1)) {
              if (pos > start) next.push_back({text.substr(start, pos - start), piece.first});
              start = pos;
            }
            if (start < text.size()) next.push_back({text.substr(start), piece.first});
          }
        }
      }
      pieces = std::move(next);
    }
    return pieces;
  }

  void encode_plain(const std::string& text, bool first_piece, std::vector<int32_t>& ids) const {
    std::string norm = normalize(text);
    for (const auto& piece : pre_tokenize(norm, first_piece)) {
      if (piece.text.empty()) continue;
      {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        auto it = cache_.find(piece.text);
        if (it != cache_.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      std::vector<int32_t> word = bpe(piece.text);
      ids.insert(ids.end(), word.begin(), word.end());
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (cache_.size() > 200000) cache_.clear();
      cache_.emplace(piece.text, std::move(word));
    }
  }

  // BPE of one pre-token: start from characters (or unknown-character fallbacks), apply the
  // lowest-ranked merge among adjacent pairs until none applies. A doubly linked list and a
  // min-heap keyed by (rank, position) keep it O(n log n) for long words.
  std::vector<int32_t> bpe(const std::string& word) const {
    if (ignore_merges_) {
      auto it = vocab_.find(word);
      if (it != vocab_.end()) return {it->second};
    }
    struct Sym {
      int32_t id;
      int prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    std::vector<int32_t> out;
    // Initial symbols: one per character; unknown characters become byte tokens or unk.
    std::vector<int32_t> initial;
    std::vector<bool> final_token;
    size_t i = 0;
    while (i < word.size()) {
      size_t n = utf8_char_len(word, i);
      std::string ch = word.substr(i, n);
      auto it = vocab_.find(ch);
      if (it != vocab_.end()) {
        initial.push_back(it->second);
        final_token.push_back(false);
      } else if (byte_fallback_) {
        bool all = true;
        std::vector<int32_t> bytes;
        for (unsigned char c : ch) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "<0x%02X>", c);
          auto b = vocab_.find(buf);
          if (b == vocab_.end()) {
            all = false;
            break;
          }
          bytes.push_back(b->second);
        }
        if (all) {
          for (int32_t b : bytes) {
            initial.push_back(b);
            final_token.push_back(true);
          }
        } else {
          push_unk(initial, final_token);
        }
      } else {
        push_unk(initial, final_token);
      }
      i += n;
    }
    const int n = static_cast<int>(initial.size());
    for (int k = 0; k < n; ++k) syms.push_back({initial[k], k - 1, k + 1 < n ? k + 1 : -1, true});
    using Entry = std::tuple<int32_t, int, int32_t, int32_t>;  // rank, left position, left id, right id
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
    auto consider = [&](int left) {
      if (left < 0 || syms[left].next < 0) return;
      int right = syms[left].next;
      if (final_token[left] || final_token[right]) return;
      auto m = merges_.find(pair_key(syms[left].id, syms[right].id));
      if (m != merges_.end()) heap.emplace(m->second.first, left, syms[left].id, syms[right].id);
    };
    for (int k = 0; k + 1 < n; ++k) consider(k);
    while (!heap.empty()) {
      auto [rank, left, lid, rid] = heap.top();
      heap.pop();
      if (!syms[left].alive || syms[left].id != lid || syms[left].next < 0) continue;
      int right = syms[left].next;
      if (syms[right].id != rid) continue;
      syms[left].id = merges_.at(pair_key(lid, rid)).second;
      syms[right].alive = false;
      syms[left].next = syms[right].next;
      if (syms[right].next >= 0) syms[syms[right].next].prev = left;
      consider(syms[left].prev);
      consider(left);
    }
    for (int k = 0; k >= 0 && k < n; k = syms[k].next) out.push_back(syms[k].id);
    return out;
  }

  void push_unk(std::vector<int32_t>& initial, std::vector<bool>& final_token) const {
    if (unk_id_ < 0) return;  // no unk token: the character is dropped, as tokenizers does
    if (fuse_unk_ && !initial.empty() && initial.back() == unk_id_ && final_token.back()) return;
    initial.push_back(unk_id_);
    final_token.push_back(true);
  }

  std::vector<std::string> apply_decoder(const Decoder& d, const std::vector<std::string>& tokens) const {
    std::vector<std::string> out;
    if (d.type == "ByteLevel") {
      // Map every token's characters back to bytes; join and repair invalid UTF-8 once.
      std::string bytes;
      for (const auto& t : tokens) {
        size_t i = 0;
        while (i < t.size()) {
          size_t n = utf8_char_len(t, i);
          uint32_t cp = decode_utf8_at(t, i, n);
          auto it = byte_alphabet().to_byte.find(cp);
          if (it != byte_alphabet().to_byte.end()) bytes += static_cast<char>(it->second);
          else bytes += t.substr(i, n);
          i += n;
        }
      }
      out.push_back(utf8_lossy(bytes));
    } else if (d.type == "ByteFallback") {
      std::string pending;
      auto flush = [&] {
        if (pending.empty()) return;
        std::string fixed = utf8_lossy(pending);
        if (fixed != pending) {
          // Invalid sequences become one U+FFFD per byte, as tokenizers does.
          for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
        } else {
          out.push_back(pending);
        }
        pending.clear();
      };
      for (const auto& t : tokens) {
        unsigned int b = 0;
        if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::sscanf(t.c_str() + 3, "%2X", &b) == 1) {
          pending += static_cast<char>(b);
        } else {
          flush();
          out.push_back(t);
        }
      }
      flush();
    } else if (d.type == "Fuse") {
      std::string all;
      for (const auto& t : tokens) all += t;
      out.push_back(all);
    } else if (d.type == "Strip") {
      for (std::string t : tokens) {
        for (int k = 0; k < d.start && t.compare(0, d.a.size(), d.a) == 0; ++k) t.erase(0, d.a.size());
        for (int k = 0; k < d.stop && t.size() >= d.a.size() && t.compare(t.size() - d.a.size(), d.a.size(), d.a) == 0;
             ++k)
          t.erase(t.size() - d.a.size());
        out.push_back(t);
      }
    } else if (d.type == "Replace") {
      for (std::string t : tokens) {
        replace_all(t, d.a, d.b);
        out.push_back(t);
      }
    } else if (d.type == "Metaspace") {
      for (size_t k = 0; k < tokens.size(); ++k) {
        std::string t = tokens[k];
        replace_all(t, d.a, " ");
        if (k == 0 && d.prepend_scheme != "never" && !t.empty() && t[0] == ' ') t.erase(0, 1);
        out.push_back(t);
      }
    }
    return out;
  }

  std::string path_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged id)
  std::vector<AddedToken> added_;
  std::set<int32_t> special_ids_;
  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_tokenizers_;
  std::vector<Decoder> decoders_;
  std::vector<int32_t> template_prefix_, template_suffix_;
  SpecialTokens special_;
  std::string chat_template_;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false, byte_level_ = false, clean_up_ = false;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path, const json& config) {
  return std::make_unique<HfBpeTokenizer>(path, config);
}

}  // namespace flatune
