// The training run end to end on the testdata models: learning, resume bit for bit, crash
// safety, accumulation, data parallel equivalence, and bad input.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <thread>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/llama.h"
#include "flatune/optim/optimizer.h"
#include "flatune/train/run_folder.h"
#include "flatune/train/trainer.h"
#include "test_util.h"
#include "train_test_util.h"

using namespace flatune;
using flatune::testing::adamw_state;
using flatune::testing::max_weight_diff;
using flatune::testing::run_flatune;
using flatune::testing::same_file;
using flatune::testing::TempDir;
using flatune::testing::testdata;

extern char** environ;

namespace {

std::string write_alpaca(const TempDir& dir, int n = 48) {
  return flatune::testing::write_sums_alpaca(dir / "alpaca.json", n);
}

TrainOptions base_options(const std::string& data, const std::string& out) {
  TrainOptions o;
  o.model = testdata("models/llama-gqa");
  o.data = data;
  o.out = out;
  o.batch_size = 4;
  o.max_steps = 12;
  o.lr = 2e-3;
  o.seed = 3;
  o.threads = 1;
  return o;
}

std::vector<double> losses(const std::string& run) {
  std::vector<double> out;
  for_each_jsonl(run + "/metrics.jsonl", [&](const json& j, size_t) {
    if (j.contains("loss")) out.push_back(j.at("loss").get<double>());
  });
  return out;
}

}  // namespace

// --bf16 trains as fp32 does, step by step, to bf16's rounding: the losses of a 12-step SAM run
// stay within 2% of the fp32 run's, and the setting is recorded with the run.
TEST(Train, Bf16AutocastFollowsTheFp32Run) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string data = write_alpaca(dir);
  TrainOptions fp32 = base_options(data, dir / "fp32");
  fp32.sam = "sam";
  TrainOptions bf16 = fp32;
  bf16.out = dir / "bf16";
  bf16.bf16 = true;
  train(fp32);
  train(bf16);
  auto a = losses(dir / "fp32"), b = losses(dir / "bf16");
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GE(a.size(), 12u);
  bool differ = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(b[i], a[i], 0.02 * a[i]) << "step " << i + 1;
    differ = differ || a[i] != b[i];
  }
  EXPECT_TRUE(differ);  // bf16 really ran
  EXPECT_LT(a.back(), a.front());
  EXPECT_NE(read_file(dir / "bf16/config.yaml").find("bf16: true"), std::string::npos);
}

TEST(Train, SamFineTuningLowersTheLoss) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  TrainOptions o = base_options(write_alpaca(dir), dir / "run");
  o.max_steps = 30;
  o.batch_size = 8;
  o.lr = 3e-3;
  o.sam = "sam";
  o.rho = 0.05;
  o.val_count = 8;
  o.eval_every = 10;
  TrainResult r = train(o);
  EXPECT_EQ(r.steps, 30);
  auto l = losses(dir / "run");
  ASSERT_EQ(l.size(), 30u);
  EXPECT_LT(l.back(), 0.5 * l.front());
  EXPECT_GT(r.final_val_loss, 0);
  // The final folder is a complete Hugging Face folder that loads.
  auto model = load_llama(dir / "run/final");
  EXPECT_TRUE(file_exists(dir / "run/final/tokenizer.json"));
  EXPECT_TRUE(file_exists(dir / "run/config.yaml"));
}

TEST(Train, PretrainingAFreshModelOnTextLowersTheLoss) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  TempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat number " + std::to_string(i % 10) + ".\n";
  write_file_atomic(dir / "corpus.txt", text);
  TrainOptions o;
  o.init_config = testdata("models/llama-mha/config.json");
  o.tokenizer = testdata("models/llama-mha");
  o.data = dir / "corpus.txt";
  o.format = "text";
  o.max_length = 64;
  o.batch_size = 8;
  o.max_steps = 25;
  o.lr = 5e-3;
  o.out = dir / "pre";
  o.threads = 1;
  train(o);
  auto l = losses(dir / "pre");
  EXPECT_LT(l.back(), 0.6 * l.front());
}

// 12 steps straight vs 6 steps, a restart from the step-6 checkpoint, and 6 more: bit for bit.
class Resume : public ::testing::TestWithParam<std::string> {};

