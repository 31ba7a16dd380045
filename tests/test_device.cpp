// --device: the one parser every verb uses (compat::resolve_device) and its one-line errors
// through the CLI; training on the test device (FLATUNE_TEST_DEVICE) against the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "device_util.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/io/safetensors.h"
#include "flatune/train/run_folder.h"
#include "flatune/train/trainer.h"
#include "test_util.h"
#include "train_test_util.h"

using namespace flatune;
using flatune::testing::max_weight_diff;
using flatune::testing::run_flatune;
using flatune::testing::same_file;
using flatune::testing::TempDir;
using flatune::testing::testdata;

namespace {

const std::string kUsage = " is not a device (cpu, cuda, cuda:N with N a GPU index)";

// Sets environment variables for the scope and restores what was there.
struct ScopedEnv {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value) setenv(name, value, 1);
      else unsetenv(name);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved) {
      if (value) setenv(name.c_str(), value->c_str(), 1);
      else unsetenv(name.c_str());
    }
  }
};

}  // namespace

TEST(Device, CpuAndMisspellings) {
  EXPECT_EQ(compat::resolve_device("cpu"), torch::Device(torch::kCPU));
  for (const std::string bad :
       {"gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "cuda0", "cpu:0", "", "cuda:12345"}) {
    try {
      compat::resolve_device(bad);
      ADD_FAILURE() << "'" << bad << "' was accepted";
    } catch (const Error& e) { EXPECT_EQ(std::string(e.what()), "--device: '" + bad + "'" + kUsage); }
  }
}

// A bare `cuda` is the rank's own GPU under flatune launch (torchrun's LOCAL_RANK), GPU 0 alone.
TEST(Device, CudaIndexFollowsLocalRankUnderLaunch) {
  {
    ScopedEnv env({{"WORLD_SIZE", nullptr}, {"LOCAL_RANK", "3"}});
    EXPECT_EQ(compat::requested_cuda_index("cuda"), 0);  // not launched: LOCAL_RANK is no one's
    EXPECT_EQ(compat::requested_cuda_index("cuda:2"), 2);
  }
  {
    ScopedEnv env({{"WORLD_SIZE", "4"}, {"LOCAL_RANK", "3"}});
    EXPECT_EQ(compat::requested_cuda_index("cuda"), 3);
    EXPECT_EQ(compat::requested_cuda_index("cuda:1"), 1);  // an explicit index wins
  }
  {
    ScopedEnv env({{"WORLD_SIZE", "2"}, {"LOCAL_RANK", "one"}});
    EXPECT_THROW(compat::requested_cuda_index("cuda"), Error);
  }
}

#ifndef FLATUNE_CUDA
TEST(Device, CudaOnACpuBuildNamesTheBuild) {
  for (const std::string spec : {"cuda", "cuda:0", "cuda:7"}) {
    try {
      compat::resolve_device(spec);
      ADD_FAILURE() << spec << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), "--device " + spec + ": this flatune was built without CUDA (libtorch " +
                                           std::string(TORCH_VERSION) + " CPU build)");
    }
  }
}
#else
TEST(Device, CudaIndexOutOfRange) {
  if (!compat::cuda_available()) GTEST_SKIP() << "no GPU visible";
  const int count = compat::cuda_device_count();
  EXPECT_EQ(compat::resolve_device("cuda"), torch::Device(torch::kCUDA, 0));
  const std::string spec = "cuda:" + std::to_string(count);
  try {
    compat::resolve_device(spec);
    ADD_FAILURE() << spec << " was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPU " + std::to_string(count) + " does not exist"), std::string::npos)
        << e.what();
  }
}
#endif

// Every verb with --device fails before any work with the one line the parser gives, exit 2.
TEST(Device, VerbsRefuseABadDeviceInOneLine) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string model = "'" + testdata("models/llama-gqa") + "'";
  const std::string data = "'" + flatune::testing::write_sums_alpaca(dir / "sums.json", 8) + "'";
#ifdef FLATUNE_CUDA
  const std::string unavailable = "cuda:99";
  const std::string expected = "GPU 99 does not exist";
#else
  const std::string unavailable = "cuda";
  const std::string expected = "flatune: --device cuda: this flatune was built without CUDA (libtorch " +
                               std::string(TORCH_VERSION) + " CPU build)\n";
#endif
  const std::vector<std::string> verbs = {
      "train --model " + model + " --data " + data + " --out '" + (dir / "run") + "' --max-steps 1",
      "eval --model " + model + " --tasks '" + (dir / "none.jsonl") + "' --out '" + (dir / "eval") + "'",
      "generate --model " + model + " --prompt hi",
      "landscape --model " + model + " --data " + data + " --out '" + (dir / "land") + "'",
      "sharpness --model " + model + " --data " + data + " --out '" + (dir / "sharp") + "'",
      "experiment --grid '" + (dir / "none.yaml") + "' --out '" + (dir / "exp") + "'",
      "bench train --steps 1 --layers 1 --hidden 32 --heads 2 --ffn 64 --vocab 64 --seq 8 --batch 1",
  };
  for (const auto& verb : verbs) {
    auto r = run_flatune(verb + " --device " + unavailable);
    EXPECT_EQ(r.exit_code, 2) << verb << "\n" << r.output;
#ifdef FLATUNE_CUDA
    EXPECT_NE(r.output.find(expected), std::string::npos) << verb << "\n" << r.output;
#else
    EXPECT_EQ(r.output, expected) << verb;
#endif
    EXPECT_FALSE(std::filesystem::exists(dir / "run/checkpoints")) << verb;
  }
  auto bad = run_flatune(verbs[0] + " --device cuda:x");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.output, "flatune: --device: 'cuda:x'" + kUsage + "\n");
}

// --device cpu trains exactly what no --device trains (bit for bit), and a run on the test
// device (FLATUNE_TEST_DEVICE; cpu unless set) follows the CPU run to float rounding, SAM and
// clipping included, and records the device's kind.
TEST(Device, TrainingOnTheTestDeviceFollowsTheCpu) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string data = flatune::testing::write_sums_alpaca(dir / "sums.json", 24);
  const std::string common = "train --model '" + testdata("models/llama-gqa") + "' --data '" + data +
                             "' --max-steps 4 --batch-size 4 --lr 2e-3 --seed 3 --threads 1 --sam sam --rho 0.1 "
                             "--max-grad-norm 0.5";
  auto plain = run_flatune(common + " --out '" + (dir / "plain") + "'");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  auto cpu = run_flatune(common + " --device cpu --out '" + (dir / "cpu") + "'");
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  EXPECT_TRUE(same_file(dir / "plain/final/model.safetensors", dir / "cpu/final/model.safetensors"));
  EXPECT_EQ(read_run_config(RunFolder{dir / "cpu"})["device"], "cpu");

  const torch::Device device = flatune::testing::test_device();
  TrainOptions o;
  o.model = testdata("models/llama-gqa");
  o.data = data;
  o.out = dir / "on-device";
  o.max_steps = 4;
  o.batch_size = 4;
  o.lr = 2e-3;
  o.seed = 3;
  o.threads = 1;
  o.sam = "sam";
  o.rho = 0.1;
  o.max_grad_norm = 0.5;
  o.device = device.str();
  train(o);
  EXPECT_LT(max_weight_diff(dir / "cpu/final/model.safetensors", dir / "on-device/final/model.safetensors"), 1e-4)
      << device;
  EXPECT_EQ(read_run_config(RunFolder{dir / "on-device"})["device"], device.is_cpu() ? "cpu" : "cuda");
}
