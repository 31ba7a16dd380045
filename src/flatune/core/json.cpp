#include "flatune/core/json.h"

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace flatune {

namespace {
// nlohmann reports a byte offset; people want line and column.
std::string line_col(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}
}  // namespace

json parse_json_text(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    std::string msg = e.what();
    // Keep nlohmann's description but drop its "[json.exception.parse_error.101] " prefix.
    auto pos = msg.find("] ");
    if (pos != std::string::npos) msg = msg.substr(pos + 2);
    fail(where, "malformed JSON at " + line_col(text, e.byte > 0 ? e.byte - 1 : 0) + ": " + msg);
  } catch (const json::exception& e) {
    // Well-formed text nlohmann still refuses, such as a number past double's range (1e706).
    std::string msg = e.what();
    auto pos = msg.find("] ");
    fail(where, "unreadable JSON: " + (pos == std::string::npos ? msg : msg.substr(pos + 2)));
  }
}

json read_json_file(const std::string& path) { return parse_json_text(read_file(path), path); }

void for_each_jsonl(const std::string& path, const std::function<void(const json&, size_t)>& fn) {
  std::string text = read_file(path);
  size_t line_no = 0, start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) {
      fn(parse_json_text(line, path + ":" + std::to_string(line_no)), line_no);
    }
    if (end == text.size()) break;
    start = end + 1;
  }
}

const json& require_field(const json& obj, const std::string& key, const std::string& where) {
  if (!obj.is_object()) fail(where, "expected a JSON object");
  auto it = obj.find(key);
  if (it == obj.end()) fail(where, "missing field '" + key + "'");
  return *it;
}

std::string require_string(const json& obj, const std::string& key, const std::string& where) {
  const json& v = require_field(obj, key, where);
  if (!v.is_string()) fail(where, "field '" + key + "' must be a string");
  return v.get<std::string>();
}

int64_t require_int(const json& obj, const std::string& key, const std::string& where) {
  const json& v = require_field(obj, key, where);
  if (!v.is_number_integer()) fail(where, "field '" + key + "' must be an integer");
  return v.get<int64_t>();
}

}  // namespace flatune