TEST_P(Resume, IsBitIdentical) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  TrainOptions o = base_options(write_alpaca(dir), dir / "straight");
  o.save_every = 6;
  o.keep_last = 0;
  const std::string variant = GetParam();
  if (variant == "sam") o.sam = "sam";
  if (variant == "looksam") {
    o.sam = "looksam";
    o.looksam_k = 4;
  }
  if (variant == "lora-sam") {
    o.sam = "sam";
    o.lora_rank = 4;
    o.lora_targets = {"q_proj", "v_proj", "down_proj"};
  }
  if (variant == "sam-subset-l2") {  // the first pass differentiates layer 1's MLP only; the penalty all weights
    o.sam = "sam-subset";
    o.sam_subset = {".*layers\\.1\\.mlp\\..*"};
    o.l2_base = 0.5;
  }
  if (variant == "pack-accum") {
    o.pack = true;
    o.grad_accum = 2;
  }
  train(o);
  // The interrupted run: only what was on disk at step 6.
  std::filesystem::create_directories(dir / "resumed/checkpoints");
  std::filesystem::copy(dir / "straight/checkpoints/step-6", dir / "resumed/checkpoints/step-6",
                        std::filesystem::copy_options::recursive);
  TrainOptions r = o;
  r.out = dir / "resumed";
  r.resume = true;
  EXPECT_EQ(train(r).steps, 12);
  const std::string a = dir / "straight/checkpoints/step-12", b = dir / "resumed/checkpoints/step-12";
  const char* weights = o.lora_rank > 0 ? "/adapter_model.safetensors" : "/model.safetensors";
  EXPECT_TRUE(same_file(a + weights, b + weights)) << variant;
  auto sa = adamw_state(a, o), sb = adamw_state(b, o);
  ASSERT_EQ(sa.size(), sb.size());
  ASSERT_FALSE(sa.empty());
  for (size_t i = 0; i < sa.size(); ++i)
    EXPECT_TRUE(torch::equal(sa[i], sb[i])) << variant << " optimizer tensor " << i;
  EXPECT_TRUE(same_file(a + "/trainer_tensors.safetensors", b + "/trainer_tensors.safetensors")) << variant;
  EXPECT_TRUE(same_file(dir / "straight/final/model.safetensors", dir / "resumed/final/model.safetensors")) << variant;
  // The resumed log reads as one run: 12 lines, the last ones equal.
  auto la = losses(dir / "straight"), lb = losses(dir / "resumed");
  ASSERT_EQ(lb.size(), 6u);
  EXPECT_EQ(la.back(), lb.back());
}

INSTANTIATE_TEST_SUITE_P(Variants, Resume,
                         ::testing::Values("adamw", "sam", "looksam", "lora-sam", "sam-subset-l2", "pack-accum"));

TEST(Train, AccumulationEqualsOneLargeBatch) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir);
  for (const char* sam : {"none", "sam"}) {
    TrainOptions big = base_options(data, dir / (std::string("big-") + sam));
    big.batch_size = 8;
    big.max_steps = 3;
    big.sam = sam;
    // Adam divides by sqrt(v): with the default eps a parameter whose gradient is ~0 moves by
    // ~lr whatever its sign noise, so summation-order rounding would dominate the comparison.
    big.adam_eps = 1e-3;
    TrainOptions small = big;
    small.out = dir / (std::string("small-") + sam);
    small.batch_size = 4;
    small.grad_accum = 2;
    train(big);
    train(small);
    EXPECT_LT(max_weight_diff(dir / (std::string("big-") + sam) + "/final/model.safetensors",
                              dir / (std::string("small-") + sam) + "/final/model.safetensors"),
              2e-6)
        << sam;
  }
}

TEST(Train, TwoProcessesEqualOneProcessWithTheWholeBatch) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir);
  for (const char* variant : {"adamw", "sam", "lora"}) {
    std::string common = "--model '" + testdata("models/llama-gqa") + "' --data '" + data +
                         "' --max-steps 10 --lr 2e-3 --seed 3 --threads 1 --log-every 1 --adam-eps 1e-3";
    if (std::string(variant) == "sam") common += " --sam sam --rho 0.1";
    if (std::string(variant) == "lora") common += " --lora-rank 4 --sam sam";
    auto one = run_flatune("train " + common + " --batch-size 8 --out '" + (dir / "one-") + variant + "'");
    ASSERT_EQ(one.exit_code, 0) << one.output;
    auto two = run_flatune("launch --nproc 2 -- '" + std::string(FLATUNE_BINARY) + "' train " + common +
                           " --batch-size 4 --out '" + (dir / "two-") + variant + "'");
    ASSERT_EQ(two.exit_code, 0) << two.output;
    EXPECT_LT(max_weight_diff(dir / "one-" + variant + "/final/model.safetensors",
                              dir / "two-" + variant + "/final/model.safetensors"),
              2e-6)
        << variant;
  }
}

