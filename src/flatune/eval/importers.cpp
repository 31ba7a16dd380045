#include "flatune/eval/importers.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/eval/pyrandom.h"

namespace flatune {

namespace {

// RFC 4180 csv: quoted fields with "" escapes and embedded newlines (MMLU has both).
std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (c == '"') quoted = false;
      else field += c;
    } else if (c == '"') {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(field), field.clear(), any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !field.empty()) row.push_back(field), rows.push_back(row);
      row.clear(), field.clear(), any = false;
    } else {
      field += c, any = true;
    }
  }
  if (quoted) fail(path, "unterminated quoted field");
  if (any || !field.empty()) row.push_back(field), rows.push_back(row);
  return rows;
}

std::string strip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n\r\f\v"), e = s.find_last_not_of(" \t\n\r\f\v");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

// Python str.capitalize for ASCII: first character upper, the rest lower.
std::string capitalize(std::string s) {
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 128) s[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return s;
}

std::vector<json> jsonl_items(const std::string& path,
                              const std::function<json(const json&, const std::string&)>& convert) {
  std::vector<json> out;
  for_each_jsonl(path, [&](const json& j, size_t line) {
    const std::string where = path + ":" + std::to_string(line);
    if (!j.is_object()) fail(where, "expected a JSON object");
    out.push_back(convert(j, where));
  });
  if (out.empty()) fail(path, "no items");
  return out;
}

}  // namespace

const std::vector<std::string>& importable_suites() {
  static const std::vector<std::string> s = {
      "mmlu", "arc",        "hellaswag",  "piqa", "siqa",           "boolq",          "copa",
      "rte",  "winogrande", "openbookqa", "race", "truthfulqa_mc1", "truthfulqa_mc2", "gsm8k"};
  return s;
}

std::string mmlu_category(const std::string& subject) {
  // lm_eval/tasks/mmlu/_generate_configs.py SUBJECTS.
  static const std::map<std::string, std::string> groups = {{"abstract_algebra", "stem"},
                                                            {"anatomy", "stem"},
                                                            {"astronomy", "stem"},
                                                            {"business_ethics", "other"},
                                                            {"clinical_knowledge", "other"},
                                                            {"college_biology", "stem"},
                                                            {"college_chemistry", "stem"},
                                                            {"college_computer_science", "stem"},
                                                            {"college_mathematics", "stem"},
                                                            {"college_medicine", "other"},
                                                            {"college_physics", "stem"},
                                                            {"computer_security", "stem"},
                                                            {"conceptual_physics", "stem"},
                                                            {"econometrics", "social_sciences"},
                                                            {"electrical_engineering", "stem"},
                                                            {"elementary_mathematics", "stem"},
                                                            {"formal_logic", "humanities"},
                                                            {"global_facts", "other"},
                                                            {"high_school_biology", "stem"},
                                                            {"high_school_chemistry", "stem"},
                                                            {"high_school_computer_science", "stem"},
                                                            {"high_school_european_history", "humanities"},
                                                            {"high_school_geography", "social_sciences"},
                                                            {"high_school_government_and_politics", "social_sciences"},
                                                            {"high_school_macroeconomics", "social_sciences"},
                                                            {"high_school_mathematics", "stem"},
                                                            {"high_school_microeconomics", "social_sciences"},
                                                            {"high_school_physics", "stem"},
                                                            {"high_school_psychology", "social_sciences"},
                                                            {"high_school_statistics", "stem"},
                                                            {"high_school_us_history", "humanities"},
                                                            {"high_school_world_history", "humanities"},
                                                            {"human_aging", "other"},
                                                            {"human_sexuality", "social_sciences"},
                                                            {"international_law", "humanities"},
                                                            {"jurisprudence", "humanities"},
                                                            {"logical_fallacies", "humanities"},
                                                            {"machine_learning", "stem"},
                                                            {"management", "other"},
                                                            {"marketing", "other"},
                                                            {"medical_genetics", "other"},
                                                            {"miscellaneous", "other"},
                                                            {"moral_disputes", "humanities"},
                                                            {"moral_scenarios", "humanities"},
                                                            {"nutrition", "other"},
                                                            {"philosophy", "humanities"},
                                                            {"prehistory", "humanities"},
                                                            {"professional_accounting", "other"},
                                                            {"professional_law", "humanities"},
                                                            {"professional_medicine", "other"},
                                                            {"professional_psychology", "social_sciences"},
                                                            {"public_relations", "social_sciences"},
                                                            {"security_studies", "social_sciences"},
                                                            {"sociology", "social_sciences"},
                                                            {"us_foreign_policy", "social_sciences"},
                                                            {"virology", "other"},
                                                            {"world_religions", "humanities"}};
  auto it = groups.find(subject);
  if (it == groups.end()) fail("mmlu", "unknown subject '" + subject + "' (expected one of the 57 MMLU subjects)");
  return it->second;
}

