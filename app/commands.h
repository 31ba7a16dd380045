// One function per verb adds its subcommand to the CLI; each lives in app/cmd_<verb>.cpp and is
// a thin call into src/. Flags parse into an options struct; the work happens in the callback.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <CLI/CLI.hpp>

namespace flatune::cli {

// Verbs (one line each).
void add_bench_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_launch_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_fisher_command(CLI::App& app);
void add_merge_command(CLI::App& app);
void add_wiseft_sweep_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_forgetting_command(CLI::App& app);
void add_import_command(CLI::App& app);
void add_experiment_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_landscape_command(CLI::App& app);
void add_sharpness_command(CLI::App& app);
void add_correlate_command(CLI::App& app);
void add_plot_watch_command(CLI::App& app);

// Benchmarks under `flatune bench` (one line each).
void add_bench_eval_command(CLI::App& bench);
void add_bench_tokenize_command(CLI::App& bench);
void add_bench_train_command(CLI::App& bench);
void add_bench_gemm_command(CLI::App& bench);
void add_bench_landscape_command(CLI::App& bench);

// GFLOP/s of (m x k) @ (k x n) in dtype on the current threads (or the GPU), repeated for
// min_seconds: the best product (on a GPU the best 16), the peak model-FLOPs utilisation is
// measured against.
double gemm_rate(int64_t m, int64_t k, int64_t n, c10::ScalarType dtype, double min_seconds,
                 const c10::Device& device = c10::Device(c10::kCPU));

// --device on a verb: cpu | cuda | cuda:N (under flatune launch, cuda is the rank's own GPU).
void add_device_option(CLI::App* sub, std::string& spec);
// Resolves --device (a bad spelling, a CPU build, a missing GPU: one-line errors naming the flag)
// and makes it the process's device, which every model the verb loads goes to.
c10::Device use_device_option(const std::string& spec);

}  // namespace flatune::cli
