#include "flatune/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace flatune {

namespace {

// A header larger than this is refused before it is read: real checkpoints stay far below.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

int64_t dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

}  // namespace

torch::ScalarType safetensors_dtype_to_torch(const std::string& dtype, const std::string& where) {
  if (dtype == "F64") return torch::kDouble;
  if (dtype == "F32") return torch::kFloat;
  if (dtype == "F16") return torch::kHalf;
  if (dtype == "BF16") return torch::kBFloat16;
  if (dtype == "I64") return torch::kLong;
  if (dtype == "I32") return torch::kInt;
  if (dtype == "I16") return torch::kShort;
  if (dtype == "I8") return torch::kChar;
  if (dtype == "U8") return torch::kByte;
  if (dtype == "BOOL") return torch::kBool;
  fail(where, "unknown dtype '" + dtype + "'");
}

std::string torch_dtype_to_safetensors(torch::ScalarType t) {
  switch (t) {
    case torch::kDouble: return "F64";
    case torch::kFloat: return "F32";
    case torch::kHalf: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kLong: return "I64";
    case torch::kInt: return "I32";
    case torch::kShort: return "I16";
    case torch::kChar: return "I8";
    case torch::kByte: return "U8";
    case torch::kBool: return "BOOL";
    default: fail("safetensors", std::string("dtype ") + c10::toString(t) + " cannot be stored");
  }
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 8) fail(where, "truncated: " + std::to_string(size) + " bytes, too short for a safetensors header");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeaderBytes) fail(where, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > size - 8) fail(where, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
  SafetensorsHeader h;
  h.data_offset = 8 + n;
  const uint64_t data_size = size - h.data_offset;
  nlohmann::json j;
  // JSON objects silently keep the last of repeated keys; the parser callback sees every key of
  // the top-level object, so a repeated tensor name is caught before it can hide another.
  std::set<std::string> keys;
  std::string duplicate;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  try {
    j = nlohmann::json::parse(reinterpret_cast<const char*>(data + 8), reinterpret_cast<const char*>(data + 8 + n), on_event);
  } catch (const nlohmann::json::exception&) {
    fail(where, "header is not valid JSON");
  }
  if (!duplicate.empty()) fail(where, "duplicate tensor name '" + duplicate + "'");
  if (!j.is_object()) fail(where, "header is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(where, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail(where, "__metadata__ value '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string at = "tensor '" + name + "'";
    if (!v.is_object()) fail(where, at + " is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where, at + " has no dtype");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(where, at + " has no shape");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      fail(where, at + " has no data_offsets [begin, end]");
    TensorEntry e;
    e.name = name;
    e.dtype = v["dtype"].get<std::string>();
    int64_t elem = dtype_size(e.dtype);
    if (elem == 0) fail(where, at + " has unknown dtype '" + e.dtype + "'");
    // The element count is built with overflow checks: a hostile shape must not wrap around.
    uint64_t count = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(where, at + " has a shape entry that is not a non-negative integer");
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX)) fail(where, at + " has a dimension too large");
      if (dim != 0 && count > UINT64_MAX / dim) fail(where, at + " has a shape whose size overflows");
      count *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : v["data_offsets"])
      if (!o.is_number_unsigned()) fail(where, at + " has data_offsets that are not non-negative integers");
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    if (e.end < e.begin) fail(where, at + " has data_offsets with end before begin");
    if (e.end > data_size) fail(where, at + " spans bytes [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") past the end of the data (" + std::to_string(data_size) + " bytes)");
    if (count > UINT64_MAX / static_cast<uint64_t>(elem) || count * elem != e.end - e.begin)
      fail(where, at + " has " + std::to_string(e.end - e.begin) + " bytes but its shape and dtype need " + std::to_string(count * elem));
    h.tensors.push_back(std::move(e));
  }
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : h.tensors) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin || (a->begin == b->begin && a->end < b->end); });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail(where, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  return h;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail(path, std::string("cannot map: ") + std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  try {
    header_ = parse_safetensors_header(data_, size_, path);
  } catch (...) {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
    throw;
  }
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path_, "no tensor named '" + name + "'");
  return header_.tensors[it->second];
}

torch::Tensor SafetensorsFile::load(const std::string& name) const {
  const TensorEntry& e = entry(name);
  auto t = torch::empty(e.shape, torch::TensorOptions().dtype(safetensors_dtype_to_torch(e.dtype, path_)));
  if (e.end > e.begin) std::memcpy(t.data_ptr(), data_ + header_.data_offset + e.begin, e.end - e.begin);
  return t;
}

NamedTensors read_safetensors(const std::string& path) {
  SafetensorsFile f(path);
  NamedTensors out;
  for (const auto& e : f.header().tensors) out.emplace_back(e.name, f.load(e.name));
  return out;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> cpu;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second) fail(path, "duplicate tensor name '" + name + "'");
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    uint64_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", torch_dtype_to_safetensors(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(c);
  }
  std::string json = header.dump();
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string buf;
  buf.reserve(8 + json.size() + offset);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) buf.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  buf += json;
  for (const auto& c : cpu) buf.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  write_file_atomic(path, buf);
}

}  // namespace flatune