namespace {
struct MmluRow {
  std::string context;
  int gold;
};
std::vector<MmluRow> read_mmlu_csv(const std::string& file) {
  std::vector<MmluRow> out;
  auto rows = read_csv(file);
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto& row = rows[r];
    const std::string where = file + ": row " + std::to_string(r + 1);
    if (row.size() != 6)
      fail(where, "expected 6 columns (question,A,B,C,D,answer), found " + std::to_string(row.size()));
    const std::string answer = strip(row[5]);
    if (answer.size() != 1 || answer[0] < 'A' || answer[0] > 'D')
      fail(where, "answer must be A, B, C or D, found '" + row[5] + "'");
    // lm-eval: "{{question.strip()}}\nA. {{choices[0]}}\nB. …\nD. {{choices[3]}}\nAnswer:"
    std::string context = strip(row[0]);
    for (int c = 0; c < 4; ++c) context += std::string("\n") + static_cast<char>('A' + c) + ". " + row[1 + c];
    out.push_back({context + "\nAnswer:", answer[0] - 'A'});
  }
  return out;
}
}  // namespace

std::vector<json> import_mmlu(const std::string& path, int shots, const std::string& dev_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".csv") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail(path, "no <subject>_<split>.csv files (MMLU's data/test layout)");
  } else {
    files.push_back(path);
  }
  std::vector<json> out;
  for (const auto& file : files) {
    // <subject>_test.csv / _dev.csv / _val.csv
    std::string stem = fs::path(file).stem().string();
    size_t us = stem.rfind('_');
    if (us == std::string::npos) fail(file, "expected a file named <subject>_test.csv");
    const std::string subject = stem.substr(0, us);
    const std::string category = mmlu_category(subject);
    std::string description =
        "The following are multiple choice questions (with answers) about " + replace_all(subject, "_", " ") + ".\n\n";
    if (shots > 0) {
      if (dev_dir.empty()) fail("mmlu", "few-shot import needs the dev folder (data/dev with <subject>_dev.csv)");
      auto dev = read_mmlu_csv(join_path(dev_dir, subject + "_dev.csv"));
      if (static_cast<int>(dev.size()) < shots)
        fail(join_path(dev_dir, subject + "_dev.csv"), "fewer rows than --shots");
      for (int k = 0; k < shots; ++k)
        description += dev[k].context + " " + std::string(1, static_cast<char>('A' + dev[k].gold)) + "\n\n";
    }
    auto rows = read_mmlu_csv(file);
    for (size_t r = 0; r < rows.size(); ++r)
      out.push_back({{"id", subject + "/" + std::to_string(r)},
                     {"description", description},
                     {"context", rows[r].context},
                     {"choices", {"A", "B", "C", "D"}},
                     {"gold", rows[r].gold},
                     {"category", category}});
  }
  return out;
}

namespace {
// A question with lettered choices in AI2's layout ({"question": {"stem", "choices": [{"text",
// "label"}]}, "answerKey"}) or Hugging Face's (question text under `hf_stem`, "choices": {"text":
// [], "label": []}): the stem, the choice texts and the index of the answer key (lstripped, as
// OpenBookQA's template does; ARC keys carry no spaces).
struct LetteredQuestion {
  std::string stem;
  std::vector<std::string> texts;
  int64_t gold = 0;
};
LetteredQuestion lettered_question(const json& j, const std::string& hf_stem, const std::string& where) {
  LetteredQuestion q;
  std::vector<std::string> labels;
  if (j.contains("question") && j["question"].is_object()) {  // AI2 layout
    const json& qq = j["question"];
    q.stem = require_string(qq, "stem", where);
    const json& cs = require_field(qq, "choices", where);
    if (!cs.is_array()) fail(where, "question.choices must be a list of {text, label}");
    for (const auto& c : cs)
      q.texts.push_back(require_string(c, "text", where)), labels.push_back(require_string(c, "label", where));
  } else {  // Hugging Face layout
    q.stem = require_string(j, hf_stem, where);
    const json& cs = require_field(j, "choices", where);
    for (const char* key : {"text", "label"}) {
      const json& list = require_field(cs, key, where);
      if (!list.is_array()) fail(where, std::string("choices.") + key + " must be a list of strings");
      for (const auto& t : list) {
        if (!t.is_string()) fail(where, std::string("choices.") + key + " must be a list of strings");
        (key[0] == 't' ? q.texts : labels).push_back(t.get<std::string>());
      }
    }
  }
  if (q.texts.empty() || q.texts.size() != labels.size()) fail(where, "choices need as many labels as texts");
  std::string key = require_string(j, "answerKey", where);
  key.erase(
      0, key.find_first_not_of(" \t\n\r\f\v") == std::string::npos ? key.size() : key.find_first_not_of(" \t\n\r\f\v"));
  auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end()) fail(where, "answerKey '" + key + "' is not one of the choice labels");
  q.gold = it - labels.begin();
  return q;
}
}  // namespace

