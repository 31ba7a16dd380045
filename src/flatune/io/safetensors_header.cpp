// The torch-free half of io/safetensors: validating a header, so the libFuzzer target in
// bench/fuzz builds without libtorch.
#include "flatune/io/safetensors_header.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "flatune/core/error.h"

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

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 8) fail(where, "truncated: " + std::to_string(size) + " bytes, too short for a safetensors header");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kMaxHeaderBytes)
    fail(where,
         "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
  if (n > size - 8)
    fail(where,
         "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) + " bytes)");
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
    j = nlohmann::json::parse(reinterpret_cast<const char*>(data + 8), reinterpret_cast<const char*>(data + 8 + n),
                              on_event);
  } catch (const nlohmann::json::exception&) { fail(where, "header is not valid JSON"); }
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
    if (e.end > data_size)
      fail(where, at + " spans bytes [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                      ") past the end of the data (" + std::to_string(data_size) + " bytes)");
    if (count > UINT64_MAX / static_cast<uint64_t>(elem) || count * elem != e.end - e.begin)
      fail(where, at + " has " + std::to_string(e.end - e.begin) + " bytes but its shape and dtype need " +
                      std::to_string(count * elem));
    h.tensors.push_back(std::move(e));
  }
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : h.tensors) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->begin < b->begin || (a->begin == b->begin && a->end < b->end); });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail(where, "tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  return h;
}

}  // namespace flatune
