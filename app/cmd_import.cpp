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
  sub->add_option("--suite", a->suite, "mmlu | arc | hellaswag")->required()->check(CLI::IsMember(importable_suites()));
  sub->add_option("--input", a->input, "the suite's file (or, for MMLU, a folder of <subject>_test.csv)")->required();
  sub->add_option("--out", a->out, "task file to write (JSONL)")->required();
  sub->add_option("--shots", a->shots, "MMLU: first N rows of <dev>/<subject>_dev.csv as examples (lm-eval's MMLU few-shot)");
  sub->add_option("--dev", a->dev, "MMLU: the dev folder (data/dev)");
  sub->callback([a] {
    auto items = import_suite(a->suite, a->input, a->shots, a->dev);
    std::string text;
    for (const auto& it : items) text += it.dump() + "\n";
    write_file_atomic(a->out, text);
    std::printf("%s: %zu items -> %s\n", a->suite.c_str(), items.size(), a->out.c_str());
  });
}

}  // namespace flatune::cli
