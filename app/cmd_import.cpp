// `flatune import`: public files of an evaluation suite into a task file (JSONL items with
// lm-evaluation-harness's prompts).
#include <cstdio>

#include "commands.h"
#include "flatune/core/fs.h"
#include "flatune/eval/importers.h"

namespace flatune::cli {

void add_import_command(CLI::App& app) {
  struct Args {
    std::string suite, input, out, dev;
    int shots = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("import", "turn a public evaluation suite's files into a task file");
  sub->footer(
      "Input layouts (JSON forms; no parquet):\n"
      "  mmlu            data/test/<subject>_test.csv (a file or the folder); --shots N --dev data/dev\n"
      "  arc             ARC-{Easy,Challenge}-Test.jsonl (AI2) or Hugging Face JSONL (choices {text,label})\n"
      "  hellaswag       hellaswag_val.jsonl (ctx_a, ctx_b, activity_label, endings, label)\n"
      "  piqa            valid.jsonl + valid-labels.lst beside it, or JSONL with 'label'\n"
      "  siqa            dev.jsonl + dev-labels.lst beside it, or JSONL with 'label' (1-3)\n"
      "  boolq           SuperGLUE BoolQ/val.jsonl, Hugging Face JSONL, or the original dev.jsonl ('answer')\n"
      "  copa            SuperGLUE COPA/val.jsonl\n"
      "  rte             Hugging Face glue/rte JSONL, SuperGLUE RTE/val.jsonl, or GLUE RTE/dev.tsv\n"
      "  winogrande      winogrande_1.1/dev.jsonl (sentence with '_', option1/2, answer)\n"
      "  openbookqa      OpenBookQA-V1-Sep2018/Data/Main/test.jsonl (AI2) or Hugging Face JSONL\n"
      "  race            RACE/test/high (folder of *.txt documents) or EleutherAI/race JSONL\n"
      "  truthfulqa_mc1  data/mc_task.json (TruthfulQA repository) or Hugging Face multiple_choice JSONL\n"
      "  truthfulqa_mc2  the same; items carry 'labels' and are scored as the true answers' probability mass\n"
      "  gsm8k           grade_school_math/data/test.jsonl; --shots N --dev train.jsonl (lm-eval draws)\n"
      "Prompts and choices are lm-evaluation-harness's (0.4 line); evaluate with --shots 0 where the\n"
      "import already put few-shot examples in (mmlu, gsm8k).");
  sub->add_option("--suite", a->suite, "the suite (see below)")->required()->check(CLI::IsMember(importable_suites()));
  sub->add_option("--input", a->input, "the suite's file or folder (see below)")->required();
  sub->add_option("--out", a->out, "task file to write (JSONL)")->required();
  sub->add_option("--shots", a->shots,
                  "MMLU: first N rows of <dev>/<subject>_dev.csv; GSM8K: N drawn from --dev as lm-eval draws");
  sub->add_option("--dev", a->dev, "MMLU: the dev folder (data/dev); GSM8K: the train file");
  sub->callback([a] {
    auto items = import_suite(a->suite, a->input, a->shots, a->dev);
    std::string text;
    for (const auto& it : items) text += it.dump() + "\n";
    write_file_atomic(a->out, text);
    std::printf("%s: %zu items -> %s\n", a->suite.c_str(), items.size(), a->out.c_str());
  });
}

}  // namespace flatune::cli
