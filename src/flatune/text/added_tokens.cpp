#include "flatune/text/added_tokens.h"

#include <array>

#include "flatune/core/error.h"

namespace flatune {

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
}  // namespace

size_t utf8_char_len(const std::string_view& s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

std::vector<TextPiece> split_added_tokens(std::string_view text, const std::vector<AddedToken>& tokens) {
  std::vector<TextPiece> out;
  if (tokens.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return out;
  }
  // Only positions whose byte starts some token are tried against the tokens: Llama 3 has 256
  // special tokens, all starting with '<', and comparing each at every byte was most of the
  // encoding time of short lines.
  std::array<bool, 256> starts{};
  for (const auto& t : tokens)
    if (!t.content.empty()) starts[static_cast<unsigned char>(t.content[0])] = true;
  size_t plain_start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* best = nullptr;
    if (starts[static_cast<unsigned char>(text[i])])
      for (const auto& t : tokens)
        if (!t.content.empty() && text.compare(i, t.content.size(), t.content) == 0 &&
            (!best || t.content.size() > best->content.size()))
          best = &t;
    if (!best) {
      i += utf8_char_len(text, i);
      continue;
    }
    size_t begin = i, end = i + best->content.size();
    if (best->lstrip)
      while (begin > plain_start && is_space(text[begin - 1])) --begin;
    if (best->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    if (begin > plain_start) out.push_back({text.substr(plain_start, begin - plain_start), -1});
    out.push_back({text.substr(begin, end - begin), best->id});
    plain_start = i = end;
  }
  if (plain_start < text.size()) out.push_back({text.substr(plain_start), -1});
  return out;
}

SpecialTokens read_special_tokens(const json& config,
                                  const std::function<std::optional<int32_t>(const std::string&)>& id_of,
                                  bool default_add_bos, bool default_add_eos, const std::string& where) {
  SpecialTokens s;
  s.add_bos = default_add_bos;
  s.add_eos = default_add_eos;
  if (!config.is_object()) return s;
  auto token = [&](const char* key) -> std::optional<int32_t> {
    if (!config.contains(key) || config[key].is_null()) return std::nullopt;
    const json& v = config[key];
    std::string content;
    if (v.is_string()) content = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v["content"].is_string())
      content = v["content"].get<std::string>();
    else fail(where, std::string("field '") + key + "' must be a string or {\"content\": …}");
    auto id = id_of(content);
    if (!id)
      fail(where, std::string("field '") + key + "' names token '" + content + "', which is not in the vocabulary");
    return id;
  };
  s.bos_id = token("bos_token");
  s.eos_id = token("eos_token");
  s.pad_id = token("pad_token");
  s.unk_id = token("unk_token");
  if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
    s.add_bos = config["add_bos_token"].get<bool>();
  if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean())
    s.add_eos = config["add_eos_token"].get<bool>();
  return s;
}

std::string clean_up_tokenization(std::string s) {
  static const std::vector<std::pair<std::string, std::string>> rules = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : rules) {
    size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
      s.replace(pos, from.size(), to);
      pos += to.size();
    }
  }
  return s;
}

}  // namespace flatune
