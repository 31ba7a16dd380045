// The anti-forgetting verbs besides `train`'s flags: `flatune fisher` (the diagonal Fisher for
// EWC), `flatune merge` (Wise-FT interpolation of two checkpoints) and `flatune wiseft-sweep`
// (the trade-off curve over alpha: general scores kept against target gained).
#include <cstdio>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/data/dataset.h"
#include "flatune/model/llama.h"
#include "flatune/report/wiseft_sweep.h"
#include "flatune/retain/fisher.h"
#include "flatune/retain/merge.h"
#include "flatune/text/tokenizer.h"

namespace flatune::cli {

void add_fisher_command(CLI::App& app) {
  struct Args {
    std::string model, data, format = "auto", tpl = "auto", out, kind = "empirical";
    int64_t examples = 128, max_length = 512;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("fisher", "diagonal Fisher information of a model on data (for EWC)");
  sub->add_option("--model", a->model, "model folder")->required();
  sub->add_option("--data", a->data, "general data (instruction data or text)")->required();
  sub->add_option("--format", a->format, "alpaca | sharegpt | metamath | jsonl | text | auto");
  sub->add_option("--template", a->tpl, "prompt template");
  sub->add_option("--kind", a->kind, "empirical (labels from the data) | true (labels sampled from the model)");
  sub->add_option("--examples", a->examples, "examples to average over");
  sub->add_option("--max-length", a->max_length, "tokens per example");
  sub->add_option("--seed", a->seed, "seed for sampled labels");
  sub->add_option("--out", a->out, "output .safetensors")->required();
  sub->callback([a] {
    auto tok = load_tokenizer(a->model);
    auto model = load_llama(a->model);
    std::vector<Example> data;
    if (a->format == "text") {
      data = text_blocks(a->data, *tok, a->max_length);
    } else {
      TokenizeStats st;
      data = tokenize_conversations(read_conversations(a->data, a->format), *tok,
                                    {resolve_template(a->tpl, *tok), a->max_length, false}, &st);
    }
    auto fisher = compute_fisher(model, data, FisherOptions{a->kind, a->examples, a->seed});
    write_safetensors(a->out, fisher,
                      {{"kind", a->kind}, {"examples", std::to_string(std::min<size_t>(a->examples, data.size()))}});
    std::printf("wrote %s (%zu tensors)\n", a->out.c_str(), fisher.size());
  });
}

void add_merge_command(CLI::App& app) {
  struct Args {
    std::string base, tuned, out;
    double alpha = 0.5;
    bool extrapolate = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("merge", "Wise-FT: (1-alpha)*base + alpha*tuned (tuned may be a LoRA adapter folder)");
  sub->add_option("--base", a->base, "base model folder")->required();
  sub->add_option("--tuned", a->tuned, "tuned model folder or PEFT adapter folder")->required();
  sub->add_option("--alpha", a->alpha, "interpolation weight of the tuned model");
  sub->add_flag("--extrapolate", a->extrapolate, "allow alpha outside [0, 1]");
  sub->add_option("--out", a->out, "output model folder")->required();
  sub->callback([a] {
    merge_checkpoints(a->base, a->tuned, a->alpha, a->extrapolate, a->out);
    std::printf("wrote %s\n", a->out.c_str());
  });
}

void add_wiseft_sweep_command(CLI::App& app) {
  struct Args {
    WiseFtSweepOptions opts;
    std::string alphas = "0,0.25,0.5,0.75,1", categories;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("wiseft-sweep",
                                     "Wise-FT over several alphas: general scores and target score of each merge, "
                                     "written as wiseft_sweep.csv/.json and a plot of target gain against forgetting");
  sub->add_option("--base", a->opts.base_dir, "base model folder")->required();
  sub->add_option("--tuned", a->opts.tuned_dir, "tuned model folder or PEFT adapter folder")->required();
  sub->add_option("--alphas", a->alphas, "comma-separated alphas in [0, 1] (0, the base, is always included)");
  sub->add_option("--tasks", a->opts.general_tasks, "general task files (JSONL items)")->required();
  sub->add_option("--target", a->opts.target_task, "target task file")->required();
  sub->add_option("--categories", a->categories, "YAML {category: [task prefixes]} (default: the seed paper's)");
  sub->add_option("--shots", a->opts.eval.shots, "few-shot examples per item");
  sub->add_option("--limit", a->opts.eval.limit, "first N items of each task");
  sub->add_option("--template", a->opts.target_template, "generative target: wrap prompts in this training template");
  sub->add_option("--threads", a->threads, "intra-op threads");
  sub->add_option("--out", a->opts.out_dir, "folder for wiseft_sweep.csv/.json/.png/.svg")->required();
  sub->callback([a] {
    if (a->threads > 0) at::set_num_threads(a->threads);
    WiseFtSweepOptions o = a->opts;
    o.alphas = parse_alpha_list(a->alphas, "--alphas");
    if (!a->categories.empty()) o.categories = load_categories(a->categories);
    WiseFtSweep s = run_wiseft_sweep(o);
    std::printf("%s", wiseft_sweep_csv(s).c_str());
    std::printf("wrote %s/wiseft_sweep.{csv,json,png,svg}\n", o.out_dir.c_str());
  });
}

}  // namespace flatune::cli
