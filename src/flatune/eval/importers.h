// Importers: public files of the usual suites turned into task items with the prompts
// lm-evaluation-harness (0.4) uses. Each returns items as JSON objects in the task format of
// tasks.h ({"id","context","choices","gold","category"[,"description"]}); target_delimiter " "
// is added at scoring time, so choices carry no leading space.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "flatune/core/json.h"

namespace flatune {

// Suites this build imports: mmlu, arc, hellaswag, piqa, siqa, boolq, copa, rte, winogrande,
// openbookqa, race, truthfulqa_mc1, truthfulqa_mc2, gsm8k.
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

// PIQA: JSONL {"goal","sol1","sol2"[,"label"]}; without "label", <stem>-labels.lst beside the
// file (the original valid.jsonl + valid-labels.lst). Prompt "Question: {goal}\nAnswer:".
std::vector<json> import_piqa(const std::string& path);
// Social IQa: JSONL {"context","question","answerA","answerB","answerC"[,"label" "1"-"3"]}, or
// dev.jsonl + dev-labels.lst. Prompt "Q: {context} {question}\nA:".
std::vector<json> import_siqa(const std::string& path);
// BoolQ: JSONL {"passage","question","label" (bool or 0/1)} (SuperGLUE, Hugging Face) or the
// original {"passage","question","answer": bool}. Choices no/yes.
std::vector<json> import_boolq(const std::string& path);
// COPA: SuperGLUE JSONL {"premise","choice1","choice2","question" cause|effect,"label"}.
std::vector<json> import_copa(const std::string& path);
// RTE as lm-eval's glue/rte: Hugging Face glue JSONL {"sentence1","sentence2","label" 0/1},
// SuperGLUE JSONL {"premise","hypothesis","label" entailment|not_entailment}, or GLUE's dev.tsv.
std::vector<json> import_rte(const std::string& path);
// WinoGrande: JSONL {"sentence" with one '_',"option1","option2","answer" "1"|"2"}; partial
// scoring items ({"contexts","continuation"}).
std::vector<json> import_winogrande(const std::string& path);
// OpenBookQA: AI2 JSONL (Main/test.jsonl, question.stem) or Hugging Face (question_stem,
// choices {text,label}); the stem alone is the prompt.
std::vector<json> import_openbookqa(const std::string& path);
// RACE, one item per document (lm-eval 0.4.13's race, task version 3.0): a folder of the
// distribution's documents (RACE/test/high/*.txt, JSON each), one such file, or EleutherAI/race
// JSONL ({"article","problems": Python-literal list}).
std::vector<json> import_race(const std::string& path);
// TruthfulQA multiple choice, mc = 1 or 2: data/mc_task.json (a JSON list, targets as
// {answer: label} in order) or Hugging Face truthful_qa/multiple_choice JSONL (targets as
// {choices, labels}). MC2 items carry "labels" (scored as the true answers' probability mass).
std::vector<json> import_truthfulqa(const std::string& path, int mc);
// GSM8K: JSONL {"question","answer" ending "#### N"} into generative items {"prompt":
// "Question: …\nAnswer:", "answer", "until"}; with shots > 0, examples drawn from `train_path`
// as lm-eval draws them (random.Random(seed).sample per item, consumed in item order).
std::vector<json> import_gsm8k(const std::string& path, int shots = 0, const std::string& train_path = "",
                               uint64_t seed = 1234);

// `dev_dir`: MMLU's dev folder, or GSM8K's train file.
std::vector<json> import_suite(const std::string& suite, const std::string& path, int shots = 0,
                               const std::string& dev_dir = "");

}  // namespace flatune
