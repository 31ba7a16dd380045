// `flatune generate`: text from a prompt with a model folder and its tokenizer.
#include <cstdio>

#include "commands.h"
#include "flatune/core/compat.h"
#include "flatune/model/generate.h"
#include "flatune/model/llama.h"
#include "flatune/text/tokenizer.h"

namespace flatune::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt;
  int64_t max_new_tokens = 64, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
  int threads = 0;
  std::string device;
};

void run_generate(const GenerateArgs& a) {
  if (a.threads > 0) at::set_num_threads(a.threads);
  use_device_option(a.device);
  auto tokenizer = load_tokenizer(a.model);
  auto model = load_llama(a.model);
  model->eval();
  GenerateOptions o;
  o.max_new_tokens = a.max_new_tokens;
  o.temperature = a.temperature;
  o.top_k = a.top_k;
  o.top_p = a.top_p;
  o.seed = a.seed;
  for (int64_t id : model->config().eos_token_ids) o.eos_ids.push_back(id);
  const auto eos = tokenizer->special().eos_id, pad = tokenizer->special().pad_id;
  if (o.eos_ids.empty() && eos) o.eos_ids.push_back(*eos);
  if (pad) o.pad_id = *pad;
  auto ids32 = tokenizer->encode(a.prompt, /*add_special=*/true);
  std::vector<int64_t> prompt(ids32.begin(), ids32.end());
  auto out = generate(model, {prompt}, o)[0];
  if (!out.empty() && std::find(o.eos_ids.begin(), o.eos_ids.end(), out.back()) != o.eos_ids.end()) out.pop_back();
  std::vector<int32_t> new_ids(out.begin(), out.end());
  // Decoded text may hold NUL bytes (a byte-fallback token for 0x00): written whole.
  const std::string text = tokenizer->decode(new_ids, /*skip_special=*/true);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}
}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand("generate", "continue a prompt with a model folder's model and tokenizer");
  sub->add_option("--model", args->model, "Hugging Face model folder")->required()->check(CLI::ExistingDirectory);
  sub->add_option("--prompt", args->prompt, "prompt text")->required();
  sub->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--temperature", args->temperature, "0 for greedy decoding")->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k", args->top_k, "sample from the k most likely tokens (0: off)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--top-p", args->top_p, "nucleus sampling mass (1: off)")->check(CLI::Range(0.0, 1.0));
  sub->add_option("--seed", args->seed, "sampling seed");
  sub->add_option("--threads", args->threads, "intra-op threads (default: all cores)");
  add_device_option(sub, args->device);
  sub->callback([args] { run_generate(*args); });
}

}  // namespace flatune::cli