std::vector<json> import_arc(const std::string& path) {
  return jsonl_items(path, [](const json& j, const std::string& where) {
    LetteredQuestion q = lettered_question(j, "question", where);
    json item = {
        {"context", "Question: " + q.stem + "\nAnswer:"}, {"choices", q.texts}, {"gold", q.gold}, {"category", "arc"}};
    if (j.contains("id")) item["id"] = j["id"];
    return item;
  });
}

std::string hellaswag_preprocess(const std::string& text) {
  std::string s = replace_all(strip(text), " [title]", ". ");
  static const std::regex bracket("\\[.*?\\]");
  s = std::regex_replace(s, bracket, "");
  // Python's str.replace("  ", " "): one non-overlapping pass, left to right.
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    out += s[i];
    if (s[i] == ' ' && i + 1 < s.size() && s[i + 1] == ' ') ++i;
  }
  return out;
}

std::vector<json> import_hellaswag(const std::string& path) {
  return jsonl_items(path, [](const json& j, const std::string& where) {
    const std::string ctx = require_string(j, "ctx_a", where) + " " + capitalize(require_string(j, "ctx_b", where));
    const std::string label = require_string(j, "activity_label", where);
    const json& endings = require_field(j, "endings", where);
    if (!endings.is_array() || endings.empty()) fail(where, "field 'endings' must be a non-empty list of strings");
    std::vector<std::string> choices;
    for (const auto& e : endings) {
      if (!e.is_string()) fail(where, "field 'endings' must be a non-empty list of strings");
      choices.push_back(hellaswag_preprocess(e.get<std::string>()));
    }
    const json& l = require_field(j, "label", where);
    int64_t gold = -1;
    if (l.is_number_integer()) gold = l.get<int64_t>();
    else if (l.is_string() && l.get<std::string>().size() == 1 &&
             std::isdigit(static_cast<unsigned char>(l.get<std::string>()[0])))
      gold = l.get<std::string>()[0] - '0';
    else fail(where, "field 'label' must be an ending index (0-3 or \"0\"-\"3\")");
    if (gold < 0 || gold >= static_cast<int64_t>(choices.size())) fail(where, "label out of range");
    json item = {{"context", hellaswag_preprocess(label + ": " + ctx)},
                 {"choices", choices},
                 {"gold", gold},
                 {"category", label}};
    if (j.contains("ind")) item["id"] = j["ind"];
    return item;
  });
}

