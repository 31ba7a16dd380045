// Forgetting watched during training (`flatune train --watch`): the watched scores are what
// `flatune eval` gives the checkpoint of the same step, watching leaves training bit-identical,
// a resumed run ends with the same watch.csv, and the best-checkpoint rule picks the step a
// hand-made history says.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <optional>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/model/llama.h"
#include "flatune/report/watch.h"
#include "flatune/train/run_folder.h"
#include "flatune/train/trainer.h"
#include "flatune/train/watch_history.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::run_flatune;
using flatune::testing::TempDir;
using flatune::testing::testdata;

namespace {

std::string write_sums(const TempDir& dir, int n) { return flatune::testing::write_sums_alpaca(dir / "sums.json", n); }

// A multiple-choice suite of `n` items; `seed` varies the items between suites.
std::string write_suite(const TempDir& dir, const std::string& name, int n, int seed) {
  std::string text;
  for (int i = 0; i < n; ++i) {
    int a = (i * 3 + seed) % 17, b = (i * 11 + 2 * seed) % 13;
    json choices = {std::to_string(a + b), std::to_string(a + b + 1), std::to_string(a * b % 7), "none"};
    text += json({{"id", name + std::to_string(i)},
                  {"context", "add " + std::to_string(a) + " and " + std::to_string(b) + ":"},
                  {"choices", choices},
                  {"gold", 0}})
                .dump() +
            "\n";
  }
  write_file_atomic(dir / (name + ".jsonl"), text);
  return dir / (name + ".jsonl");
}

struct Suites {
  std::string knowledge, reasoning, target, categories;
};

Suites write_suites(const TempDir& dir) {
  Suites s;
  s.knowledge = write_suite(dir, "facts_a", 12, 1);
  s.reasoning = write_suite(dir, "logic_b", 10, 5);
  s.target = write_suite(dir, "sums_test", 8, 9);
  write_file_atomic(dir / "categories.yaml", "knowledge: [facts]\nreasoning: [logic]\n");
  s.categories = dir / "categories.yaml";
  return s;
}

TrainOptions options(const TempDir& dir, const Suites& s, const std::string& out) {
  TrainOptions o;
  o.model = testdata("models/llama-gqa");
  o.data = write_sums(dir, 32);
  o.out = out;
  o.batch_size = 4;
  o.max_steps = 6;
  o.lr = 3e-3;
  o.schedule = "constant";
  o.seed = 5;
  o.threads = 1;
  o.save_every = 2;
  o.keep_last = 0;
  o.watch = {s.knowledge, s.reasoning};
  o.watch_target = s.target;
  o.watch_categories = s.categories;
  o.watch_every = 2;
  return o;
}

// watch.csv without the timing column, which differs from run to run.
std::vector<std::string> rows_without_seconds(const std::string& path) {
  std::vector<std::string> out;
  for (const auto& r : read_watch_csv(path, 1 << 30)) {
    WatchRow copy = r;
    copy.seconds = 0;
    out.push_back(watch_csv_line(copy));
  }
  return out;
}

}  // namespace

