// Evaluating a model on a task: multiple choice (acc, acc_norm as lm-evaluation-harness
// computes them, with standard errors and per-category results), generative exact match, and
// perplexity of text with rolling windows. Results are data; app/ prints them.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "flatune/core/json.h"
#include "flatune/eval/pyrandom.h"
#include "flatune/eval/tasks.h"
#include "flatune/model/llama.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

struct EvalOptions {
  int shots = 0;           // few-shot examples from the same file, never the item itself
  uint64_t seed = 1234;    // few-shot sampling seed (lm-eval's default)
  int64_t max_length = 0;  // 0: the model's window
  int64_t limit = 0;       // first N items only (0: all)
  bool naive = false;      // score every choice with its own forward pass
  // Contexts per forward (items sorted by length); on 2 CPU cores 4 was 3.1x naive, 16 only 2.0x.
  int64_t batch_size = 4;
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
  // Generative tasks.
  int64_t max_new_tokens = 64;
  std::vector<std::string> stop = {"\n\n"};
  std::string template_name;  // wrap generative prompts in this training template ("" = raw)
  // Data parallel evaluation: this process scores the items i with i % shards == shard, and
  // `gather` (every process's bytes, in rank order) brings in the others' scores, so every
  // process ends with the result one process would compute. Few-shot prefixes are still drawn
  // for every item in order, so they do not depend on the number of processes.
  int shard = 0, shards = 1;
  std::function<std::vector<std::string>(const std::string&)> gather;
};

struct MetricValue {
  double value = 0, stderr_ = 0;
};

struct TaskResult {
  std::string task, kind;
  int64_t n = 0;
  std::map<std::string, MetricValue> metrics;                            // acc, acc_norm | acc (MC2) | exact_match
  std::map<std::string, std::map<std::string, MetricValue>> categories;  // category -> metric -> value
  std::map<std::string, int64_t> category_counts;
  json items = json::array();  // per-item log
};

// Mean and its standard error (sample standard deviation / sqrt(n)), as lm-eval's mean_stderr.
MetricValue mean_with_stderr(const std::vector<double>& xs);

// acc: argmax of the summed log-likelihood; acc_norm: argmax of loglik / len(choice) in
// characters (code points).
void score_choices(const std::vector<double>& loglik, const std::vector<std::string>& choices, int* pred,
                   int* pred_norm);

// TruthfulQA MC2 (lm-eval's process_results_mc2): the probabilities exp(loglik) normalised over
// the choices, summed over the true ones (labels 1). Computed with the maximum subtracted first,
// which is the same number where numpy's exp does not underflow.
double true_probability_mass(const std::vector<double>& loglik, const std::vector<int>& labels);

// What goes before an item's context: its description, then (shots > 0) few-shot examples drawn
// as lm-eval's ContextSampler draws them from the same split: one Python random.Random(seed) per
// task, consumed item by item, sample(items, shots + 1) minus the item itself, first `shots`
// kept; each example is context + target_delimiter + gold choice + fewshot_delimiter.
std::string item_prefix(const Task& task, size_t item, const EvalOptions& opts, PyRandom& rng);

// Multiple choice: every item's choices scored (naive, or batched across items by length), then
// acc/acc_norm, or for items with `labels` (MC2) acc = the true answers' probability mass as
// lm-eval reports it (and no acc_norm).
TaskResult evaluate_task(LlamaForCausalLM& model, const Tokenizer& tok, const Task& task, const EvalOptions& opts);

json task_result_to_json(const TaskResult& r);

// <dir>/<task>.json (the result, plus the fields of `extra`: model, settings) and
// <dir>/<task>.items.jsonl (one line per item), each written atomically.
void write_task_result(const TaskResult& r, const std::string& dir, const json& extra);

// GSM8K-style answer extraction: "#### N", else the last number in the text; normalised (no
// commas, $, or trailing ".0"). Empty when there is no number.
std::string extract_answer(const std::string& text);

struct PerplexityResult {
  double loglik = 0;  // natural log, summed over tokens
  int64_t tokens = 0, words = 0, bytes = 0;
  double token_perplexity() const;
  double word_perplexity() const;
  double byte_perplexity() const;
  double bits_per_byte() const;
};

// lm-eval's loglikelihood_rolling: the whole text scored once, in windows of max_length with
// the prefix token before the first.
// {"task", "kind": "perplexity", "n", "metrics": {loglik, tokens, bytes, words, and the perplexities}}.
json perplexity_to_json(const std::string& name, const PerplexityResult& p);

PerplexityResult rolling_perplexity(LlamaForCausalLM& model, const Tokenizer& tok, const std::string& text,
                                    int64_t max_length);

}  // namespace flatune
