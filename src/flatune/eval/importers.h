// Importers: public files of the usual suites turned into task items with the prompts
// lm-evaluation-harness (0.4) uses. Each returns items as JSON objects in the task format of
// tasks.h ({"id","context","choices","gold","category"[,"description"]}); target_delimiter " "
// is added at scoring time, so choices carry no leading space.
#pragma once
#include <string>
#include <vector>

#include "flatune/core/json.h"

namespace flatune {

// Suites this build imports: "mmlu", "arc", "hellaswag".
const std::vector<std::string>& importable_suites();

// MMLU: one csv per subject as distributed (data/test/<subject>_test.csv, no header, columns
// question,A,B,C,D,answer); `path` is such a file or a folder of them. Category = lm-eval's
// group of the subject (stem, humanities, social_sciences, other). With shots > 0 the first
// `shots` rows of <dev_dir>/<subject>_dev.csv go into the description, as lm-eval's MMLU does
// (few-shot split "dev", sampler first_n), so evaluate with --shots 0.
std::vector<json> import_mmlu(const std::string& path, int shots = 0, const std::string& dev_dir = "");
// The lm-eval group of an MMLU subject; throws for an unknown subject.
std::string mmlu_category(const std::string& subject);

// ARC (Easy or Challenge): the AI2 jsonl ({"id","question":{"stem","choices":[{"text","label"}]},
// "answerKey"}) or the Hugging Face layout (question string, choices {text:[],label:[]}).
std::vector<json> import_arc(const std::string& path);

// HellaSwag: the jsonl as distributed (ctx_a, ctx_b, activity_label, endings, label).
std::vector<json> import_hellaswag(const std::string& path);
// lm-eval's hellaswag preprocess: strip, " [title]" -> ". ", drop "[...]", "  " -> " ".
std::string hellaswag_preprocess(const std::string& text);

std::vector<json> import_suite(const std::string& suite, const std::string& path, int shots = 0, const std::string& dev_dir = "");

}  // namespace flatune