TEST(Watch, ScoresEqualEvalOfTheCheckpointAndTrainingIsUntouched) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  Suites s = write_suites(dir);
  TrainOptions watched = options(dir, s, dir / "watched");
  TrainResult r = train(watched, make_watch_hooks(watched));
  EXPECT_GT(r.watch_seconds, 0);
  auto rows = read_watch_csv(dir / "watched/watch.csv", 1 << 30);
  ASSERT_EQ(rows.size(), 4u);  // steps 0, 2, 4, 6
  EXPECT_EQ(rows[0].step, 0);
  EXPECT_EQ(rows[3].step, 6);
  EXPECT_EQ(rows[0].forgetting, 0);

  // `flatune eval` of the step-4 checkpoint gives the watched scores of step 4, exactly.
  const std::string ckpt = RunFolder{dir / "watched"}.checkpoint_dir(4);
  auto e = run_flatune("eval --model '" + ckpt + "' --tasks '" + s.knowledge + "' '" + s.reasoning + "' '" + s.target +
                       "' --threads 1 --out '" + (dir / "eval4") + "'");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const WatchRow& at4 = rows[2];
  ASSERT_EQ(at4.step, 4);
  std::map<std::string, double> watched_scores(at4.score.columns.begin(), at4.score.columns.end());
  double knowledge = read_json_file(dir / "eval4/eval/facts_a.json")["metrics"]["acc"].get<double>();
  double reasoning = read_json_file(dir / "eval4/eval/logic_b.json")["metrics"]["acc"].get<double>();
  double target = read_json_file(dir / "eval4/eval/sums_test.json")["metrics"]["acc"].get<double>();
  EXPECT_EQ(watched_scores["task:facts_a"], knowledge);
  EXPECT_EQ(watched_scores["task:logic_b"], reasoning);
  EXPECT_EQ(watched_scores["category:knowledge"], knowledge);
  EXPECT_EQ(at4.score.overall, (knowledge + reasoning) / 2);
  EXPECT_EQ(at4.score.target, std::optional<double>(target));
  EXPECT_EQ(at4.forgetting, rows[0].score.overall - at4.score.overall);
  EXPECT_EQ(at4.target_gain, target - rows[0].score.target.value_or(NAN));

  // Without the watch: the same weights, bit for bit.
  TrainOptions plain = watched;
  plain.out = dir / "plain";
  plain.watch.clear();
  plain.watch_target.clear();
  plain.watch_every = 0;
  train(plain);
  EXPECT_EQ(read_file(dir / "plain/final/model.safetensors"), read_file(dir / "watched/final/model.safetensors"));

  // metrics.jsonl has the watch lines too.
  int watch_lines = 0;
  for_each_jsonl(dir / "watched/metrics.jsonl", [&](const json& j, size_t) {
    if (j.value("event", "") == "watch") ++watch_lines;
  });
  EXPECT_EQ(watch_lines, 4);
}

// A run killed after watching step 6 but before its checkpoint resumes from step 4 and ends
// with the watch.csv of the uninterrupted run (timings aside).
TEST(Watch, ResumedRunEndsWithTheSameWatchCsv) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  Suites s = write_suites(dir);
  TrainOptions o = options(dir, s, dir / "whole");
  train(o, make_watch_hooks(o));
  std::filesystem::copy(dir / "whole", dir / "killed", std::filesystem::copy_options::recursive);
  std::filesystem::remove_all(dir / "killed/checkpoints/step-6");
  std::filesystem::remove_all(dir / "killed/final");
  TrainOptions resumed = o;
  resumed.out = dir / "killed";
  resumed.resume = true;
  train(resumed, make_watch_hooks(resumed));
  EXPECT_EQ(rows_without_seconds(dir / "killed/watch.csv"), rows_without_seconds(dir / "whole/watch.csv"));
  EXPECT_EQ(read_file(dir / "killed/final/model.safetensors"), read_file(dir / "whole/final/model.safetensors"));
}

// --keep-best target: best/ is the step with the highest watched target score, a loadable
// Hugging Face folder with best.json saying why.
TEST(Watch, KeepBestWritesTheChosenStep) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  Suites s = write_suites(dir);
  TrainOptions o = options(dir, s, dir / "run");
  o.keep_best = "target";
  train(o, make_watch_hooks(o));
  auto rows = read_watch_csv(dir / "run/watch.csv", 1 << 30);
  auto chosen = choose_best(rows, "target", 0);
  if (!chosen) GTEST_FAIL() << "no best step chosen";
  json why = read_json_file(dir / "run/best/best.json");
  EXPECT_EQ(why["step"], rows[chosen->index].step);
  EXPECT_EQ(why["rule"], "target");
  EXPECT_EQ(std::optional<double>(why["target"].get<double>()), rows[chosen->index].score.target);
  load_llama(dir / "run/best");
  // The best step's weights are that step's checkpoint's.
  auto best = read_safetensors(dir / "run/best/model.safetensors");
  auto ckpt = read_safetensors(RunFolder{dir / "run"}.checkpoint_dir(rows[chosen->index].step) + "/model.safetensors");
  ASSERT_EQ(best.size(), ckpt.size());
  for (size_t i = 0; i < best.size(); ++i) EXPECT_TRUE(torch::equal(best[i].second, ckpt[i].second)) << best[i].first;
}