namespace {

// Labels of files shipped without them inline (PIQA's valid.jsonl + valid-labels.lst, Social
// IQa's dev.jsonl + dev-labels.lst): one label a line in <stem>-labels.lst beside the file.
std::vector<std::string> labels_beside(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p(path);
  const std::string lst = (p.parent_path() / (p.stem().string() + "-labels.lst")).string();
  if (!fs::exists(lst)) return {};
  std::vector<std::string> out;
  std::istringstream in(read_file(lst));
  std::string line;
  while (std::getline(in, line)) {
    line = strip(line);
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// The label of record `index`: the record's own field, else the -labels.lst line.
std::string label_of(const json& j, const std::string& key, const std::vector<std::string>& lst, size_t index,
                     const std::string& path, const std::string& where) {
  if (j.contains(key)) {
    const json& l = j[key];
    if (l.is_string()) return l.get<std::string>();
    if (l.is_number_integer()) return std::to_string(l.get<int64_t>());
    fail(where, "field '" + key + "' must be a number or a string");
  }
  if (lst.empty())
    fail(where, "no field '" + key + "' and no " + std::filesystem::path(path).stem().string() +
                    "-labels.lst beside the file");
  if (index >= lst.size()) fail(where, "the -labels.lst file has fewer lines than the data file");
  return lst[index];
}

// Items from a JSONL file whose converter also gets the record's index (for -labels.lst).
std::vector<json> indexed_items(const std::string& path,
                                const std::function<json(const json&, size_t, const std::string&)>& convert) {
  size_t index = 0;
  return jsonl_items(path, [&](const json& j, const std::string& where) { return convert(j, index++, where); });
}

int64_t label_index(const std::string& label, const std::vector<std::string>& allowed, const std::string& where) {
  auto it = std::find(allowed.begin(), allowed.end(), label);
  if (it == allowed.end()) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    fail(where, "label '" + label + "' is not one of " + list);
  }
  return it - allowed.begin();
}

json with_id(json item, const json& j, const char* key) {
  if (j.contains(key)) item["id"] = j[key];
  return item;
}

// Python's s[:-1] on a UTF-8 string: drops the last code point.
std::string drop_last_code_point(std::string s) {
  if (s.empty()) return s;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  s.resize(i);
  return s;
}

// A Python literal (str() of lists/dicts of strings and numbers, as EleutherAI/race stores
// "problems") parsed into JSON: quotes ' or ", backslash escapes, True/False/None.
class PyLiteral {
 public:
  PyLiteral(const std::string& text, std::string where) : s_(text), where_(std::move(where)) {}
  json parse() {
    json v = value();
    skip();
    if (i_ != s_.size()) bad("trailing text");
    return v;
  }

 private:
  const std::string& s_;
  std::string where_;
  size_t i_ = 0;
  [[noreturn]] void bad(const std::string& what) {
    fail(where_, "'problems' is not a Python literal: " + what + " at offset " + std::to_string(i_));
  }
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  json value() {
    skip();
    if (i_ >= s_.size()) bad("unexpected end");
    char c = s_[i_];
    if (c == '[' || c == '(') {
      const char close = c == '[' ? ']' : ')';
      ++i_;
      json a = json::array();
      while (!eat(close)) {
        a.push_back(value());
        if (!eat(',') && !(skip(), i_ < s_.size() && s_[i_] == close)) bad("expected , or " + std::string(1, close));
      }
      return a;
    }
    if (c == '{') {
      ++i_;
      json o = json::object();
      while (!eat('}')) {
        json k = value();
        if (!k.is_string()) bad("dict keys must be strings");
        if (!eat(':')) bad("expected :");
        o[k.get<std::string>()] = value();
        if (!eat(',') && !(skip(), i_ < s_.size() && s_[i_] == '}')) bad("expected , or }");
      }
      return o;
    }
    if (c == '\'' || c == '"') return string();
    for (const auto& [word, v] : {std::pair<const char*, json>{"True", true}, {"False", false}, {"None", nullptr}})
      if (s_.compare(i_, std::strlen(word), word) == 0) return i_ += std::strlen(word), v;
    size_t j = i_;
    if (s_[j] == '-') ++j;
    while (j < s_.size() && std::isdigit(static_cast<unsigned char>(s_[j]))) ++j;
    if (j == i_ || (j == i_ + 1 && s_[i_] == '-')) bad("unexpected character");
    json n = std::stoll(s_.substr(i_, j - i_));
    i_ = j;
    return n;
  }
  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) out += static_cast<char>(cp);
    else if (cp < 0x800) out += static_cast<char>(0xC0 | (cp >> 6)), out += static_cast<char>(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
      out += static_cast<char>(0xE0 | (cp >> 12)), out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
          out += static_cast<char>(0x80 | (cp & 0x3F));
    else
      out += static_cast<char>(0xF0 | (cp >> 18)), out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  json string() {
    const char quote = s_[i_++];
    std::string out;
    while (true) {
      if (i_ >= s_.size()) bad("unterminated string");
      char c = s_[i_++];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) bad("unterminated string");
      char e = s_[i_++];
      auto hex = [&](int n) {
        if (i_ + n > s_.size()) bad("short escape");
        uint32_t v = static_cast<uint32_t>(std::stoul(s_.substr(i_, n), nullptr, 16));
        i_ += n;
        return v;
      };
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'x':
          put_utf8(out, hex(2));
          break;
        case 'u':
          put_utf8(out, hex(4));
          break;
        case 'U':
          put_utf8(out, hex(8));
          break;
        default:
          out += '\\', out += e;  // Python keeps unknown escapes as written
      }
    }
    return out;
  }
};