// A 2-process SAM run resumed from its step-6 checkpoint by a new 2-process launch ends bit for bit
// where the uninterrupted 2-process run ends: the sampler's shard, the optimizer state and the
// all-reduced gradients all continue as if nothing had happened.
TEST(Train, TwoProcessResumeIsBitIdentical) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir);
  const std::string launch =
      "launch --nproc 2 -- '" + std::string(FLATUNE_BINARY) + "' train --model '" + testdata("models/llama-gqa") +
      "' --data '" + data +
      "' --max-steps 12 --batch-size 4 --lr 2e-3 --seed 3 --threads 1 --sam sam --rho 0.1 --log-every 1"
      " --save-every 6 --keep-last 0 --out ";
  auto straight = run_flatune(launch + "'" + (dir / "straight") + "'");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  std::filesystem::create_directories(dir / "resumed/checkpoints");
  std::filesystem::copy(dir / "straight/checkpoints/step-6", dir / "resumed/checkpoints/step-6",
                        std::filesystem::copy_options::recursive);
  auto resumed = run_flatune(launch + "'" + (dir / "resumed") + "' --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const std::string a = dir / "straight/checkpoints/step-12", b = dir / "resumed/checkpoints/step-12";
  EXPECT_TRUE(same_file(a + "/model.safetensors", b + "/model.safetensors"));
  TrainOptions o = base_options(data, dir / "unused");
  auto sa = adamw_state(a, o), sb = adamw_state(b, o);
  ASSERT_EQ(sa.size(), sb.size());
  ASSERT_FALSE(sa.empty());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(torch::equal(sa[i], sb[i])) << "optimizer tensor " << i;
  EXPECT_TRUE(same_file(dir / "straight/final/model.safetensors", dir / "resumed/final/model.safetensors"));
  // And the interrupted run really did start from step 6, not from scratch.
  EXPECT_EQ(losses(dir / "resumed").size(), losses(dir / "straight").size() / 2);
}

// Evaluation under `flatune launch --nproc 2`: each process scores every other item and the
// gathered result is the one process's, item for item (few-shot prefixes included).
TEST(Train, TwoProcessEvaluationEqualsOneProcess) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string mc, gen;
  for (int i = 0; i < 9; ++i) {
    json choices = json::array();
    for (int c = 0; c < 2 + i % 3; ++c) choices.push_back("choice " + std::to_string(c * 7 + i));
    mc += json({{"id", "m" + std::to_string(i)},
                {"context", "question " + std::to_string(i) + ": which one?"},
                {"choices", choices},
                {"gold", i % 2},
                {"category", i < 5 ? "a" : "b"}})
              .dump() +
          "\n";
  }
  for (int i = 0; i < 3; ++i)
    gen += json({{"id", "g" + std::to_string(i)},
                 {"prompt", "add " + std::to_string(i) + " and 1"},
                 {"answer", std::to_string(i + 1)}})
               .dump() +
           "\n";
  write_file_atomic(dir / "mc.jsonl", mc);
  write_file_atomic(dir / "gen.jsonl", gen);
  const std::string args = "eval --model '" + testdata("models/llama-gqa") + "' --tasks '" + (dir / "mc.jsonl") +
                           "' '" + (dir / "gen.jsonl") +
                           "' --shots 1 --batch-size 2 --max-new-tokens 4 --threads 1 --out ";
  auto one = run_flatune(args + "'" + (dir / "one") + "'");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two =
      run_flatune("launch --nproc 2 -- '" + std::string(FLATUNE_BINARY) + "' " + args + "'" + (dir / "two") + "'");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  for (const char* task : {"mc", "gen"}) {
    json a = read_json_file(dir / "one/eval/" + task + ".json"), b = read_json_file(dir / "two/eval/" + task + ".json");
    EXPECT_EQ(a.at("n"), b.at("n")) << task;
    EXPECT_EQ(a.at("metrics"), b.at("metrics")) << task;
    EXPECT_EQ(b.at("settings").at("processes"), 2);
    std::vector<json> ia, ib;
    for_each_jsonl(dir / "one/eval/" + task + ".items.jsonl", [&](const json& j, size_t) { ia.push_back(j); });
    for_each_jsonl(dir / "two/eval/" + task + ".items.jsonl", [&](const json& j, size_t) { ib.push_back(j); });
    ASSERT_EQ(ia.size(), ib.size()) << task;
    for (size_t i = 0; i < ia.size(); ++i) {
      EXPECT_EQ(ia[i].at("id"), ib[i].at("id"));
      if (ia[i].contains("loglik")) {
        auto la = ia[i]["loglik"].get<std::vector<double>>(), lb = ib[i]["loglik"].get<std::vector<double>>();
        ASSERT_EQ(la.size(), lb.size());
        // Batches differ between one and two processes (other neighbours, other padding).
        for (size_t c = 0; c < la.size(); ++c) EXPECT_NEAR(la[c], lb[c], 1e-5) << task << " item " << i;
        EXPECT_EQ(ia[i].at("pred_acc"), ib[i].at("pred_acc"));
      } else {
        EXPECT_EQ(ia[i].at("output"), ib[i].at("output"));
      }
    }
  }
}

