// `flatune bench <what>`: throughput and memory measurements. Each module's bench adds itself
// as a sub-subcommand through add_bench_<what>_command (see commands.h).
#include "commands.h"

namespace flatune::cli {

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "throughput and memory benchmarks");
  bench->require_subcommand(1);
  // Benchmarks (one line each):
  add_bench_eval_command(*bench);
  add_bench_tokenize_command(*bench);
  add_bench_train_command(*bench);
  add_bench_gemm_command(*bench);
  add_bench_landscape_command(*bench);
  (void)bench;
}

}  // namespace flatune::cli
