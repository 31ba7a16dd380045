// libFuzzer: arbitrary bytes as config.json. Anything but a LlamaConfig or flatune::Error (a
// json type_error escaping, an abort) is a finding; an accepted config must be consistent.
#include <cstdlib>
#include <string>

#include "flatune/core/error.h"
#include "flatune/core/json.h"
#include "flatune/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    flatune::json j = flatune::parse_json_text(std::string(reinterpret_cast<const char*>(data), size), "config.json");
    flatune::LlamaConfig c = flatune::parse_llama_config(j, "config.json");
    if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim <= 0)
      std::abort();
    // Saving what was accepted must work and read back to the same architecture.
    flatune::LlamaConfig back = flatune::parse_llama_config(flatune::llama_config_to_json(c), "config.json (saved)");
    if (back.hidden_size != c.hidden_size || back.head_dim != c.head_dim) std::abort();
  } catch (const flatune::Error&) {}
  return 0;
}