// Loss surfaces and sharpness under `flatune launch --nproc 2`: each process measures one of the
// two fixed batches and the shares (losses, gradients, Hessian-vector products) are summed, so the
// numbers are the one process's up to summation order.
TEST(Train, TwoProcessLandscapeAndSharpnessEqualOneProcess) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir);
  const std::string on =
      " --model '" + testdata("models/llama-gqa") + "' --data '" + data + "' --batches 2 --batch-size 2 --threads 1";
  const std::string launch = "launch --nproc 2 -- '" + std::string(FLATUNE_BINARY) + "' ";
  const std::string surface = "landscape" + on + " --grid 3 --range -0.5:0.5 --seed 4 --out ";
  const std::string sharpness =
      "sharpness" + on + " --metrics sam,eps,avg,lambda_max,trace --eps-steps 2 --samples 2 --iters 6 --out ";
  for (const auto& [args, name] :
       std::vector<std::pair<std::string, std::string>>{{surface, "surface"}, {sharpness, "sharpness"}}) {
    auto one = run_flatune(args + "'" + (dir / "one-") + name + "'");
    ASSERT_EQ(one.exit_code, 0) << one.output;
    auto two = run_flatune(launch + args + "'" + (dir / "two-") + name + "'");
    ASSERT_EQ(two.exit_code, 0) << two.output;
  }
  json a = read_json_file(dir / "one-surface/landscape.json"), b = read_json_file(dir / "two-surface/landscape.json");
  EXPECT_EQ(b.at("settings").at("processes"), 2);
  auto la = a.at("surface").at("losses").get<std::vector<std::vector<double>>>();
  auto lb = b.at("surface").at("losses").get<std::vector<std::vector<double>>>();
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    for (size_t j = 0; j < 3; ++j) EXPECT_NEAR(la[i][j], lb[i][j], 1e-5 * std::abs(la[i][j])) << i << "," << j;
  EXPECT_NE(la[0][0], la[1][1]);  // the surface is not flat: the comparison means something
  a = read_json_file(dir / "one-sharpness/sharpness.json"), b = read_json_file(dir / "two-sharpness/sharpness.json");
  EXPECT_NEAR(a.at("loss").get<double>(), b.at("loss").get<double>(), 1e-6);
  for (const char* k : {"sam_sharpness", "epsilon_sharpness", "average_sharpness", "lambda_max", "hessian_trace"}) {
    const double x = a.at(k).get<double>(), y = b.at(k).get<double>();
    EXPECT_NE(x, 0) << k;
    EXPECT_NEAR(x, y, 1e-3 * std::abs(x) + 1e-5) << k;  // differences of losses: absolute rounding too
  }
  // Two processes cannot share one batch: a clear error, not a hang.
  auto bad = run_flatune(launch + "sharpness --model '" + testdata("models/llama-gqa") + "' --data '" + data +
                         "' --batches 1 --threads 1 --metrics sam");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("1 fixed batches cannot be shared by 2 processes"), std::string::npos) << bad.output;
}

