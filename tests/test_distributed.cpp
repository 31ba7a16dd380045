// c10d data parallel helpers, run as real processes: the test re-executes its own binary as
// ranks through launch_local (the launcher `flatune launch` uses).
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>

#include "flatune/core/fs.h"
#include "test_util.h"

#include "flatune/core/error.h"
#include "flatune/train/distributed.h"
#include "flatune/train/launch.h"

using namespace flatune;

namespace {
bool worker_mode() { return std::getenv("FLATUNE_DIST_WORKER") != nullptr; }

LaunchResult run_ranks(const std::string& test, const std::string& extra_env = "") {
  setenv("FLATUNE_DIST_WORKER", "1", 1);
  if (!extra_env.empty()) setenv(extra_env.c_str(), "1", 1);
  auto r = launch_local(2, {"/proc/self/exe", "--gtest_filter=" + test}, 0, std::chrono::seconds(20));
  unsetenv("FLATUNE_DIST_WORKER");
  if (!extra_env.empty()) unsetenv(extra_env.c_str());
  return r;
}
}  // namespace

// --- the ranks' side (skipped unless started by the tests below)

TEST(DistributedWorker, Collectives) {
  if (!worker_mode()) GTEST_SKIP() << "runs as a rank of Distributed.TwoRanksAgree";
  Distributed d = init_distributed(std::chrono::seconds(20));
  ASSERT_EQ(d.world_size, 2);
  // Two tensors of different shapes in one bucket, one in a bucket of its own.
  auto a = torch::full({3, 2}, double(d.rank + 1), torch::kDouble),
       b = torch::arange(4, torch::kDouble) * (d.rank == 0 ? 1.0 : 3.0);
  auto c = torch::full({5}, float(10 * d.rank));
  d.allreduce_mean({a, b, c}, /*bucket_bytes=*/a.nbytes() + b.nbytes());
  EXPECT_TRUE(torch::allclose(a, torch::full({3, 2}, 1.5, torch::kDouble)));
  EXPECT_TRUE(torch::allclose(b, torch::arange(4, torch::kDouble) * 2.0));
  EXPECT_TRUE(torch::allclose(c, torch::full({5}, 5.0f)));
  auto w = torch::full({2, 2}, double(d.rank + 7), torch::kDouble);
  d.broadcast({w});
  EXPECT_TRUE(torch::equal(w, torch::full({2, 2}, 7.0, torch::kDouble)));
  EXPECT_DOUBLE_EQ(d.mean(d.rank == 0 ? 1.0 : 4.0), 2.5);
  EXPECT_EQ(d.all_gather(10.0 + d.rank), (std::vector<double>{10.0, 11.0}));
  // Unequal lengths (and an empty string) come back exactly, in rank order.
  EXPECT_EQ(d.all_gather(std::string(d.rank == 0 ? "" : "rank one\n{\"x\": 1}")),
            (std::vector<std::string>{"", "rank one\n{\"x\": 1}"}));
  EXPECT_EQ(d.all_gather(std::string(d.rank == 0 ? "abc" : "d")), (std::vector<std::string>{"abc", "d"}));
  d.barrier();
}

TEST(DistributedWorker, PeerDies) {
  if (!worker_mode()) GTEST_SKIP() << "runs as a rank of Distributed.DeadRankFailsCleanly";
  Distributed d = init_distributed(std::chrono::seconds(5));
  d.barrier();
  if (d.rank == 1) _exit(3);
  try {
    for (int i = 0; i < 3; ++i) d.allreduce_mean({torch::ones({4})});
    FAIL() << "the collective did not notice the dead peer";
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), "rank 0");
    _exit(4);  // what a trainer does after printing the error
  }
}

// Rank 1 stops itself (SIGSTOP: alive, holding its sockets, silent) after the first barrier;
// rank 0's next collective must fail within the timeout FLATUNE_COLLECTIVE_TIMEOUT gives,
// naming rank 1. The error goes to the file FLATUNE_TEST_REPORT names.
TEST(DistributedWorker, PeerStops) {
  if (!worker_mode()) GTEST_SKIP() << "runs as a rank of Distributed.StuckRankIsNamedWithinTheTimeout";
  Distributed d = init_distributed();
  d.barrier();
  if (d.rank == 1) raise(SIGSTOP);
  try {
    d.allreduce_mean({torch::ones({4})});
    FAIL() << "the collective did not notice the stopped peer";
  } catch (const Error& e) {
    std::ofstream(std::getenv("FLATUNE_TEST_REPORT")) << e.what() << "\n";
    _exit(4);
  }
}

