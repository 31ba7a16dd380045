#include "flatune/eval/importers.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <filesystem>
#include <map>
#include <regex>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

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

std::vector<json> jsonl_items(const std::string& path, const std::function<json(const json&, const std::string&)>& convert) {
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
  static const std::vector<std::string> s = {"mmlu", "arc", "hellaswag"};
  return s;
}

std::string mmlu_category(const std::string& subject) {
  // lm_eval/tasks/mmlu/_generate_configs.py SUBJECTS.
  static const std::map<std::string, std::string> groups = {
      {"abstract_algebra", "stem"}, {"anatomy", "stem"}, {"astronomy", "stem"}, {"business_ethics", "other"},
      {"clinical_knowledge", "other"}, {"college_biology", "stem"}, {"college_chemistry", "stem"},
      {"college_computer_science", "stem"}, {"college_mathematics", "stem"}, {"college_medicine", "other"},
      {"college_physics", "stem"}, {"computer_security", "stem"}, {"conceptual_physics", "stem"},
      {"econometrics", "social_sciences"}, {"electrical_engineering", "stem"}, {"elementary_mathematics", "stem"},
      {"formal_logic", "humanities"}, {"global_facts", "other"}, {"high_school_biology", "stem"},
      {"high_school_chemistry", "stem"}, {"high_school_computer_science", "stem"},
      {"high_school_european_history", "humanities"}, {"high_school_geography", "social_sciences"},
      {"high_school_government_and_politics", "social_sciences"}, {"high_school_macroeconomics", "social_sciences"},
      {"high_school_mathematics", "stem"}, {"high_school_microeconomics", "social_sciences"},
      {"high_school_physics", "stem"}, {"high_school_psychology", "social_sciences"}, {"high_school_statistics", "stem"},
      {"high_school_us_history", "humanities"}, {"high_school_world_history", "humanities"}, {"human_aging", "other"},
      {"human_sexuality", "social_sciences"}, {"international_law", "humanities"}, {"jurisprudence", "humanities"},
      {"logical_fallacies", "humanities"}, {"machine_learning", "stem"}, {"management", "other"}, {"marketing", "other"},
      {"medical_genetics", "other"}, {"miscellaneous", "other"}, {"moral_disputes", "humanities"},
      {"moral_scenarios", "humanities"}, {"nutrition", "other"}, {"philosophy", "humanities"},
      {"prehistory", "humanities"}, {"professional_accounting", "other"}, {"professional_law", "humanities"},
      {"professional_medicine", "other"}, {"professional_psychology", "social_sciences"},
      {"public_relations", "social_sciences"}, {"security_studies", "social_sciences"}, {"sociology", "social_sciences"},
      {"us_foreign_policy", "social_sciences"}, {"virology", "other"}, {"world_religions", "humanities"}};
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
    if (row.size() != 6) fail(where, "expected 6 columns (question,A,B,C,D,answer), found " + std::to_string(row.size()));
    const std::string answer = strip(row[5]);
    if (answer.size() != 1 || answer[0] < 'A' || answer[0] > 'D') fail(where, "answer must be A, B, C or D, found '" + row[5] + "'");
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
      if (static_cast<int>(dev.size()) < shots) fail(join_path(dev_dir, subject + "_dev.csv"), "fewer rows than --shots");
      for (int k = 0; k < shots; ++k) description += dev[k].context + " " + std::string(1, static_cast<char>('A' + dev[k].gold)) + "\n\n";
    }
    auto rows = read_mmlu_csv(file);
    for (size_t r = 0; r < rows.size(); ++r)
      out.push_back({{"id", subject + "/" + std::to_string(r)}, {"description", description}, {"context", rows[r].context},
                     {"choices", {"A", "B", "C", "D"}}, {"gold", rows[r].gold}, {"category", category}});
  }
  return out;
}

std::vector<json> import_arc(const std::string& path) {
  return jsonl_items(path, [](const json& j, const std::string& where) {
    const json& q = require_field(j, "question", where);
    std::string stem;
    std::vector<std::string> texts, labels;
    if (q.is_object()) {  // AI2 layout
      stem = require_string(q, "stem", where);
      const json& cs = require_field(q, "choices", where);
      if (!cs.is_array()) fail(where, "question.choices must be a list of {text, label}");
      for (const auto& c : cs) texts.push_back(require_string(c, "text", where)), labels.push_back(require_string(c, "label", where));
    } else {  // Hugging Face layout
      stem = require_string(j, "question", where);
      const json& cs = require_field(j, "choices", where);
      for (const char* key : {"text", "label"}) {
        const json& list = require_field(cs, key, where);
        if (!list.is_array()) fail(where, std::string("choices.") + key + " must be a list of strings");
        for (const auto& t : list) {
          if (!t.is_string()) fail(where, std::string("choices.") + key + " must be a list of strings");
          (key[0] == 't' ? texts : labels).push_back(t.get<std::string>());
        }
      }
    }
    if (texts.empty() || texts.size() != labels.size()) fail(where, "choices need as many labels as texts");
    const std::string key = require_string(j, "answerKey", where);
    auto it = std::find(labels.begin(), labels.end(), key);
    if (it == labels.end()) fail(where, "answerKey '" + key + "' is not one of the choice labels");
    json item = {{"context", "Question: " + stem + "\nAnswer:"}, {"choices", texts}, {"gold", it - labels.begin()}, {"category", "arc"}};
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
    else if (l.is_string() && l.get<std::string>().size() == 1 && std::isdigit(static_cast<unsigned char>(l.get<std::string>()[0])))
      gold = l.get<std::string>()[0] - '0';
    else fail(where, "field 'label' must be an ending index (0-3 or \"0\"-\"3\")");
    if (gold < 0 || gold >= static_cast<int64_t>(choices.size())) fail(where, "label out of range");
    json item = {{"context", hellaswag_preprocess(label + ": " + ctx)}, {"choices", choices}, {"gold", gold}, {"category", label}};
    if (j.contains("ind")) item["id"] = j["ind"];
    return item;
  });
}

std::vector<json> import_suite(const std::string& suite, const std::string& path, int shots, const std::string& dev_dir) {
  if (suite == "mmlu") return import_mmlu(path, shots, dev_dir);
  if (shots > 0) fail("--shots", "only the MMLU importer takes few-shot examples (others: flatune eval --shots)");
  if (suite == "arc") return import_arc(path);
  if (suite == "hellaswag") return import_hellaswag(path);
  fail("--suite", "unknown suite '" + suite + "' (this build imports mmlu, arc, hellaswag)");
}

}  // namespace flatune