TEST(Train, KilledWhileCheckpointingLeavesALoadableCheckpoint) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir);
  std::vector<std::string> args = {FLATUNE_BINARY, "train", "--model",      testdata("models/llama-gqa"),
                                   "--data",       data,    "--out",        dir / "run",
                                   "--max-steps",  "400",   "--save-every", "1",
                                   "--keep-last",  "3",     "--threads",    "1",
                                   "--batch-size", "2",     "--schedule",   "constant"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  // Wait until a few checkpoints exist, then kill it mid-stream (it checkpoints every step, so
  // the kill lands during or between writes).
  RunFolder run{dir / "run"};
  for (int i = 0; i < 3000 && list_checkpoints(run).size() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  auto newest = newest_checkpoint(run);
  ASSERT_TRUE(newest.has_value());
  const int64_t newest_step = newest.value_or(-1);           // present: asserted above
  auto model = load_llama(run.checkpoint_dir(newest_step));  // complete and loadable
  auto r = run_flatune("train --model '" + testdata("models/llama-gqa") + "' --data '" + data + "' --out '" +
                       (dir / "run") + "' --max-steps " + std::to_string(newest_step + 2) +
                       " --save-every 1 --threads 1 --batch-size 2 --schedule constant --resume");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(file_exists(dir / "run/final/model.safetensors"));
}

namespace {
// Starts `flatune args...` with stdout and stderr in `log`; `ignore_sigint` starts it as a
// shell's background job is started (SIGINT ignored), and without OMP_WAIT_POLICY, so that it
// re-executes itself as it does when a user starts it.
pid_t spawn_flatune(std::vector<std::string> args, const std::string& log, bool ignore_sigint = false) {
  args.insert(args.begin(), FLATUNE_BINARY);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> env;
  for (char** e = environ; *e; ++e)
    if (!ignore_sigint || std::string(*e).rfind("OMP_WAIT_POLICY=", 0) != 0) env.push_back(*e);
  env.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files, 1, 2);
  struct sigaction ignore{}, old{};
  ignore.sa_handler = SIG_IGN;
  if (ignore_sigint) sigaction(SIGINT, &ignore, &old);
  pid_t pid = -1;
  posix_spawn(&pid, argv[0], &files, nullptr, argv.data(), env.data());
  if (ignore_sigint) sigaction(SIGINT, &old, nullptr);
  posix_spawn_file_actions_destroy(&files);
  return pid;
}

int exit_code_of(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
}  // namespace

// A signal during training: the step ends, a checkpoint is saved, the exit code is 128 +
// signal (not 0: a scheduler must not take an interrupted run for a finished one), and the
// message says how to continue.
TEST(Train, SignalSavesACheckpointAndExitsNonZeroWithAResumeHint) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir);
  for (int sig : {SIGINT, SIGTERM}) {
    const std::string out = dir / ("run" + std::to_string(sig));
    pid_t pid = spawn_flatune({"train", "--model", testdata("models/llama-gqa"), "--data", data, "--out", out,
                               "--max-steps", "100000", "--threads", "1", "--batch-size", "2"},
                              dir / "log.txt");
    // Training has begun once a step's line is in metrics.jsonl: the file itself is created a
    // moment before the signal handling of the training loop is installed, and a signal in
    // between stops the run as one while starting does (under load that window was hit).
    auto stepped = [&] {
      return file_exists(out + "/metrics.jsonl") &&
             read_file(out + "/metrics.jsonl").find("\"loss\"") != std::string::npos;
    };
    for (int i = 0; i < 3000 && !stepped(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    kill(pid, sig);
    EXPECT_EQ(exit_code_of(pid), 128 + sig);
    auto newest = newest_checkpoint(RunFolder{out});
    ASSERT_TRUE(newest.has_value());
    const int64_t step = newest.value_or(-1);  // present: asserted above
    const std::string log = read_file(dir / "log.txt");
    const std::string name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    EXPECT_NE(
        log.find("flatune: interrupted by " + name + " at step " + std::to_string(step) + " of 100000; saved " + out +
                 "/checkpoints/step-" + std::to_string(step) + "; to continue, run the same command with --resume"),
        std::string::npos)
        << log;
    EXPECT_FALSE(file_exists(out + "/final/config.json"));
  }
}

// A SIGINT while flatune starts (re-executing itself, loading the model and tokenizing) stops
// it at once with nothing written, even when the parent ignores SIGINT as a shell does for a
// background job. The signal is sent every 5 ms from the moment the process exists; 20,000
// examples to tokenize keep it starting far longer than that.
TEST(Train, SignalWhileStartingStopsBeforeAnythingIsWritten) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  std::string data = write_alpaca(dir, 20000);
  pid_t pid = spawn_flatune({"train", "--model", testdata("models/llama-gqa"), "--data", data, "--out", dir / "run",
                             "--max-steps", "100000", "--threads", "1"},
                            dir / "log.txt", /*ignore_sigint=*/true);
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 6000 && done == 0; ++i) {
    kill(pid, SIGINT);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    done = waitpid(pid, &status, WNOHANG);
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "still running 30 s after the first SIGINT";
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130)
      << (WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                              : "exit " + std::to_string(WEXITSTATUS(status)))
      << "\n"
      << read_file(dir / "log.txt");
  EXPECT_NE(read_file(dir / "log.txt").find("flatune: interrupted by SIGINT"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "run"));
}

// --resume compares the options with the run's config.yaml: a change that alters what the run
// computes is refused naming each option and both values, with nothing touched; a longer run,
// logging and --threads may change and are recorded; a finished run says so.
TEST(Train, ResumeRefusesChangedOptionsAndRecordsAllowedOnes) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string run = dir / "run";
  const std::string common = "train --model '" + testdata("models/llama-gqa") + "' --data '" + write_alpaca(dir) +
                             "' --out '" + run + "' --batch-size 2 --save-every 3 --threads 1";
  auto first = run_flatune(common + " --max-steps 5 --lr 0.002");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_EQ(list_checkpoints(RunFolder{run}), (std::vector<int64_t>{3, 5}));  // the last step too, to extend from
  const std::string config = read_file(run + "/config.yaml"),
                    final_weights = read_file(run + "/final/model.safetensors");

  auto refused = run_flatune(common + " --max-steps 5 --sam sam --resume --lr 0.001");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(
      refused.output.find(run + "/config.yaml: --resume with options that change the run: --lr 0.001 (run: 0.002), "
                                "--sam sam (run: none)"),
      std::string::npos)
      << refused.output;
  auto shorter = run_flatune(common + " --max-steps 4 --lr 0.002 --resume");
  EXPECT_EQ(shorter.exit_code, 2) << shorter.output;
  EXPECT_NE(shorter.output.find("--max-steps 4 (run: 5)"), std::string::npos) << shorter.output;
  EXPECT_EQ(read_file(run + "/config.yaml"), config);

  auto finished = run_flatune(common + " --max-steps 5 --lr 0.002 --resume");
  EXPECT_EQ(finished.exit_code, 0) << finished.output;
  EXPECT_NE(finished.output.find(run + ": the run is finished (step 5)"), std::string::npos) << finished.output;
  EXPECT_EQ(read_file(run + "/final/model.safetensors"), final_weights);

  auto extended = run_flatune(common + " --max-steps 7 --lr 0.002 --log-every 2 --resume");
  EXPECT_EQ(extended.exit_code, 0) << extended.output;
  auto cfg = read_run_config(RunFolder{run});
  EXPECT_EQ(cfg["max-steps"], "7");
  EXPECT_EQ(cfg["finished-at-step"], "7");
  ASSERT_EQ(cfg["resumes"].size(), 1u) << cfg.dump();
  EXPECT_EQ(cfg["resumes"][0]["at-step"], "5");
  EXPECT_EQ(cfg["resumes"][0]["changed"]["max-steps"]["from"], "5");
  EXPECT_EQ(cfg["resumes"][0]["changed"]["max-steps"]["to"], "7");
  EXPECT_EQ(cfg["resumes"][0]["changed"]["log-every"]["to"], "2");
  std::vector<json> events;
  for_each_jsonl(run + "/metrics.jsonl", [&](const json& j, size_t) {
    if (j.contains("event")) events.push_back(j);
  });
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["step"], 5);
  EXPECT_EQ(events[0]["changed"]["max-steps"]["to"], "7");
}

