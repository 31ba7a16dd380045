// libFuzzer: arbitrary bytes encoded by real tokenizers from shared/testdata (byte-level BPE:
// bytes-320 and qwen3 with NFC; SentencePiece-style BPE with byte fallback: spm-bpe-32k). Encoding
// never fails; every id is in the vocabulary; and the byte-level tokenizer without normaliser or
// clean-up gives back valid UTF-8 input exactly.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "flatune/text/tokenizer.h"

namespace {
std::vector<std::unique_ptr<flatune::Tokenizer>> tokenizers;
const flatune::Tokenizer* exact = nullptr;  // bytes-320: decode(encode(s)) == s for valid UTF-8

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t n = c < 0x80                   ? 1
               : (c >= 0xC2 && c <= 0xDF) ? 2
               : (c >= 0xE0 && c <= 0xEF) ? 3
               : (c >= 0xF0 && c <= 0xF4) ? 4
                                          : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      unsigned char d = s[i + k];
      unsigned char lo = 0x80, hi = 0xBF;
      if (k == 1 && c == 0xE0) lo = 0xA0;
      if (k == 1 && c == 0xED) hi = 0x9F;
      if (k == 1 && c == 0xF0) lo = 0x90;
      if (k == 1 && c == 0xF4) hi = 0x8F;
      if (d < lo || d > hi) return false;
    }
    i += n;
  }
  return true;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("FLATUNE_SHARED");
  const std::string dir = std::string(env ? env : FLATUNE_SHARED_DEFAULT) + "/testdata/tokenizers/";
  for (const char* name : {"bytes-320", "spm-bpe-32k", "qwen3"})
    tokenizers.push_back(flatune::load_tokenizer(dir + name));
  exact = tokenizers[0].get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const auto& tok : tokenizers) {
    for (bool special : {false, true}) {
      auto ids = tok->encode(text, special);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();
      std::string back = tok->decode(ids, false);
      if (tok.get() == exact && !special && valid_utf8(text) && back != text) std::abort();
    }
  }
  return 0;
}
