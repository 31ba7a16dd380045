// Evaluation items and reading them: multiple choice {"id","context","choices","gold","category"}
// (or {"id","contexts","continuation","gold","category"} when each choice changes the context,
// as WinoGrande's partial scoring does; optional "description" goes before few-shot examples;
// optional "labels" [0/1 per choice] marks every true answer, as TruthfulQA MC2 scores them) and
// generative {"id","prompt","answer"[,"until": [stop strings]]}.
#pragma once
#include <string>
#include <vector>

namespace flatune {

struct McItem {
  std::string id;
  std::vector<std::string> contexts;  // one shared context, or one per choice
  std::vector<std::string> choices;   // continuations (one per choice, or a single shared one)
  int gold = 0;
  std::string category;
  std::string description;  // put before the few-shot examples (lm-eval's task description)
  std::vector<int> labels;  // MC2: 1 for each true choice; empty for single-answer items
  int num_choices() const { return static_cast<int>(contexts.size() > 1 ? contexts.size() : choices.size()); }
  const std::string& context(int i) const { return contexts.size() > 1 ? contexts[i] : contexts[0]; }
  const std::string& choice(int i) const { return choices.size() > 1 ? choices[i] : choices[0]; }
};

struct GenItem {
  std::string id;
  std::string prompt;
  std::string answer;
  std::string category;
  std::vector<std::string> until;  // stop strings of this item (lm-eval's `until`); empty: the options' stop
};

struct Task {
  std::string name;  // file stem
  std::string path;
  std::string kind;  // "multiple_choice" or "generative"
  std::vector<McItem> mc;
  std::vector<GenItem> gen;
};

// Reads a task file (JSONL); the kind follows from the first item's fields. Errors name the
// file and line: gold out of range, no choices, contexts and choices that do not match.
Task read_task(const std::string& path);

}  // namespace flatune