TEST(Train, NonFiniteLossStopsNamingTheStep) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  TrainOptions o = base_options(write_alpaca(dir), dir / "run");
  o.lr = 1e30;
  o.max_grad_norm = 0;
  try {
    train(o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.where().rfind("step ", 0), 0u) << e.what();
    EXPECT_NE(e.problem().find("NaN"), std::string::npos) << e.what();
  }
}

TEST(Train, BadInputIsOneLineAndExitCodeTwo) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  write_file_atomic(dir / "empty.json", "[]");
  write_file_atomic(dir / "bad.json", "[{\"instruction\": \"x\", \"output\": 3}]");
  std::string model = " --model '" + testdata("models/llama-gqa") + "' --out '" + (dir / "r") + "'";
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--data '" + (dir / "empty.json") + "'", "empty.json: empty dataset"},
           {"--data '" + (dir / "bad.json") + "'", "bad.json: record 0: field 'output' must be a string"},
           {"--data '" + (dir / "missing.json") + "'", "missing.json: cannot open"},
           {"--data '" + write_alpaca(dir) + "' --lora-rank 2 --lora-targets qkv", "target 'qkv' names no module"},
           {"--data '" + write_alpaca(dir) + "' --sam magic", "unknown SAM variant 'magic'"}}) {
    auto r = run_flatune("train" + model + " " + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
    EXPECT_EQ(r.output.rfind("flatune: ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

// `flatune --config FILE.yaml VERB`: the file's keys are the verb's long flags (they used to be
// ignored silently), the command line overrides them, and every error names the file, the line
// and the key, in one line with exit code 2.
TEST(Train, ConfigFileSetsTheVerbsFlagsAndItsErrorsNameFileLineAndKey) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string data = write_alpaca(dir, 8);
  write_file_atomic(dir / "ok.yaml", "max-steps: 2\nlr: 0.5\nlora-targets: [q_proj, k_proj]\nlora-rank: 2\n");
  auto ok = run_flatune("--config '" + (dir / "ok.yaml") + "' train --model '" + testdata("models/llama-gqa") +
                        "' --data '" + data + "' --out '" + (dir / "run") + "' --batch-size 2 --threads 1 --lr 0.25");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  auto cfg = read_run_config(RunFolder{dir / "run"});
  EXPECT_EQ(cfg["max-steps"], "2");
  EXPECT_EQ(cfg["lr"], "0.25");  // the command line wins
  EXPECT_EQ(cfg["lora-targets"], json::array({"q_proj", "k_proj"}));

  const std::string verb = " train --model '" + testdata("models/llama-gqa") + "' --data '" + data + "' --out '" +
                           (dir / "bad") + "' --threads 1";
  for (const auto& [text, needle] : std::vector<std::pair<std::string, std::string>>{
           {"max-steps: 2\nlr: abc\n", "bad.yaml: line 2: key 'lr': "},
           {"max-steps: 2\nrho: [1, [2]]\n", "bad.yaml: line 2: key 'rho': list items must be single values"},
           {"max-steps: 2\nlr: {a: 1}\n", "bad.yaml: line 2: key 'lr': must be a value or a list of values"},
           {"max-steps: 2\n\nnonsense-key: 3\n",
            "bad.yaml: line 3: key 'nonsense-key': not an option of `flatune train`"},
           {"[1]: 2\n", "bad.yaml: line 1: a key must be a flag name"},
           {"lr: [1\n", "bad.yaml: line 2: malformed YAML"},
           {"- 1\n", "bad.yaml: line 1: expected a map of flag: value"},
           {"batch-size: -3\n", "bad.yaml: line 1: key 'batch-size': "}}) {
    write_file_atomic(dir / "bad.yaml", text);
    auto r = run_flatune("--config '" + (dir / "bad.yaml") + "'" + verb);
    EXPECT_EQ(r.exit_code, 2) << text << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("flatune: " + (dir / "bad.yaml") + ": line ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}

// --checkpoint-activations trains the same model (the recomputed layers give the gradients of
// the plain backward), with SAM's two passes too.
TEST(Train, CheckpointedActivationsTrainTheSameModel) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  TrainOptions o = base_options(write_alpaca(dir), dir / "plain");
  o.max_steps = 4;
  o.sam = "sam";
  train(o);
  o.out = dir / "checkpointed";
  o.checkpoint_activations = true;
  train(o);
  EXPECT_LE(max_weight_diff(dir / "plain/final/model.safetensors", dir / "checkpointed/final/model.safetensors"), 1e-6);
  EXPECT_EQ(read_run_config(RunFolder{dir / "checkpointed"})["checkpoint-activations"], "true");
}

// ZeRO stage 1 (--shard optimizer): 2 processes that each keep and step half of the AdamW state
// train the model 1 process trains with the whole batch (SAM, 10 steps: its gradient norm and
// perturbation span the whole model on every rank); each rank's checkpoint file holds about
// half the state; a resumed run ends bit for bit where the uninterrupted one does; resuming at
// another world size is refused.
TEST(Train, ShardedOptimizerStateEqualsOneProcessAndResumes) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string common =
      "--model '" + testdata("models/llama-gqa") + "' --data '" + write_alpaca(dir) +
      "' --max-steps 10 --lr 2e-3 --seed 3 --threads 1 --adam-eps 1e-3 --save-every 5 --keep-last 0";
  const std::string sam = " --sam sam --rho 0.1", asam = " --sam asam --rho 0.5";
  auto one = run_flatune("train " + common + sam + " --batch-size 8 --out '" + (dir / "one") + "'");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::string launch = "launch --nproc 2 -- '" + std::string(FLATUNE_BINARY) + "' train " + common + sam +
                             " --batch-size 4 --shard optimizer --out ";
  auto two = run_flatune(launch + "'" + (dir / "two") + "'");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_LT(max_weight_diff(dir / "one/final/model.safetensors", dir / "two/final/model.safetensors"), 1e-5);

  const std::string full = dir / "one/checkpoints/step-5/optimizer.pt";
  const std::string shard0 = dir / "two/checkpoints/step-5/optimizer.rank-0.pt";
  const std::string shard1 = dir / "two/checkpoints/step-5/optimizer.rank-1.pt";
  ASSERT_TRUE(file_exists(shard0) && file_exists(shard1));
  EXPECT_FALSE(file_exists(dir / "two/checkpoints/step-5/optimizer.pt"));
  const double full_bytes = std::filesystem::file_size(full);
  for (const auto& s : {shard0, shard1})
    EXPECT_LT(std::filesystem::file_size(s), 0.65 * full_bytes) << s << " of " << full_bytes << " bytes";

  std::filesystem::create_directories(dir / "resumed/checkpoints");
  std::filesystem::copy(dir / "two/checkpoints/step-5", dir / "resumed/checkpoints/step-5",
                        std::filesystem::copy_options::recursive);
  auto resumed = run_flatune(launch + "'" + (dir / "resumed") + "' --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(same_file(dir / "two/final/model.safetensors", dir / "resumed/final/model.safetensors"));
  // (The optimizer files are torch archives, not byte-stable; five more AdamW steps ending bit for
  // bit where the uninterrupted run's did show their state came back whole.)
  EXPECT_TRUE(same_file(dir / "two/checkpoints/step-10/model.safetensors",
                        dir / "resumed/checkpoints/step-10/model.safetensors"));

  // ZeRO stage 2 (--shard gradients): gradients reduced to their owners, norms totalled over the
  // ranks; SAM and ASAM (its norm of |w|-scaled gradients) as 1 process computes them.
  auto asam_one =
      run_flatune("train " + common + " --batch-size 8 --sam asam --rho 0.5 --out '" + (dir / "asam-one") + "'");
  ASSERT_EQ(asam_one.exit_code, 0) << asam_one.output;
  for (const char* variant : {"sam", "asam"}) {
    const std::string extra = std::string(variant) == "asam" ? asam : sam;
    auto zero2 =
        run_flatune("launch --nproc 2 -- '" + std::string(FLATUNE_BINARY) + "' train " + common +
                    " --batch-size 4 --shard gradients" + extra + " --out '" + (dir / "zero2-") + variant + "'");
    ASSERT_EQ(zero2.exit_code, 0) << zero2.output;
    const std::string reference = std::string(variant) == "asam" ? "asam-one" : "one";
    EXPECT_LT(max_weight_diff(dir / reference + "/final/model.safetensors",
                              dir / "zero2-" + variant + "/final/model.safetensors"),
              1e-5)
        << variant;
  }

  std::filesystem::create_directories(dir / "alone/checkpoints");
  std::filesystem::copy(dir / "two/checkpoints/step-5", dir / "alone/checkpoints/step-5",
                        std::filesystem::copy_options::recursive);
  auto alone =
      run_flatune("train " + common + " --batch-size 8 --shard optimizer --resume --out '" + (dir / "alone") + "'");
  EXPECT_EQ(alone.exit_code, 2) << alone.output;
  EXPECT_NE(alone.output.find("sharded over 2 ranks"), std::string::npos) << alone.output;
}

// `bench train` times its variants in alternating rounds and reports each one's best round; SAM
// holds one model-sized buffer beyond AdamW during its step (the exact copy of the weights it
// restores), ASAM too, and LookSAM carries one between steps (g_v).
TEST(BenchTrain, BestRoundsAndWhatEachVariantHolds) {
  TempDir dir;
  auto r = run_flatune(
      "bench train --steps 1 --rounds 2 --layers 2 --hidden 64 --heads 2 --ffn 128 --vocab 256 --seq 8 --batch 2 "
      "--threads 1 --variants none sam asam looksam sam-subset --json '" +
      (dir / "bench.json") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json rows = read_json_file(dir / "bench.json");
  ASSERT_EQ(rows.size(), 5u);
  std::map<std::string, json> by;
  for (const auto& row : rows) {
    const auto rounds = row["rounds_in_process_tokens_per_s"].get<std::vector<double>>();
    ASSERT_EQ(rounds.size(), 2u) << row.dump();
    EXPECT_DOUBLE_EQ(row["tokens_per_s"].get<double>(), *std::max_element(rounds.begin(), rounds.end()));
    by[row["variant"].get<std::string>()] = row;
  }
  const double adamw_tps = by["adamw"]["tokens_per_s"].get<double>();
  for (const auto& [name, row] : by)
    EXPECT_NEAR(row["step_time_vs_adamw"].get<double>(), adamw_tps / row["tokens_per_s"].get<double>(), 1e-9);
  // SAM's FLOPs are two passes; sam-subset's first pass skips what the subset does not need, so
  // neither its FLOPs nor its MFU are given.
  EXPECT_DOUBLE_EQ(by["sam"]["model_flops_per_token"].get<double>(),
                   2 * by["adamw"]["model_flops_per_token"].get<double>());
  EXPECT_TRUE(by["sam-subset"]["model_flops_per_token"].is_null());
  EXPECT_TRUE(by["sam-subset"]["mfu_fp32"].is_null());
  // AdamW's state between steps is weights, gradients and two moments: four weight-sized buffers.
  const double adamw_state = by["adamw"]["state_mib"].get<double>(), weights = adamw_state / 4;
  const double adamw_extra = by["adamw"]["tensor_peak_mib"].get<double>() - adamw_state;
  // Beside the copy, ASAM forms T^2 g tensor by tensor: one temporary the size of the largest
  // tensor, the embedding (vocabulary x hidden floats).
  const double largest = 256.0 * 64 * 4 / (1 << 20);
  for (const char* kind : {"sam", "asam"}) {
    EXPECT_DOUBLE_EQ(by[kind]["state_mib"].get<double>(), adamw_state) << kind;
    const double extra = by[kind]["tensor_peak_mib"].get<double>() - adamw_state - adamw_extra;
    EXPECT_GT(extra, 0.9 * weights) << kind;
    EXPECT_LT(extra, 1.1 * weights + (std::string(kind) == "asam" ? largest : 0.0)) << kind;
  }
  EXPECT_NEAR(by["looksam"]["state_mib"].get<double>() - adamw_state, weights, 0.01 * weights);
  EXPECT_LT(by["looksam"]["tensor_peak_mib"].get<double>() - by["looksam"]["state_mib"].get<double>() - adamw_extra,
            1.1 * weights);

  auto bad = run_flatune("bench train --rounds 0");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.output, "flatune: --rounds: must be at least 1\n");
}

// The wait policy flatune picks when the user has not (ACTIVE with MKL's products on libgomp's
// threads, else PASSIVE) reaches what it runs; `launch` with several ranks gives them PASSIVE, and
// a policy the user set is kept everywhere.
TEST(Launch, ChoosesTheOpenMpWaitPolicyUnlessTheUserDid) {
  auto policies = [](const std::string& env, int nproc) {
    const std::string cmd = env + " '" + std::string(FLATUNE_BINARY) + "' launch --nproc " + std::to_string(nproc) +
                            " -- sh -c 'echo \"policy=$OMP_WAIT_POLICY\"' 2>&1";
    FILE* pipe = popen(cmd.c_str(), "r");
    std::string out;
    std::array<char, 256> buf{};
    size_t n = 0;
    while (pipe && (n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
    if (pipe) pclose(pipe);
    return out;
  };
  const std::string chosen = std::string("policy=") + compat::default_omp_wait_policy() + "\n";
  EXPECT_EQ(policies("env -u OMP_WAIT_POLICY", 1), chosen);
  EXPECT_EQ(policies("env -u OMP_WAIT_POLICY", 2), "policy=PASSIVE\npolicy=PASSIVE\n");
  EXPECT_EQ(policies("env OMP_WAIT_POLICY=ACTIVE", 2), "policy=ACTIVE\npolicy=ACTIVE\n");
  EXPECT_EQ(policies("env OMP_WAIT_POLICY=PASSIVE", 1), "policy=PASSIVE\n");
}
