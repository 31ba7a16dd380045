// `flatune bench gemm`: the machine's matrix-multiply rate through libtorch (the BLAS it was built
// with), fp32 and bf16, for square products and for the shapes a Llama layer's projections have.
// It is the ceiling model-FLOPs utilisation is measured against.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"

namespace flatune::cli {

double gemm_rate(int64_t m, int64_t k, int64_t n, torch::ScalarType dtype, double min_seconds,
                 const torch::Device& device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  auto a = torch::randn({m, k}, gen).to(device, dtype), b = torch::randn({k, n}, gen).to(device, dtype);
  auto c = torch::mm(a, b);  // warm-up: thread pools, buffers (cuBLAS handles on a GPU)
  compat::synchronize(device);
  // The best window, not the mean: on a shared VM other work takes the cores now and then, and
  // a ceiling for utilisation must not be lowered by that. A window is one product on the CPU;
  // a GPU queues products, so there it is 16 (the wait for them is then not what is timed).
  const int64_t per_window = device.is_cpu() ? 1 : 16;
  double best = 0, secs = 0;
  const auto start = std::chrono::steady_clock::now();
  auto t0 = start;
  while (secs < min_seconds) {
    for (int64_t r = 0; r < per_window; ++r) torch::mm_out(c, a, b);
    compat::synchronize(device);
    const auto t1 = std::chrono::steady_clock::now();
    best = std::max(best, 2.0 * m * k * n * per_window / std::chrono::duration<double>(t1 - t0).count() / 1e9);
    secs = std::chrono::duration<double>(t1 - start).count();
    t0 = t1;
  }
  return best;
}

void add_bench_gemm_command(CLI::App& bench) {
  struct Args {
    std::vector<std::string> shapes = {"1024x1024x1024", "2048x2048x2048", "2048x256x256",
                                       "2048x256x688",   "2048x688x256",   "2048x256x8000"};
    std::vector<std::string> dtypes = {"float32", "bfloat16"};
    double seconds = 1.0;
    int threads = 0;
    std::string json_out;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = bench.add_subcommand("gemm", "GFLOP/s of matrix products (the machine's peak for MFU)");
  sub->add_option("--shapes", a->shapes, "MxKxN products to time");
  sub->add_option("--dtypes", a->dtypes, "float32 bfloat16");
  sub->add_option("--seconds", a->seconds, "minimum time per measurement");
  sub->add_option("--threads", a->threads, "intra-op threads");
  sub->add_option("--json", a->json_out, "also write the results as JSON");
  sub->callback([a] {
    if (a->threads > 0) at::set_num_threads(a->threads);
    std::printf("%d threads\n%-18s %-9s %10s\n", at::get_num_threads(), "m x k x n", "dtype", "GFLOP/s");
    json rows = json::array();
    for (const auto& dt : a->dtypes) {
      torch::ScalarType t;
      if (dt == "float32") t = torch::kFloat;
      else if (dt == "bfloat16") t = torch::kBFloat16;
      else fail("--dtypes", "unknown dtype '" + dt + "' (float32, bfloat16)");
      for (const auto& shape : a->shapes) {
        int64_t m = 0, k = 0, n = 0;
        char tail = 0;
        if (std::sscanf(shape.c_str(), "%ldx%ldx%ld%c", &m, &k, &n, &tail) != 3 || m <= 0 || k <= 0 || n <= 0)
          fail("--shapes", "'" + shape + "' is not MxKxN with positive sizes");
        double rate = gemm_rate(m, k, n, t, a->seconds);
        std::printf("%-18s %-9s %10.1f\n", shape.c_str(), dt.c_str(), rate);
        std::fflush(stdout);
        rows.push_back({{"shape", shape}, {"dtype", dt}, {"gflops", rate}, {"threads", at::get_num_threads()}});
      }
    }
    if (!a->json_out.empty()) write_file_atomic(a->json_out, rows.dump(2) + "\n");
  });
}

}  // namespace flatune::cli
