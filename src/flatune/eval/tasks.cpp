#include "flatune/eval/tasks.h"

#include <algorithm>
#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/json.h"

namespace flatune {

namespace {
std::string id_of(const json& j, size_t line) {
  if (!j.contains("id")) return std::to_string(line);
  return j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
}
std::vector<std::string> strings(const json& j, const std::string& key, const std::string& where) {
  const json& v = require_field(j, key, where);
  if (!v.is_array()) fail(where, "field '" + key + "' must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) fail(where, "field '" + key + "' must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}
}  // namespace

Task read_task(const std::string& path) {
  Task t;
  t.path = path;
  t.name = std::filesystem::path(path).stem().string();
  for_each_jsonl(path, [&](const json& j, size_t line) {
    const std::string where = path + ":" + std::to_string(line);
    if (!j.is_object()) fail(where, "expected a JSON object");
    std::string kind = j.contains("prompt") && j.contains("answer") ? "generative" : "multiple_choice";
    if (t.kind.empty()) t.kind = kind;
    if (kind != t.kind) fail(where, "mixes generative and multiple-choice items");
    std::string category = j.contains("category") && j["category"].is_string() ? j["category"].get<std::string>() : "";
    if (kind == "generative") {
      GenItem g{id_of(j, line), require_string(j, "prompt", where), require_string(j, "answer", where), category, {}};
      if (j.contains("until")) g.until = strings(j, "until", where);
      t.gen.push_back(std::move(g));
      return;
    }
    McItem item;
    item.id = id_of(j, line);
    item.category = category;
    if (j.contains("description")) item.description = require_string(j, "description", where);
    if (j.contains("contexts")) {
      item.contexts = strings(j, "contexts", where);
      item.choices = {require_string(j, "continuation", where)};
      if (item.contexts.size() < 2) fail(where, "field 'contexts' needs at least two entries");
    } else {
      item.contexts = {require_string(j, "context", where)};
      item.choices = strings(j, "choices", where);
      if (item.choices.empty()) fail(where, "no choices");
    }
    int64_t gold = require_int(j, "gold", where);
    if (gold < 0 || gold >= item.num_choices())
      fail(where,
           "gold " + std::to_string(gold) + " is out of range for " + std::to_string(item.num_choices()) + " choices");
    item.gold = static_cast<int>(gold);
    if (j.contains("labels")) {
      const json& l = j["labels"];
      if (!l.is_array() || static_cast<int>(l.size()) != item.num_choices())
        fail(where, "field 'labels' must hold one 0/1 per choice");
      for (const auto& v : l) {
        if (!v.is_number_integer() || (v.get<int>() != 0 && v.get<int>() != 1))
          fail(where, "field 'labels' must hold one 0/1 per choice");
        item.labels.push_back(v.get<int>());
      }
      if (std::find(item.labels.begin(), item.labels.end(), 1) == item.labels.end())
        fail(where, "field 'labels' marks no true choice");
    }
    t.mc.push_back(std::move(item));
  });
  if (t.kind.empty()) fail(path, "no items");
  return t;
}

}  // namespace flatune
