// The safetensors header: its parsed form and the validator. No torch here, so the fuzz target
// (bench/fuzz) builds without libtorch; io/safetensors.h includes this for everyone else.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace flatune {

struct TensorEntry {
  std::string name;
  std::string dtype;  // F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte span within the data buffer
};

struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + header length
};

// Validates a header against the file size (torch-free, so it can be fuzzed). Throws Error
// naming `where` for: header length past the end or above the cap, non-object JSON, unknown
// dtype, shape x dtype size != span, span out of bounds or overlapping, duplicate names.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& where);

}  // namespace flatune