// One RACE document as lm-eval's preprocess_race builds it (0.4.13, task version 3.0): the
// article, every problem but the last with its answer (a cloze question ending "  _  ." is
// written as itself less its last five characters, then the answer; task version 2.0, up to
// lm-eval 0.4.9.2, kept only those five characters), then the last problem's question;
// choices = the last problem's four options.
json race_item(const std::string& article, const json& problems, const std::string& where) {
  if (!problems.is_array() || problems.empty()) fail(where, "a RACE document needs at least one problem");
  auto answer_of = [&](const json& p, int64_t* index) {
    const std::string letter = require_string(p, "answer", where);
    *index = label_index(letter, {"A", "B", "C", "D"}, where);
    const json& options = require_field(p, "options", where);
    if (!options.is_array() || options.size() != 4) fail(where, "a RACE problem needs four options");
    for (const auto& o : options)
      if (!o.is_string()) fail(where, "RACE options must be strings");
    return options[*index].get<std::string>();
  };
  std::string text = "Article: " + article + "\n\n";
  for (size_t k = 0; k + 1 < problems.size(); ++k) {
    const std::string q = require_string(problems[k], "question", where);
    int64_t idx = 0;
    const std::string answer = answer_of(problems[k], &idx);
    if (q.size() >= 6 && q.compare(q.size() - 6, 6, "  _  .") == 0) text += q.substr(0, q.size() - 5) + answer + "\n";
    else text += "Question: " + q + "\n" + "Answer: " + answer + "\n";
  }
  const json& last = problems.back();
  text += require_string(last, "question", where);
  int64_t gold = 0;
  answer_of(last, &gold);
  return {{"context", text}, {"choices", last["options"]}, {"gold", gold}, {"category", "race"}};
}

// The RACE distribution: one JSON document per .txt file ({"article", "questions", "options",
// "answers", "id"}), in RACE/<split>/<high|middle>/.
json race_document(const std::string& file) {
  json j = read_json_file(file);
  if (!j.is_object()) fail(file, "expected a RACE document object");
  const json& qs = require_field(j, "questions", file);
  const json& os = require_field(j, "options", file);
  const json& as = require_field(j, "answers", file);
  if (!qs.is_array() || !os.is_array() || !as.is_array() || qs.size() != os.size() || qs.size() != as.size())
    fail(file, "'questions', 'options' and 'answers' must be lists of equal length");
  json problems = json::array();
  for (size_t k = 0; k < qs.size(); ++k)
    problems.push_back({{"question", qs[k]}, {"options", os[k]}, {"answer", as[k]}});
  json item = race_item(require_string(j, "article", file), problems, file);
  item["id"] = j.contains("id") ? j["id"] : json(std::filesystem::path(file).filename().string());
  return item;
}

// TruthfulQA's six fixed question-answer pairs (lm-eval's truthfulqa_mc1 doc_to_text).
const char* kTruthfulQaPrompt =
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain.";

// mcN_targets as {"choices": [...], "labels": [...]} (Hugging Face) or {"answer": label, ...}
// in file order (the TruthfulQA repository's data/mc_task.json).
void truthfulqa_targets(const nlohmann::ordered_json& t, const std::string& where, std::vector<std::string>* choices,
                        std::vector<int>* labels) {
  if (!t.is_object()) fail(where, "targets must be an object");
  if (t.contains("choices")) {
    const auto& c = t["choices"];
    if (!t.contains("labels")) fail(where, "targets have 'choices' but no 'labels'");
    const auto& l = t["labels"];
    if (!c.is_array() || !l.is_array() || c.size() != l.size()) fail(where, "targets need as many labels as choices");
    for (size_t k = 0; k < c.size(); ++k) {
      if (!c[k].is_string() || !l[k].is_number_integer()) fail(where, "targets: choices are strings, labels 0/1");
      choices->push_back(c[k].get<std::string>());
      labels->push_back(l[k].get<int>());
    }
  } else {
    for (auto it = t.begin(); it != t.end(); ++it) {
      if (!it.value().is_number_integer()) fail(where, "targets: {answer: 0/1}");
      choices->push_back(it.key());
      labels->push_back(it.value().get<int>());
    }
  }
  if (choices->empty()) fail(where, "targets hold no choices");
}

}  // namespace

