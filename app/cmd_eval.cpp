// `flatune eval`: tasks (and perplexity) on a model into <out>/eval/; `flatune forgetting`: the
// base-vs-tuned table.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/forgetting.h"
#include "flatune/eval/loglik.h"
#include "flatune/train/distributed.h"

namespace flatune::cli {

void add_eval_command(CLI::App& app) {
  struct Args {
    std::string model, out, template_name;
    std::vector<std::string> tasks, perplexity;
    EvalOptions opts;
    int threads = 0;
    std::string device;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("eval", "evaluate a model on task files (multiple choice, generative) and text perplexity");
  sub->add_option("--model", a->model, "model folder")->required();
  sub->add_option("--tasks", a->tasks, "task files (JSONL items)");
  sub->add_option("--perplexity", a->perplexity, "text files to score with rolling windows");
  sub->add_option("--shots", a->opts.shots, "few-shot examples per item");
  sub->add_option("--seed", a->opts.seed, "few-shot sampling seed");
  sub->add_option("--limit", a->opts.limit, "first N items of each task");
  sub->add_option("--max-length", a->opts.max_length, "window (default: the model's)");
  sub->add_flag("--naive", a->opts.naive, "score every choice with its own forward pass");
  sub->add_option("--batch-size", a->opts.batch_size, "contexts per forward (items batched by length)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-new-tokens", a->opts.max_new_tokens, "generative tasks: tokens to generate");
  sub->add_option("--template", a->opts.template_name, "generative tasks: wrap prompts in this training template");
  sub->add_option("--threads", a->threads, "intra-op threads");
  add_device_option(sub, a->device);
  sub->add_option("--out", a->out, "folder (a run folder or model folder) that receives eval/")->required();
  sub->callback([a] {
    if (a->tasks.empty() && a->perplexity.empty()) fail("--tasks", "give task files and/or --perplexity text files");
    if (a->threads > 0) at::set_num_threads(a->threads);
    // Under `flatune launch` every process scores its share of the items; rank 0 writes.
    Distributed dist = init_distributed(use_device_option(a->device));
    a->opts.shard = dist.rank;
    a->opts.shards = dist.world_size;
    a->opts.gather = [&dist](const std::string& bytes) { return dist.all_gather(bytes); };
    auto tok = load_tokenizer(a->model);
    auto model = load_llama(a->model);
    std::string dir = join_path(a->out, "eval");
    for (const auto& path : a->tasks) {
      Task task = read_task(path);
      TaskResult r = evaluate_task(model, *tok, task, a->opts);
      if (!dist.is_main()) continue;
      json settings = {{"shots", a->opts.shots},
                       {"seed", a->opts.seed},
                       {"limit", a->opts.limit},
                       {"naive", a->opts.naive},
                       {"batch_size", a->opts.batch_size},
                       {"template", a->opts.template_name},
                       {"file", path},
                       {"processes", dist.world_size}};
      write_task_result(r, dir, {{"model", a->model}, {"settings", settings}});
      std::printf("%-24s n=%-5lld", task.name.c_str(), static_cast<long long>(r.n));
      for (const auto& [k, v] : r.metrics) std::printf("  %s %.4f ± %.4f", k.c_str(), v.value, v.stderr_);
      std::printf("\n");
    }
    if (!dist.is_main()) return;  // perplexity is one pass over one text: rank 0 alone
    for (const auto& path : a->perplexity) {
      int64_t window = a->opts.max_length > 0 ? a->opts.max_length : model->config().max_position_embeddings;
      auto p = rolling_perplexity(model, *tok, read_file(path), window);
      std::string name = std::filesystem::path(path).stem().string();
      json j = perplexity_to_json(name, p);
      j["model"] = a->model;
      j["settings"] = {{"file", path}, {"window", window}};
      make_dirs(dir);
      write_file_atomic(join_path(dir, name + ".json"), j.dump(2) + "\n");
      std::printf("%-24s tokens=%lld  token ppl %.4f  bits/byte %.4f\n", name.c_str(), static_cast<long long>(p.tokens),
                  p.token_perplexity(), p.bits_per_byte());
    }
  });
}

void add_forgetting_command(CLI::App& app) {
  struct Args {
    std::string base, categories, out;
    std::vector<std::string> tuned, targets;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub =
      app.add_subcommand("forgetting", "table of base vs tuned evaluation results per task, category and overall");
  sub->add_option("--base", a->base, "folder with the base model's eval/")->required();
  sub->add_option("--tuned", a->tuned, "folders with tuned models' eval/")->required();
  sub->add_option("--categories", a->categories, "YAML {category: [task prefixes]} (default: the seed paper's)");
  sub->add_option("--target", a->targets, "target tasks, reported as gains outside the overall score");
  sub->add_option("--out", a->out, "write PREFIX.md, PREFIX.csv and PREFIX.json");
  sub->callback([a] {
    Categories cats = a->categories.empty() ? paper_categories() : load_categories(a->categories);
    ForgettingTable t = forgetting_table(a->base, a->tuned, cats, a->targets);
    std::string md = forgetting_markdown(t);
    std::printf("%s", md.c_str());
    if (!a->out.empty()) {
      write_file_atomic(a->out + ".md", md);
      write_file_atomic(a->out + ".csv", forgetting_csv(t));
      write_file_atomic(a->out + ".json", forgetting_json(t).dump(2) + "\n");
    }
  });
}

void add_bench_eval_command(CLI::App& bench) {
  struct Args {
    int64_t items = 32, context = 256, choice_tokens = 8, batch_size = 4;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = bench.add_subcommand(
      "eval", "multiple-choice scoring: one forward per choice vs shared context vs batched items");
  sub->add_option("--items", a->items, "4-choice items");
  sub->add_option("--context", a->context, "mean context tokens per item (each drawn from [C/2, 3C/2])");
  sub->add_option("--choice-tokens", a->choice_tokens, "mean tokens per choice (each drawn from [1, 2K-1])");
  sub->add_option("--batch-size", a->batch_size, "contexts per forward in the batched path")
      ->check(CLI::PositiveNumber);
  sub->add_option("--threads", a->threads, "intra-op threads");
  sub->callback([a] {
    if (a->threads > 0) at::set_num_threads(a->threads);
    // A fresh ~10M-parameter model: the measurement is about compute, not about what it knows.
    LlamaConfig c;
    c.vocab_size = 8000, c.hidden_size = 256, c.intermediate_size = 688, c.num_hidden_layers = 8;
    c.num_attention_heads = 8, c.num_key_value_heads = 8, c.head_dim = 32, c.max_position_embeddings = 1024;
    LlamaForCausalLM model(c);
    model->init_weights(0);
    model->eval();
    int64_t params = 0;
    for (const auto& p : model->parameters()) params += p.numel();
    // Items of varied lengths, as real suites have, so batching pays for its padding.
    torch::manual_seed(0);
    auto draw = [&](int64_t lo, int64_t hi) { return torch::randint(lo, hi + 1, {1}, torch::kLong).item<int64_t>(); };
    auto tokens = [&](int64_t n) {
      auto t = torch::randint(1, c.vocab_size, {n}, torch::kLong);
      return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
    };
    std::vector<EncodedPair> pairs;
    for (int64_t i = 0; i < a->items; ++i) {
      auto ctx = tokens(draw(std::max<int64_t>(1, a->context / 2),
                             std::min<int64_t>(c.max_position_embeddings / 2, 3 * a->context / 2)));
      for (int k = 0; k < 4; ++k)
        pairs.push_back({ctx, tokens(draw(1, std::max<int64_t>(1, 2 * a->choice_tokens - 1)))});
    }
    const int64_t window = c.max_position_embeddings;
    auto timed = [&](const std::function<std::vector<Loglik>()>& run, std::vector<Loglik>* out) {
      auto t0 = std::chrono::steady_clock::now();
      *out = run();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return static_cast<double>(a->items) / s;
    };
    std::vector<Loglik> r_naive, r_shared, r_batched;
    const double naive = timed([&] { return score_naive(model, pairs, window); }, &r_naive);
    const double shared = timed(
        [&] {
          std::vector<Loglik> all;
          for (int64_t i = 0; i < a->items; ++i) {
            auto r = score_batched(model, std::vector<EncodedPair>(pairs.begin() + 4 * i, pairs.begin() + 4 * i + 4),
                                   window, 1);
            all.insert(all.end(), r.begin(), r.end());
          }
          return all;
        },
        &r_shared);
    const double batched = timed([&] { return score_batched(model, pairs, window, a->batch_size); }, &r_batched);
    double max_diff = 0;
    for (size_t i = 0; i < pairs.size(); ++i)
      max_diff = std::max(
          {max_diff, std::abs(r_shared[i].value - r_naive[i].value), std::abs(r_batched[i].value - r_naive[i].value)});
    std::printf("model %.1fM parameters, %lld items x 4 choices, context ~%lld + choice ~%lld tokens, %d threads\n",
                params / 1e6, static_cast<long long>(a->items), static_cast<long long>(a->context),
                static_cast<long long>(a->choice_tokens), at::get_num_threads());
    std::printf("naive   (one forward per choice)        %8.2f items/s\n", naive);
    std::printf("shared  (context KV cache, per item)    %8.2f items/s   %.2fx naive\n", shared, shared / naive);
    std::printf("batched (%3lld contexts per forward)     %8.2f items/s   %.2fx naive\n",
                static_cast<long long>(a->batch_size), batched, batched / naive);
    std::printf("largest |loglik difference| to naive: %.2e\n", max_diff);
  });
}

}  // namespace flatune::cli