TEST(Watch, BestRuleOnAHandMadeHistory) {
  auto row = [](int64_t step, double overall, double target) {
    WatchRow r;
    r.step = step;
    r.score.overall = overall;
    r.score.target = target;
    return r;
  };
  // step: overall, target -> forgetting (0.50 - overall), gain (target - 0.10)
  std::vector<WatchRow> rows;
  const WatchRow first = make_watch_row(0, row(0, 0.50, 0.10).score, 0, nullptr);
  rows.push_back(first);
  for (auto [step, overall, target] :
       std::vector<std::tuple<int64_t, double, double>>{{10, 0.49, 0.20},   // forgetting 0.01, gain 0.10
                                                        {20, 0.47, 0.35},   // 0.03, 0.25
                                                        {30, 0.495, 0.15},  // 0.005, 0.05
                                                        {40, 0.44, 0.40},   // 0.06, 0.30
                                                        {50, 0.48, 0.30}})  // 0.02, 0.20
    rows.push_back(make_watch_row(step, row(step, overall, target).score, 0, &rows.front()));
  EXPECT_NEAR(rows[4].forgetting, 0.06, 1e-12);
  EXPECT_NEAR(rows[4].target_gain, 0.30, 1e-12);
  auto step_of = [&](const std::string& rule, double max_forgetting) {
    auto c = choose_best(rows, rule, max_forgetting);
    return c ? rows[c->index].step : -1;
  };
  EXPECT_EQ(step_of("forgetting", 0), 30);    // least forgetting after step 0 (step 0 itself never counts)
  EXPECT_EQ(step_of("target", 0), 40);        // highest target score
  EXPECT_EQ(step_of("tradeoff", 0.025), 50);  // gains 0.10, 0.05, 0.20 qualify: 0.20 at step 50
  EXPECT_EQ(step_of("tradeoff", 0.031), 20);  // now step 20 (0.25) qualifies too
  EXPECT_EQ(step_of("tradeoff", 0.001), -1);  // none does
  EXPECT_NE(choose_best(rows, "tradeoff", 0.025).value_or(BestChoice{}).why.find("at most 0.025"), std::string::npos);
  rows.push_back(make_watch_row(60, row(60, 0.495, 0.12).score, 0, &rows.front()));  // ties step 30's forgetting
  EXPECT_EQ(step_of("forgetting", 0), 30);                                           // ties go to the earlier step
  EXPECT_THROW(check_keep_best("best", true), Error);
  EXPECT_THROW(check_keep_best("target", false), Error);
}

// The CLI: flags, the watch's share of the time on the line it prints, and bad input.
TEST(Watch, CliWatchesAndRejectsBadInput) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  Suites s = write_suites(dir);
  const std::string common = "train --model '" + testdata("models/llama-gqa") + "' --data '" + write_sums(dir, 16) +
                             "' --batch-size 4 --max-steps 2 --threads 1 --out '";
  auto ok = run_flatune(common + (dir / "run") + "' --watch '" + s.knowledge + "' '" + s.reasoning +
                        "' --watch-categories '" + s.categories + "' --watch-every 1");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("watching took"), std::string::npos) << ok.output;
  EXPECT_EQ(read_watch_csv(dir / "run/watch.csv", 100).size(), 3u);
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--watch-every 2", "--watch: --watch-target, --watch-every and --keep-best need"},
           {"--watch '" + s.knowledge + "' --watch-categories '" + s.categories + "' --keep-best target",
            "--keep-best: target needs a target test"},
           {"--watch '" + s.knowledge + "' --watch-categories '" + s.categories + "' --keep-best most",
            "unknown rule 'most'"},
           {"--watch '" + (dir / "missing.jsonl") + "'", "missing.jsonl"},
           {"--watch '" + s.knowledge + "' --watch-categories '" + s.categories + "' --watch-batch-size -2",
            "--watch-batch-size: must be 0 (evaluation's default) or positive"},
           {"--watch '" + s.knowledge + "' --watch-categories '" + s.categories + "' --watch-max-new-tokens -1",
            "--watch-max-new-tokens: must be 0 (evaluation's default) or positive"},
           {"--watch '" + s.knowledge + "'", "no watched suite belongs to a category"}}) {
    auto r = run_flatune(common + (dir / "bad") + "' " + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  }
}
