// libFuzzer: arbitrary bytes as tokenizer.json. Loading must give a tokenizer or a
// flatune::Error; a loaded tokenizer must encode and decode a few strings without crashing.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "flatune/core/error.h"
#include "flatune/core/json.h"
#include "flatune/text/hf_tokenizer.h"

namespace {
// The loader reads a file, so each input is written to one private temporary file.
const std::string& scratch_path() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/flatune-fuzz-tokenizer-XXXXXX.json";
    int fd = mkstemps(tmpl, 5);
    if (fd >= 0) close(fd);
    return std::string(tmpl);
  }();
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    auto tok = flatune::load_hf_tokenizer(path, flatune::json());
    for (const char* s :
         {"Hello world", " a  b\n\tc", "\xC3\xA9t\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC", "<s>x</s>", "\xff\xfe"}) {
      auto ids = tok->encode(s, true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();  // every id must name a token
      tok->decode(ids, false);
      tok->decode(ids, true);
    }
    tok->decode({0, 1, 2, -1, 1 << 30}, false);
  } catch (const flatune::Error&) {}
  return 0;
}
