#include "flatune/landscape/directions.h"

#include <set>

#include "flatune/core/error.h"

namespace flatune {

namespace {

std::string shape_str(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

std::map<std::string, std::string> direction_settings(const DirectionOptions& o) {
  return {{"kind", "random"},
          {"seed", std::to_string(o.seed)},
          {"normalize", o.filter_normalize ? "filter" : "none"},
          {"keep_1d", o.keep_1d ? "true" : "false"},
          {"lora_only", o.lora_only ? "true" : "false"}};
}

void save_directions(const std::string& path, const DirectionSet& set) {
  if (set.directions.empty() || set.directions.size() > 2) fail(path, "one or two directions can be saved");
  NamedTensors all;
  for (size_t k = 0; k < set.directions.size(); ++k)
    for (const auto& [name, t] : set.directions[k]) all.emplace_back("d" + std::to_string(k + 1) + "/" + name, t);
  auto meta = set.settings;
  meta["directions"] = std::to_string(set.directions.size());
  meta["format"] = "flatune-directions";
  write_safetensors(path, all, meta);
}

NamedTensors align_direction(const NamedParams& params, const NamedTensors& dir, const std::string& where) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, t] : dir) by_name[name] = &t;
  NamedTensors out;
  for (const auto& [name, p] : params) {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail(where, "no direction for the model's tensor '" + name + "'");
    if (!it->second->sizes().equals(p.sizes()))
      fail(where, "tensor '" + name + "' has shape " + shape_str(it->second->sizes()) + ", the model's is " +
                      shape_str(p.sizes()));
    out.emplace_back(name, it->second->to(p.device()));  // beside the weight it moves (read from files on the CPU)
    by_name.erase(it);
  }
  if (!by_name.empty()) fail(where, "tensor '" + by_name.begin()->first + "' is not a parameter of the model");
  return out;
}

DirectionSet load_directions(const std::string& path, const NamedParams& params) {
  SafetensorsFile f(path);
  const auto& meta = f.header().metadata;
  auto count_it = meta.find("directions");
  if (meta.count("format") == 0 || meta.at("format") != "flatune-directions" || count_it == meta.end())
    fail(path, "not a directions file (no flatune-directions metadata)");
  const std::string count = count_it->second;
  if (count != "1" && count != "2") fail(path, "metadata 'directions' must be 1 or 2, not '" + count + "'");
  const size_t n = std::stoul(count);
  std::vector<NamedTensors> raw(n);
  for (const auto& e : f.header().tensors) {
    size_t slash = e.name.find('/');
    std::string prefix = e.name.substr(0, slash);
    if (slash == std::string::npos || prefix.size() != 2 || prefix[0] != 'd' || prefix[1] < '1' ||
        prefix[1] > static_cast<char>('0' + n))
      fail(path, "tensor '" + e.name + "' is not d1/<name> or d" + count + "/<name>");
    raw[prefix[1] - '1'].emplace_back(e.name.substr(slash + 1), f.load(e.name));
  }
  DirectionSet set;
  set.settings = meta;
  for (size_t k = 0; k < n; ++k)
    set.directions.push_back(align_direction(params, raw[k], path + ": direction " + std::to_string(k + 1)));
  return set;
}

}  // namespace flatune
