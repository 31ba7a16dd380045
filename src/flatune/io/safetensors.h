// safetensors: reading (over mmap, every header field validated before it is trusted) and
// writing (temporary name, fsync, rename). Format: 8-byte little-endian header length N, N
// bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data buffer the offsets point into.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "flatune/io/safetensors_header.h"

namespace flatune {

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // mmaps and validates
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool contains(const std::string& name) const;
  const TensorEntry& entry(const std::string& name) const;
  // A copy of the tensor (owning memory, CPU, the file's dtype).
  torch::Tensor load(const std::string& name) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes tensors (contiguous CPU copies are made as needed) atomically.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads every tensor of a file.
NamedTensors read_safetensors(const std::string& path);

// dtype names <-> torch
torch::ScalarType safetensors_dtype_to_torch(const std::string& dtype, const std::string& where);
std::string torch_dtype_to_safetensors(torch::ScalarType t);

}  // namespace flatune