std::vector<json> import_piqa(const std::string& path) {
  const auto lst = labels_beside(path);
  return indexed_items(path, [&](const json& j, size_t index, const std::string& where) {
    const int64_t gold = label_index(label_of(j, "label", lst, index, path, where), {"0", "1"}, where);
    return with_id({{"context", "Question: " + require_string(j, "goal", where) + "\nAnswer:"},
                    {"choices", {require_string(j, "sol1", where), require_string(j, "sol2", where)}},
                    {"gold", gold},
                    {"category", "piqa"}},
                   j, "id");
  });
}

std::vector<json> import_siqa(const std::string& path) {
  const auto lst = labels_beside(path);
  return indexed_items(path, [&](const json& j, size_t index, const std::string& where) {
    const int64_t gold = label_index(label_of(j, "label", lst, index, path, where), {"1", "2", "3"}, where);
    return json{
        {"context", "Q: " + require_string(j, "context", where) + " " + require_string(j, "question", where) + "\nA:"},
        {"choices",
         {require_string(j, "answerA", where), require_string(j, "answerB", where),
          require_string(j, "answerC", where)}},
        {"gold", gold},
        {"category", "siqa"}};
  });
}

std::vector<json> import_boolq(const std::string& path) {
  return jsonl_items(path, [](const json& j, const std::string& where) {
    // SuperGLUE / Hugging Face: "label" (true/false or 1/0); the original release: "answer".
    const char* key = j.contains("label") ? "label" : "answer";
    const json& l = require_field(j, key, where);
    int64_t gold;
    if (l.is_boolean()) gold = l.get<bool>();
    else if (l.is_number_integer() && (l.get<int64_t>() == 0 || l.get<int64_t>() == 1)) gold = l.get<int64_t>();
    else fail(where, std::string("field '") + key + "' must be true/false or 0/1");
    return with_id({{"context", require_string(j, "passage", where) +
                                    "\nQuestion: " + require_string(j, "question", where) + "?\nAnswer:"},
                    {"choices", {"no", "yes"}},
                    {"gold", gold},
                    {"category", "boolq"}},
                   j, "idx");
  });
}

std::vector<json> import_copa(const std::string& path) {
  return jsonl_items(path, [](const json& j, const std::string& where) {
    const std::string question = require_string(j, "question", where);
    const std::string connector = question == "cause" ? "because" : question == "effect" ? "therefore" : "";
    if (connector.empty()) fail(where, "field 'question' must be \"cause\" or \"effect\"");
    // lm-eval's copa utils: premise.strip()[:-1] (the period) + connector; each choice with a
    // leading space and its first character lower-cased (ASCII here).
    auto convert = [&](const std::string& key) {
      std::string c = require_string(j, key, where);
      if (c.empty()) fail(where, "field '" + key + "' is empty");
      c[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(c[0])));
      return " " + c;
    };
    const int64_t gold = require_int(j, "label", where);
    if (gold != 0 && gold != 1) fail(where, "field 'label' must be 0 or 1");
    return with_id({{"context", drop_last_code_point(strip(require_string(j, "premise", where))) + " " + connector},
                    {"choices", {convert("choice1"), convert("choice2")}},
                    {"gold", gold},
                    {"category", "copa"}},
                   j, "idx");
  });
}

