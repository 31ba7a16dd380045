// libFuzzer: arbitrary bytes as a safetensors file. The validator must either accept (and then
// every span it returns lies inside the data, without overlap) or throw flatune::Error.
#include <cstdlib>

#include "flatune/core/error.h"
#include "flatune/io/safetensors_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    flatune::SafetensorsHeader h = flatune::parse_safetensors_header(data, size, "fuzz.safetensors");
    // What the reader trusts afterwards: every tensor's bytes are inside the file.
    for (const auto& t : h.tensors)
      if (t.begin > t.end || h.data_offset + t.end > size) std::abort();
  } catch (const flatune::Error&) {}
  return 0;
}
