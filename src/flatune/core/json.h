// Reading JSON and JSONL files with errors that name the file, line and column.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace flatune {

using json = nlohmann::json;

// Parses a whole file as one JSON value. Errors: missing file, syntax (with line:column).
json read_json_file(const std::string& path);

// Parses text that came from `where` (a file name, for messages).
json parse_json_text(const std::string& text, const std::string& where);

// Calls fn(value, line_number) for each non-blank line of a JSONL file.
void for_each_jsonl(const std::string& path, const std::function<void(const json&, size_t)>& fn);

// Typed field access with an error naming the file, the item and the field.
const json& require_field(const json& obj, const std::string& key, const std::string& where);
std::string require_string(const json& obj, const std::string& key, const std::string& where);
int64_t require_int(const json& obj, const std::string& key, const std::string& where);

}  // namespace flatune