std::vector<json> import_rte(const std::string& path) {
  auto item = [](const std::string& s1, const std::string& s2, int64_t gold) {
    return json{{"context", s1 + "\nQuestion: " + s2 + " True or False?\nAnswer:"},
                {"choices", {"True", "False"}},
                {"gold", gold},
                {"category", "rte"}};
  };
  if (std::filesystem::path(path).extension() == ".tsv") {
    // GLUE's RTE/dev.tsv: header index, sentence1, sentence2, label (entailment/not_entailment).
    std::vector<json> out;
    std::istringstream in(read_file(path));
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::vector<std::string> cols;
      for (size_t b = 0, e;; b = e + 1) {
        e = line.find('\t', b);
        cols.push_back(line.substr(b, e == std::string::npos ? std::string::npos : e - b));
        if (e == std::string::npos) break;
      }
      const std::string where = path + ":" + std::to_string(n);
      if (n == 1) {
        if (cols.size() != 4 || cols[1] != "sentence1" || cols[2] != "sentence2" || cols[3] != "label")
          fail(where, "expected GLUE's header: index, sentence1, sentence2, label (tab-separated)");
        continue;
      }
      if (line.empty()) continue;
      if (cols.size() != 4) fail(where, "expected 4 tab-separated columns, found " + std::to_string(cols.size()));
      json it = item(cols[1], cols[2], label_index(cols[3], {"entailment", "not_entailment"}, where));
      it["id"] = cols[0];
      out.push_back(it);
    }
    if (out.empty()) fail(path, "no items");
    return out;
  }
  return jsonl_items(path, [&](const json& j, const std::string& where) {
    // Hugging Face glue/rte: sentence1, sentence2, label 0 (entailment) / 1; SuperGLUE RTE:
    // premise, hypothesis, label "entailment" / "not_entailment".
    const bool glue = j.contains("sentence1");
    const std::string s1 = require_string(j, glue ? "sentence1" : "premise", where);
    const std::string s2 = require_string(j, glue ? "sentence2" : "hypothesis", where);
    const json& l = require_field(j, "label", where);
    int64_t gold;
    if (l.is_string()) gold = label_index(l.get<std::string>(), {"entailment", "not_entailment"}, where);
    else if (l.is_number_integer() && (l.get<int64_t>() == 0 || l.get<int64_t>() == 1)) gold = l.get<int64_t>();
    else fail(where, "field 'label' must be 0/1 or entailment/not_entailment");
    return with_id(item(s1, s2, gold), j, "idx");
  });
}

std::vector<json> import_winogrande(const std::string& path) {
  return jsonl_items(path, [&](const json& j, const std::string& where) {
    // lm-eval's preprocess_winogrande: each option fills the blank in its own context; the
    // continuation is the text after the blank, stripped.
    const std::string sentence = require_string(j, "sentence", where);
    const size_t blank = sentence.find('_');
    if (blank == std::string::npos) fail(where, "field 'sentence' has no '_' blank");
    const std::string prefix = sentence.substr(0, blank);
    const int64_t gold = label_index(label_of(j, "answer", {}, 0, path, where), {"1", "2"}, where);
    return with_id(
        {{"contexts", {prefix + require_string(j, "option1", where), prefix + require_string(j, "option2", where)}},
         {"continuation", strip(sentence.substr(blank + 1))},
         {"gold", gold},
         {"category", "winogrande"}},
        j, "qID");
  });
}

std::vector<json> import_openbookqa(const std::string& path) {
  return jsonl_items(path, [](const json& j, const std::string& where) {
    LetteredQuestion q = lettered_question(j, "question_stem", where);
    return with_id({{"context", q.stem}, {"choices", q.texts}, {"gold", q.gold}, {"category", "openbookqa"}}, j, "id");
  });
}

std::vector<json> import_race(const std::string& path) {
  namespace fs = std::filesystem;
  std::vector<json> out;
  if (fs::is_directory(path)) {
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail(path, "no RACE documents (*.txt, as in RACE/test/high)");
    for (const auto& f : files) out.push_back(race_document(f));
    return out;
  }
  if (fs::path(path).extension() == ".txt") return {race_document(path)};
  // EleutherAI/race: one document a line, "problems" a Python literal list of
  // {"question", "options", "answer"}.
  return jsonl_items(path, [](const json& j, const std::string& where) {
    const json& p = require_field(j, "problems", where);
    json problems = p.is_string() ? PyLiteral(p.get<std::string>(), where).parse() : p;
    json item = race_item(require_string(j, "article", where), problems, where);
    if (j.contains("example_id")) item["id"] = j["example_id"];
    return item;
  });
}