// --- the launcher's side

TEST(Distributed, ShardRangeCoversEverythingOnce) {
  for (int64_t n : {0, 1, 7, 10}) {
    int64_t next = 0;
    for (int r = 0; r < 3; ++r) {
      auto [b, e] = shard_range(n, r, 3);
      EXPECT_EQ(b, next);
      EXPECT_GE(e, b);
      EXPECT_LE(e - b, n / 3 + 1);
      next = e;
    }
    EXPECT_EQ(next, n);
  }
}

TEST(Distributed, SingleProcessIsANoOp) {
  if (worker_mode()) GTEST_SKIP();
  Distributed d = init_distributed();
  EXPECT_FALSE(d.active());
  auto t = torch::ones({3});
  d.allreduce_mean({t});
  d.barrier();
  EXPECT_TRUE(torch::equal(t, torch::ones({3})));
  EXPECT_EQ(d.all_gather(2.0), std::vector<double>{2.0});
}

TEST(Distributed, TwoRanksAgree) {
  if (worker_mode()) GTEST_SKIP();
  auto r = run_ranks("DistributedWorker.Collectives");
  EXPECT_EQ(r.exit_code, 0) << r.message;
}

TEST(Distributed, DeadRankFailsCleanly) {
  if (worker_mode()) GTEST_SKIP();
  auto r = run_ranks("DistributedWorker.PeerDies");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.message.find("rank 1 exited with code 3"), std::string::npos) << r.message;
}

TEST(Distributed, LaunchRejectsBadInput) {
  if (worker_mode()) GTEST_SKIP();
  EXPECT_THROW(launch_local(0, {"true"}), Error);
  EXPECT_THROW(launch_local(2, {}), Error);
  EXPECT_THROW(launch_local(1, {"/nonexistent/flatune-binary"}), Error);
  EXPECT_EQ(launch_local(2, {"true"}).exit_code, 0);
  auto r = launch_local(2, {"false"});
  EXPECT_EQ(r.exit_code, 1);
}

TEST(Distributed, StuckRankIsNamedWithinTheTimeout) {
  if (worker_mode()) GTEST_SKIP();
  flatune::testing::TempDir dir;
  setenv("FLATUNE_DIST_WORKER", "1", 1);
  setenv("FLATUNE_TEST_REPORT", (dir / "report.txt").c_str(), 1);
  const auto t0 = std::chrono::steady_clock::now();
  // Timeout 2 s (passed as FLATUNE_COLLECTIVE_TIMEOUT, as `flatune launch --collective-timeout`
  // does); the stopped rank is killed 1 s after rank 0 fails.
  auto r = launch_local(2, {"/proc/self/exe", "--gtest_filter=DistributedWorker.PeerStops"}, 0, std::chrono::seconds(1),
                        2.0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  unsetenv("FLATUNE_DIST_WORKER");
  unsetenv("FLATUNE_TEST_REPORT");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.message.find("rank 0 exited with code 4"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("rank 1 was killed"), std::string::npos) << r.message;
  const std::string report = read_file(dir / "report.txt");
  EXPECT_NE(report.find("rank 0: all-reduce failed: rank 1 never reached it"), std::string::npos) << report;
  EXPECT_NE(report.find("collective timeout 2 s"), std::string::npos) << report;
  // Start-up, 2 s of timeout, at most 2 s looking for the silent peer, 1 s of grace: well
  // under the 300 s default, which the option replaced.
  EXPECT_LT(seconds, 20.0);
}

TEST(Distributed, CollectiveTimeoutFromTheEnvironment) {
  if (worker_mode()) GTEST_SKIP();
  setenv("WORLD_SIZE", "1", 1);
  setenv("FLATUNE_COLLECTIVE_TIMEOUT", "soon", 1);
  EXPECT_THROW(init_distributed(), Error);  // checked even alone: a typo should not wait 300 s later
  setenv("FLATUNE_COLLECTIVE_TIMEOUT", "2.5", 1);
  EXPECT_NO_THROW(init_distributed());
  unsetenv("FLATUNE_COLLECTIVE_TIMEOUT");
  unsetenv("WORLD_SIZE");
}