std::vector<json> import_truthfulqa(const std::string& path, int mc) {
  if (mc != 1 && mc != 2) fail("truthfulqa", "MC1 or MC2");
  const std::string key = mc == 1 ? "mc1_targets" : "mc2_targets";
  // Targets keep the file's order, so read with an order-preserving JSON type.
  std::vector<std::pair<nlohmann::ordered_json, std::string>> docs;
  const std::string text = read_file(path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {  // data/mc_task.json: one JSON list
    nlohmann::ordered_json all;
    try {
      all = nlohmann::ordered_json::parse(text);
    } catch (const std::exception& e) { fail(path, std::string("malformed JSON: ") + e.what()); }
    for (size_t k = 0; k < all.size(); ++k) docs.emplace_back(all[k], path + ": item " + std::to_string(k + 1));
  } else {  // Hugging Face truthful_qa/multiple_choice as JSONL
    std::istringstream in(text);
    std::string line;
    for (size_t n = 1; std::getline(in, line); ++n) {
      if (strip(line).empty()) continue;
      try {
        docs.emplace_back(nlohmann::ordered_json::parse(line), path + ":" + std::to_string(n));
      } catch (const std::exception& e) {
        fail(path + ":" + std::to_string(n), std::string("malformed JSON: ") + e.what());
      }
    }
  }
  std::vector<json> out;
  for (size_t k = 0; k < docs.size(); ++k) {
    const auto& [d, where] = docs[k];
    if (!d.is_object() || !d.contains("question") || !d["question"].is_string())
      fail(where, "expected an object with a string 'question'");
    if (!d.contains(key)) fail(where, "missing field '" + key + "'");
    std::vector<std::string> choices;
    std::vector<int> labels;
    truthfulqa_targets(d[key], where, &choices, &labels);
    json item = {{"id", std::to_string(k)},
                 {"context", std::string(kTruthfulQaPrompt) + "\n\nQ: " + d["question"].get<std::string>() + "\nA:"},
                 {"choices", choices},
                 {"gold", 0},  // lm-eval: doc_to_target 0 (the true answer comes first)
                 {"category", "truthfulqa"}};
    if (mc == 2) item["labels"] = labels;
    out.push_back(item);
  }
  if (out.empty()) fail(path, "no items");
  return out;
}

std::vector<json> import_gsm8k(const std::string& path, int shots, const std::string& train_path, uint64_t seed) {
  auto read = [](const std::string& file) {
    std::vector<std::pair<std::string, std::string>> qa;
    jsonl_items(file, [&](const json& j, const std::string& where) {
      const std::string answer = require_string(j, "answer", where);
      if (answer.find("#### ") == std::string::npos) fail(where, "field 'answer' has no '#### N' final answer");
      qa.emplace_back(require_string(j, "question", where), answer);
      return json();
    });
    return qa;
  };
  const auto test = read(path);
  std::vector<std::pair<std::string, std::string>> train;
  if (shots > 0) {
    if (train_path.empty()) fail("gsm8k", "few-shot import needs the train file (--dev train.jsonl)");
    train = read(train_path);
    if (static_cast<int>(train.size()) < shots) fail(train_path, "fewer examples than --shots");
  }
  // lm-eval's gsm8k: few-shot split "train" (not the evaluated one), so each item takes
  // random.Random(seed).sample(train, shots) from one generator consumed item by item.
  PyRandom rng(seed);
  std::vector<json> out;
  for (size_t k = 0; k < test.size(); ++k) {
    std::string prompt;
    if (shots > 0)
      for (int64_t d : rng.sample(static_cast<int64_t>(train.size()), shots))
        prompt += "Question: " + train[d].first + "\nAnswer: " + train[d].second + "\n\n";
    prompt += "Question: " + test[k].first + "\nAnswer:";
    out.push_back({{"id", std::to_string(k)},
                   {"prompt", prompt},
                   {"answer", test[k].second},
                   {"until", {"Question:", "</s>", "<|im_end|>"}},
                   {"category", "gsm8k"}});
  }
  return out;
}

std::vector<json> import_suite(const std::string& suite, const std::string& path, int shots,
                               const std::string& dev_dir) {
  if (suite == "mmlu") return import_mmlu(path, shots, dev_dir);
  if (suite == "gsm8k") return import_gsm8k(path, shots, dev_dir);
  if (shots > 0)
    fail("--shots", "only the MMLU and GSM8K importers take few-shot examples (others: flatune eval --shots)");
  if (suite == "arc") return import_arc(path);
  if (suite == "hellaswag") return import_hellaswag(path);
  if (suite == "piqa") return import_piqa(path);
  if (suite == "siqa") return import_siqa(path);
  if (suite == "boolq") return import_boolq(path);
  if (suite == "copa") return import_copa(path);
  if (suite == "rte") return import_rte(path);
  if (suite == "winogrande") return import_winogrande(path);
  if (suite == "openbookqa") return import_openbookqa(path);
  if (suite == "race") return import_race(path);
  if (suite == "truthfulqa_mc1") return import_truthfulqa(path, 1);
  if (suite == "truthfulqa_mc2") return import_truthfulqa(path, 2);
  fail(
      "--suite", "unknown suite '" + suite + "' (this build imports " + [] {
        std::string all;
        for (const auto& s : importable_suites()) all += (all.empty() ? "" : ", ") + s;
        return all;
      }() + ")");
}

}  // namespace flatune
