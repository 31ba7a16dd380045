// Report statistics against closed forms and hand computation; figures; the study end to end.
#include <gtest/gtest.h>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/io/safetensors.h"
#include "flatune/report/experiment.h"
#include "flatune/report/plot.h"
#include "flatune/report/run_table.h"
#include "flatune/report/stats.h"
#include "flatune/report/suite_health.h"
#include "flatune/report/watch_report.h"
#include "flatune/train/watch_history.h"
#include "test_util.h"

using namespace flatune;

extern char** environ;
using flatune::testing::run_flatune;
using flatune::testing::TempDir;

TEST(Stats, StudentTAgainstClosedForms) {
  // dof 1 (Cauchy): p = 1 - 2 atan(t) / pi; dof 2: p = 1 - t / sqrt(t^2 + 2).
  for (double t : {0.1, 0.8, 2.0, 7.5}) {
    EXPECT_NEAR(student_t_two_sided_p(t, 1), 1 - 2 * std::atan(t) / M_PI, 1e-12) << t;
    EXPECT_NEAR(student_t_two_sided_p(t, 2), 1 - t / std::sqrt(t * t + 2), 1e-12) << t;
  }
  EXPECT_DOUBLE_EQ(student_t_two_sided_p(0, 5), 1.0);
}

// Reference values from SciPy 1.17 (scipy.stats.t, scipy.stats.nct; the power and the minimum
// detectable effect by brentq on nct's tails): an implementation independent of ours.
TEST(Stats, TDistributionsConfidenceIntervalAndPowerAgainstScipy) {
  EXPECT_NEAR(student_t_quantile(0.975, 4), 2.7764451051977934, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.975, 9), 2.262157162798205, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.025, 4), -2.7764451051977934, 1e-9);
  EXPECT_NEAR(student_t_cdf(-1.3, 3), 0.14223375436394853, 1e-12);
  EXPECT_NEAR(noncentral_t_cdf(1.5, 4, 0.7), 0.7350601233028798, 1e-7);
  EXPECT_NEAR(noncentral_t_cdf(-2, 1, 0.5), 0.07457768951883127, 1e-7);
  EXPECT_NEAR(noncentral_t_cdf(2, 30, 1.0), 0.8295526728554211, 1e-7);
  // Central case: the noncentral CDF with ncp 0 is Student's.
  EXPECT_NEAR(noncentral_t_cdf(-1.3, 3, 0), student_t_cdf(-1.3, 3), 1e-8);
  auto ci = mean_confidence_interval({0.01, -0.02, 0.03, 0.015, 0.0});
  EXPECT_NEAR(ci.mean, 0.007, 1e-15);
  EXPECT_NEAR(ci.lo, -0.016062885164918075, 1e-10);
  EXPECT_NEAR(ci.hi, 0.030062885164918073, 1e-10);
  EXPECT_EQ(ci.n, 5);
  auto one = mean_confidence_interval({0.4});
  EXPECT_EQ(one.lo, one.hi);
  EXPECT_NEAR(paired_t_power(5, 1.0), 0.40138991737179536, 1e-6);
  EXPECT_NEAR(paired_t_power(10, 1.0), 0.8030968566327219, 1e-6);
  EXPECT_NEAR(paired_t_min_detectable_effect(5), 1.681996965955556, 1e-5);
  EXPECT_NEAR(paired_t_min_detectable_effect(3), 3.2640435496995703, 1e-5);
  EXPECT_NEAR(paired_t_min_detectable_effect(10), 0.9960013714554437, 1e-5);
  EXPECT_TRUE(std::isinf(paired_t_min_detectable_effect(1)));
  EXPECT_THROW(student_t_quantile(1.0, 3), Error);
}

TEST(Stats, PairedTTestByHand) {
  // d = (1, 2, 3): mean 2, sd 1, t = 2 sqrt(3), dof 2.
  auto r = paired_t_test({1, 2, 3}, {0, 0, 0});
  EXPECT_NEAR(r.statistic, 2 * std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(r.p_value, 1 - r.statistic / std::sqrt(r.statistic * r.statistic + 2), 1e-12);
  EXPECT_DOUBLE_EQ(mean_of({1, 2, 3, 6}), 3.0);
  EXPECT_NEAR(sample_std({1, 2, 3, 6}), std::sqrt(14.0 / 3), 1e-12);
}

TEST(Stats, PearsonAndSpearmanWithTies) {
  std::vector<double> x = {1, 2, 3, 4, 5}, y = {2, 4, 5, 4, 5};
  // sxy = 6, sxx = 10, syy = 6.
  auto p = pearson(x, y);
  EXPECT_NEAR(p.statistic, 6 / std::sqrt(60.0), 1e-12);
  double t = p.statistic * std::sqrt(3 / (1 - p.statistic * p.statistic));
  EXPECT_NEAR(p.p_value, student_t_two_sided_p(t, 3), 1e-12);
  EXPECT_GT(p.p_value, 0.12);
  EXPECT_LT(p.p_value, 0.13);
  // Ranks of y with ties: (1, 2.5, 4.5, 2.5, 4.5); against 1..5: sxy = 7, syy = 9.
  EXPECT_EQ(average_ranks(y), (std::vector<double>{1, 2.5, 4.5, 2.5, 4.5}));
  EXPECT_NEAR(spearman(x, y).statistic, 7 / std::sqrt(90.0), 1e-12);
  EXPECT_NEAR(pearson(x, {5, 4, 3, 2, 1}).statistic, -1.0, 1e-12);
}

TEST(Plot, WritesValidPngAndSvg) {
  TempDir dir;
  std::vector<double> a, l;
  for (int i = 0; i <= 20; ++i) {
    a.push_back(-1 + i * 0.1);
    l.push_back(a.back() * a.back());
  }
  plot_lines(dir / "c.png", "a parabola", "alpha", "loss",
             {{"x^2", a, l}, {"x^2/2", a, std::vector<double>(l.size(), 0.3)}});
  plot_lines(dir / "c.svg", "a parabola", "alpha", "loss", {{"x^2", a, l}});
  std::vector<std::vector<double>> z(5, std::vector<double>(5));
  std::vector<double> g = {-1, -0.5, 0, 0.5, 1};
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) z[i][j] = g[i] * g[i] + g[j] * g[j];
  plot_contour(dir / "s.png", "bowl", g, g, z);
  plot_scatter(dir / "p.png", "points", "x", "y", {1, 2, 3}, {3, 1, 2}, {"a", "b", "c"});
  for (const char* f : {"c.png", "s.png", "p.png"}) {
    std::string png = read_file(dir / f);
    ASSERT_GT(png.size(), 1000u) << f;
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << f;
  }
  std::string svg = read_file(dir / "c.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
}

namespace {

// The message of the Error `f` throws ("" when it throws none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) { return e.what(); }
  return "";
}

}  // namespace

TEST(RunTable, CsvLabelsRowsAndLeavesMissingCellsOut) {
  TempDir tmp;
  // A quoted label may hold a comma; a blank line is no run.
  write_file_atomic(tmp / "runs.csv", "lambda_max,run,forgetting\n1.5,a,0.25\nnan,b,n/a\n,c,NaN\n\n-2e-1,\"d,e\",3\n");
  RunTable t = read_runs_csv(tmp / "runs.csv");
  EXPECT_EQ(t.labels, (std::vector<std::string>{"a", "b", "c", "d,e"}));
  ASSERT_EQ(t.values.size(), 4u);
  EXPECT_EQ(t.values[0], (std::map<std::string, double>{{"lambda_max", 1.5}, {"forgetting", 0.25}}));
  EXPECT_TRUE(t.values[1].empty());
  EXPECT_TRUE(t.values[2].empty());
  EXPECT_EQ(t.values[3], (std::map<std::string, double>{{"lambda_max", -0.2}, {"forgetting", 3}}));

  // "name" labels rows as "run" does; without either, rows are numbered.
  write_file_atomic(tmp / "named.csv", "name,x\nfirst,1\n");
  EXPECT_EQ(read_runs_csv(tmp / "named.csv").labels, std::vector<std::string>{"first"});
  write_file_atomic(tmp / "unnamed.csv", "x,y\n1,2\n3,\n");
  RunTable u = read_runs_csv(tmp / "unnamed.csv");
  EXPECT_EQ(u.labels, (std::vector<std::string>{"row 1", "row 2"}));
  EXPECT_EQ(u.values[1], (std::map<std::string, double>{{"x", 3}}));

  write_file_atomic(tmp / "short.csv", "run,x,y\na,1,2\nb,2\n");
  EXPECT_NE(error_of([&] { read_runs_csv(tmp / "short.csv"); }).find("short.csv:3: 2 cells, the header has 3"),
            std::string::npos);
  write_file_atomic(tmp / "word.csv", "run,x\na,1x\n");
  EXPECT_NE(error_of([&] { read_runs_csv(tmp / "word.csv"); }).find("word.csv:2: column 'x': '1x' is not a number"),
            std::string::npos);
  write_file_atomic(tmp / "empty.csv", "");
  EXPECT_NE(error_of([&] { read_runs_csv(tmp / "empty.csv"); }).find("empty file"), std::string::npos);
}

TEST(RunTable, ExperimentFolderJoinsFlatnessSharpnessAndForgetting) {
  TempDir tmp;
  const std::string exp = tmp / "exp";
  // Non-numbers (a surface, the per-metric details) are not columns; a folder with neither
  // file is no run.
  make_dirs(exp + "/runs/b");
  make_dirs(exp + "/runs/a");
  make_dirs(exp + "/runs/unmeasured");
  const json flatness = {{"lambda_max", 1.0}, {"sam_sharpness", 0.5}, {"surface_target", {{"alphas", {0.0}}}}};
  write_file_atomic(exp + "/runs/a/flatness.json", flatness.dump());
  const json sharpness = {{"hessian_trace", 7.0}, {"metrics", {{"trace", {{"value", 7.0}}}}}};
  write_file_atomic(exp + "/runs/a/sharpness.json", sharpness.dump());
  write_file_atomic(exp + "/runs/b/sharpness.json", json({{"lambda_max", 2.0}}).dump());
  // delta = tuned - before, so forgetting = -delta; a run's target gain is its first finite
  // delta among the target rows (null: another target's column).
  const json target_rows = json::array({{{"delta", {0.3, nullptr}}}, {{"delta", {0.9, 0.4}}}});
  const json forgetting = {{"tuned", {"a", "b"}}, {"overall", {{"delta", {-0.1, 0.2}}}}, {"targets", target_rows}};
  write_file_atomic(exp + "/forgetting.json", forgetting.dump());
  for (const std::string& source : {exp, exp + "/runs"}) {
    RunTable t = read_runs_folder(source);
    EXPECT_EQ(t.labels, (std::vector<std::string>{"a", "b"})) << source;
    ASSERT_EQ(t.values.size(), 2u);
    EXPECT_EQ(t.values[0], (std::map<std::string, double>{{"lambda_max", 1.0},
                                                          {"sam_sharpness", 0.5},
                                                          {"hessian_trace", 7.0},
                                                          {"forgetting", 0.1},
                                                          {"target_gain", 0.3}}))
        << source;
    EXPECT_EQ(t.values[1],
              (std::map<std::string, double>{{"lambda_max", 2.0}, {"forgetting", -0.2}, {"target_gain", 0.4}}))
        << source;
  }
  // read_runs tells a folder from a CSV file.
  EXPECT_EQ(read_runs(exp).labels.size(), 2u);
  EXPECT_NE(error_of([&] { read_runs(tmp / "missing.csv"); }).find("no such file or folder"), std::string::npos);
  make_dirs(tmp / "bare/runs/x");
  EXPECT_NE(error_of([&] { read_runs_folder(tmp / "bare"); }).find("no run folder with flatness.json"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_runs_folder(tmp / "bare/runs/x"); }).find("neither an experiment folder"),
            std::string::npos);
}

TEST(Study, QuickDemoRunsEndToEndAndResumes) {
  if (!file_exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "wordnet-base not installed";
  TempDir dir;
  auto r =
      run_flatune("demo --preset quick --threads 1 --out '" + (dir / "study") + "' --cache '" + (dir / "cache") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f :
       {"report.md", "report.html", "forgetting.md", "forgetting.json", "grid.yaml", "figures/surface_target.png",
        "figures/interpolation_target.png", "figures/sharpness_vs_forgetting.png", "runs/math__sam__s2/DONE",
        "runs/math__adamw__s1/flatness.json", "base/eval/knowledge.json", "runs/math__adamw__s1/watch.csv",
        "figures/watch_math/tradeoff.png"})
    EXPECT_TRUE(file_exists(dir / "study/" + f)) << f;
  std::string md = read_file(dir / "study/report.md");
  for (const char* s : {"## Forgetting per run", "| **overall** |", "## The suites: can they show forgetting?",
                        "## Effect on forgetting, paired by seed", "| math | equal steps | sam | adamw | 2 |",
                        "| math | compute-matched (1 SAM epoch vs 2 AdamW epochs) | sam | adamw-2x | 2 |", "Pearson",
                        "## Forgetting at matched target gain", "## Findings"})
    EXPECT_NE(md.find(s), std::string::npos) << s;
  auto forgetting = read_json_file(dir / "study/forgetting.json");
  EXPECT_EQ(forgetting["tuned"].size(), 6u);  // adamw, sam, adamw-2x x 2 seeds
  // Every run starts from the before model: the first run scores step 0, the others reuse it.
  const auto first = read_watch_csv(dir / "study/runs/math__adamw__s1/watch.csv", 0);
  const auto later = read_watch_csv(dir / "study/runs/math__sam__s2/watch.csv", 0);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].score.overall, first[0].score.overall);
  EXPECT_EQ(later[0].score.target, first[0].score.target);
  EXPECT_EQ(later[0].score.columns, first[0].score.columns);
  // A second invocation finds every run done and rebuilds the same report numbers.
  auto again =
      run_flatune("demo --preset quick --threads 1 --out '" + (dir / "study") + "' --cache '" + (dir / "cache") + "'");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(read_json_file(dir / "study/forgetting.json"), forgetting);
  // An interrupted run (its DONE and evaluation gone, checkpoints kept) resumes to the same numbers.
  std::filesystem::remove(dir / "study/runs/math__sam__s1/DONE");
  std::filesystem::remove_all(dir / "study/runs/math__sam__s1/eval");
  auto resumed =
      run_flatune("demo --preset quick --threads 1 --out '" + (dir / "study") + "' --cache '" + (dir / "cache") + "'");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(read_json_file(dir / "study/forgetting.json"), forgetting);

  // Killed for real (SIGKILL) while the third run trains, then started again: the same numbers
  // as the uninterrupted study (the before model comes from the shared cache).
  const std::string killed = dir / "killed";
  std::vector<std::string> args = {FLATUNE_BINARY, "demo", "--preset", "quick",      "--threads", "1",
                                   "--out",        killed, "--cache",  dir / "cache"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  const std::string third = killed + "/runs/math__sam__s1/checkpoints";
  for (int i = 0; i < 12000 && !(std::filesystem::exists(third) && !std::filesystem::is_empty(third)); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the study finished before it could be killed";
  EXPECT_FALSE(file_exists(killed + "/runs/math__sam__s1/DONE"));
  auto restarted =
      run_flatune("demo --preset quick --threads 1 --out '" + killed + "' --cache '" + (dir / "cache") + "'");
  ASSERT_EQ(restarted.exit_code, 0) << restarted.output;
  auto after_kill = read_json_file(killed + "/forgetting.json");
  for (const char* key : {"categories", "overall", "targets", "tasks"})
    EXPECT_EQ(after_kill[key], forgetting[key]) << key;
}

// ------------------------------------------------------------------ watch.csv (train --watch)

namespace {

// A curve from (target_gain, forgetting) points at steps 0, 10, 20, ...
WatchCurve curve(const std::string& run, const std::vector<double>& gain, const std::vector<double>& forgetting) {
  WatchCurve c;
  c.run = run;
  for (size_t i = 0; i < gain.size(); ++i) {
    c.step.push_back(static_cast<int64_t>(10 * i));
    c.overall.push_back(0.5 - forgetting[i]);
    c.target.push_back(0.2 + gain[i]);
    c.forgetting.push_back(forgetting[i]);
    c.target_gain.push_back(gain[i]);
  }
  return c;
}

// A run whose gain and forgetting both grow linearly to (final_gain, final_forgetting).
WatchCurve linear_run(const std::string& run, double final_gain, double final_forgetting) {
  return curve(run, {0, final_gain / 2, final_gain}, {0, final_forgetting / 2, final_forgetting});
}

std::string g17(double x) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", x);
  return b;
}

const char* kWatchHeader = "step,overall,target,forgetting,target_gain,watch_seconds,category:knowledge,task:arc\n";

// A watch.csv as train --watch writes it, for `gains` (empty: no target test).
std::string watch_csv(const std::vector<double>& forgetting, const std::vector<double>& gains) {
  std::string s = kWatchHeader;
  for (size_t i = 0; i < forgetting.size(); ++i) {
    const double overall = 0.5 - forgetting[i];
    s += std::to_string(100 * i) + "," + g17(overall) + "," + (gains.empty() ? "" : g17(0.2 + gains[i])) + "," +
         g17(forgetting[i]) + "," + (gains.empty() ? "" : g17(gains[i])) + ",1.5," + g17(overall) + "," + g17(overall) +
         "\n";
  }
  return s;
}

}  // namespace

TEST(WatchReport, ForgettingAtGainByHand) {
  // The gain rises to 0.5, falls back to 0.4 and rises again to 0.8.
  WatchCurve c = curve("r", {0, 0.2, 0.5, 0.4, 0.8}, {0, 0.01, 0.04, 0.05, 0.10});
  EXPECT_DOUBLE_EQ(forgetting_at_gain(c, 0.2), 0.01);      // a watched step hits it exactly
  EXPECT_NEAR(forgetting_at_gain(c, 0.35), 0.025, 1e-15);  // halfway from 0.2 to 0.5: 0.01 + 0.5 * 0.03
  // 0.45 is first reached between 0.2 and 0.5 (0.01 + 0.25/0.3 * 0.03 = 0.035), not on the
  // second rise from 0.4 to 0.8 (which would give 0.05625).
  EXPECT_NEAR(forgetting_at_gain(c, 0.45), 0.035, 1e-15);
  EXPECT_NEAR(forgetting_at_gain(c, 0.6), 0.05 + 0.5 * 0.05, 1e-15);  // only the second rise reaches it
  EXPECT_DOUBLE_EQ(forgetting_at_gain(c, 0.8), 0.10);
  EXPECT_DOUBLE_EQ(forgetting_at_gain(c, 0.0), 0.0);  // step 0 already reaches it
  EXPECT_DOUBLE_EQ(forgetting_at_gain(c, -1.0), 0.0);
  EXPECT_TRUE(std::isnan(forgetting_at_gain(c, 0.81)));  // never reached
  WatchCurve none = c;
  std::fill(none.target.begin(), none.target.end(), NAN);
  std::fill(none.target_gain.begin(), none.target_gain.end(), NAN);
  EXPECT_FALSE(none.has_target());
  EXPECT_TRUE(c.has_target());
  for (double g : {-1.0, 0.0, 0.3}) EXPECT_TRUE(std::isnan(forgetting_at_gain(none, g))) << g;
}

TEST(WatchReport, MatchedGainMeanAndStdByHand) {
  // Forgetting grows in proportion to gain, with slopes 0.1, 0.2, 0.1 (adamw) and 0.05, 0.04,
  // 0.05 (sam); the smallest final gain is 0.4, so the gains are 0.1, 0.2, 0.3, 0.4 and at gain
  // g adamw's mean is g * 0.4/3, its std g * 0.1/sqrt(3); sam's g * 0.14/3 and g * 0.01/sqrt(3).
  std::vector<MethodCurves> methods = {
      {"adamw", {linear_run("a1", 0.4, 0.04), linear_run("a2", 0.5, 0.10), linear_run("a3", 0.8, 0.08)}},
      {"sam", {linear_run("s1", 0.6, 0.03), linear_run("s2", 0.5, 0.02), linear_run("s3", 1.0, 0.05)}}};
  const std::vector<double> gains = matched_gains(methods);
  ASSERT_EQ(gains.size(), 4u);
  for (size_t k = 0; k < 4; ++k) EXPECT_NEAR(gains[k], 0.1 * (k + 1), 1e-15) << k;
  const auto rows = matched_gain_table(methods);
  ASSERT_EQ(rows.size(), 8u);
  for (size_t k = 0; k < 8; ++k) {
    const double g = gains[k % 4];
    const bool adamw = k < 4;
    EXPECT_EQ(rows[k].method, adamw ? "adamw" : "sam");
    EXPECT_DOUBLE_EQ(rows[k].gain, g);
    EXPECT_EQ(rows[k].n, 3);
    EXPECT_NEAR(rows[k].mean, g * (adamw ? 0.4 : 0.14) / 3, 1e-14) << k;
    EXPECT_NEAR(rows[k].std, g * (adamw ? 0.1 : 0.01) / std::sqrt(3.0), 1e-14) << k;
  }
  // At gain 0.45 adamw's first seed (final gain 0.4) is left out: 0.09 and 0.045 remain.
  const auto high = matched_gain_table(methods, {0.45, 2.0});
  ASSERT_EQ(high.size(), 4u);
  EXPECT_EQ(high[0].n, 2);
  EXPECT_NEAR(high[0].mean, 0.0675, 1e-15);
  EXPECT_NEAR(high[0].std, 0.045 / std::sqrt(2.0), 1e-15);
  EXPECT_EQ(high[2].n, 3);  // every sam seed reaches 0.45
  EXPECT_EQ(high[1].n, 0);  // nobody reaches 2.0
  EXPECT_TRUE(std::isnan(high[1].mean));
  const std::string md = matched_gain_markdown(high);
  EXPECT_NE(md.find("| adamw | 0.4500 | 2 | 0.0675 ± 0.0318 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| adamw | 2.0000 | 0 | n/a |"), std::string::npos) << md;
  EXPECT_NE(matched_gain_markdown(rows).find("| adamw | 0.1000 | 3 | 0.0133 ± 0.0058 |"), std::string::npos);
  // No gain to match when some run lost on its target, or no run has one.
  methods[1].runs[0] = linear_run("s1", -0.1, 0.03);
  EXPECT_TRUE(matched_gains(methods).empty());
  EXPECT_TRUE(matched_gains({{"x", {curve("n", {NAN, NAN}, {0, 0.1})}}}).empty());
}

TEST(WatchReport, ReadsWatchCsvExactlyAndNamesFileAndLineOfErrors) {
  TempDir tmp;
  make_dirs(tmp / "run-a");
  const std::vector<double> f = {0, 0.1 + 0.2, 1.0 / 3, 5e-320}, g = {0, 1.0 / 7, 0.25, 2.0 / 3};
  write_file_atomic(tmp / "run-a/watch.csv", watch_csv(f, g));
  for (const std::string& source : {tmp / "run-a", tmp / "run-a/", tmp / "run-a/watch.csv"}) {
    WatchCurve c = read_watch_csv(source);
    EXPECT_EQ(c.run, "run-a") << source;
    EXPECT_EQ(c.step, (std::vector<int64_t>{0, 100, 200, 300}));
    EXPECT_EQ(c.forgetting, f);  // %.17g gives back the same doubles
    EXPECT_EQ(c.target_gain, g);
    ASSERT_EQ(c.overall.size(), 4u);
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(c.overall[i], 0.5 - f[i]);
      EXPECT_EQ(c.target[i], 0.2 + g[i]);
    }
  }
  EXPECT_EQ(read_watch_csv(tmp / "run-a", "mine").run, "mine");
  // Without a target test its cells are empty.
  make_dirs(tmp / "nt");
  write_file_atomic(tmp / "nt/watch.csv", watch_csv({0, 0.1}, {}));
  WatchCurve nt = read_watch_csv(tmp / "nt");
  EXPECT_FALSE(nt.has_target());
  EXPECT_TRUE(std::isnan(nt.target[1]) && std::isnan(nt.target_gain[1]));
  EXPECT_DOUBLE_EQ(nt.forgetting[1], 0.1);

  auto error_for = [&](const std::string& text) {
    write_file_atomic(tmp / "bad/watch.csv", text);
    return error_of([&] { read_watch_csv(tmp / "bad"); });
  };
  make_dirs(tmp / "bad");
  const std::string file = tmp / "bad/watch.csv";
  const std::string h = kWatchHeader;
  EXPECT_EQ(error_for(h + "0,0.5,,0,,1,0.5,0.5\n10,0.5,,0,,1,0.5\n"), file + ":3: 7 cells, the header has 8");
  EXPECT_EQ(error_for(h + "0,abc,,0,,1,0.5,0.5\n"), file + ":2: column 'overall': 'abc' is not a number");
  EXPECT_EQ(error_for(h + "0,0.5,,0,,1,0.5,0.5x\n"), file + ":2: column 'task:arc': '0.5x' is not a number");
  EXPECT_EQ(error_for(h + "0,,,0,,1,0.5,0.5\n"), file + ":2: column 'overall': '' is not a number");
  EXPECT_EQ(error_for(h + "1.5,0.5,,0,,1,0.5,0.5\n"), file + ":2: step '1.5' is not a whole number >= 0");
  EXPECT_EQ(error_for(h + "10,0.5,,0,,1,0.5,0.5\n\n10,0.5,,0,,1,0.5,0.5\n"),
            file + ":4: step 10 does not come after step 10");
  EXPECT_EQ(error_for("step,overall,target,forgetting\n0,1,2,3\n"),
            file + ":1: no column 'target_gain' (not a watch.csv?)");
  EXPECT_EQ(error_for(h), file + ": no watched step (only the header)");
  EXPECT_EQ(error_for(""), file + ": empty file");
  EXPECT_EQ(error_of([&] { read_watch_csv(tmp / "nt-missing"); }), (tmp / "nt-missing/watch.csv") + ": no such file");
  EXPECT_EQ(error_of([&] { read_watch_csv(tmp / "run-a/other.csv"); }), (tmp / "run-a/other.csv") + ": no such file");
  make_dirs(tmp / "plain");
  EXPECT_EQ(error_of([&] { read_watch_csv(tmp / "plain"); }),
            (tmp / "plain/watch.csv") + ": no such file (was the run trained with --watch?)");
}

TEST(WatchReport, PlotWatchWritesFiguresAndTheMatchedGainTable) {
  TempDir tmp;
  make_dirs(tmp / "runs/adamw");
  make_dirs(tmp / "runs/sam");
  write_file_atomic(tmp / "runs/adamw/watch.csv", watch_csv({0, 0.02, 0.05, 0.08}, {0, 0.1, 0.2, 0.3}));
  write_file_atomic(tmp / "runs/sam/watch.csv", watch_csv({0, 0.01, 0.02, 0.03}, {0, 0.05, 0.15, 0.25}));
  auto r = run_flatune("plot-watch '" + (tmp / "runs/adamw") + "' '" + (tmp / "runs/sam") + "' --out '" +
                       (tmp / "figs") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"forgetting_curve_adamw", "forgetting_curve_sam", "tradeoff"}) {
    const std::string png = read_file(tmp / "figs/" + f + ".png"), svg = read_file(tmp / "figs/" + f + ".svg");
    EXPECT_GT(png.size(), 1000u) << f;
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << f;
    EXPECT_NE(svg.find("<svg"), std::string::npos) << f;
    EXPECT_NE(r.output.find(tmp / "figs/" + f + ".png"), std::string::npos) << r.output;
  }
  // The smallest final gain is sam's 0.25: at it adamw forgot 0.05 + 0.5 * 0.03.
  EXPECT_NE(r.output.find("| adamw | 0.2500 | 1 | 0.0650 ± 0.0000 |"), std::string::npos) << r.output;
  EXPECT_NE(read_file(tmp / "figs/matched_gain.md").find("| sam | 0.2500 | 1 | 0.0300 ± 0.0000 |"), std::string::npos);

  // Seeds grouped by --method; one run defaults --out to its own folder.
  auto grouped = run_flatune("plot-watch --method 'm=" + (tmp / "runs/adamw") + "' --method 'm=" + (tmp / "runs/sam") +
                             "' --out '" + (tmp / "g") + "'");
  ASSERT_EQ(grouped.exit_code, 0) << grouped.output;
  EXPECT_NE(grouped.output.find("| m | 0.2500 | 2 | 0.0475 ± "), std::string::npos) << grouped.output;
  auto one = run_flatune("plot-watch '" + (tmp / "runs/sam") + "'");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_TRUE(file_exists(tmp / "runs/sam/forgetting_curve.png"));
  EXPECT_TRUE(file_exists(tmp / "runs/sam/forgetting_curve.svg"));
  EXPECT_TRUE(file_exists(tmp / "runs/sam/tradeoff.svg"));

  // A run without watch.csv: one line naming the file, exit code 2.
  make_dirs(tmp / "runs/plain");
  auto missing =
      run_flatune("plot-watch '" + (tmp / "runs/plain") + "' '" + (tmp / "runs/sam") + "' --out '" + (tmp / "x") + "'");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(missing.output,
            "flatune: " + (tmp / "runs/plain/watch.csv") + ": no such file (was the run trained with --watch?)\n");
  auto no_out = run_flatune("plot-watch '" + (tmp / "runs/adamw") + "' '" + (tmp / "runs/sam") + "'");
  EXPECT_EQ(no_out.exit_code, 2);
  EXPECT_EQ(no_out.output, "flatune: --out: required with several runs\n");
}

// Grid files: a misspelt section and a value of the wrong shape are errors naming the file, the
// line and the key (a misspelt section used to be ignored).
TEST(Grid, ErrorsNameFileLineAndKey) {
  const std::string good = "before: m\ntargets: [{name: t, data: d.json}]\nmethods: [{name: adamw}]\n";
  EXPECT_NO_THROW(grid_from_yaml_text(good, "/x/grid.yaml"));
  for (const auto& [text, needle] : std::vector<std::pair<std::string, std::string>>{
           {good + "seed: [1, 2]\n", "/x/grid.yaml: line 4: key 'seed': not a grid section"},
           {good + "seeds: [one]\n", "/x/grid.yaml: line 4: key 'seeds': "},
           {good + "flatness: {batches: many}\n", "/x/grid.yaml: line 4: key 'flatness': "},
           {good + "eval:\n  max-new-token: 3\n",
            "/x/grid.yaml: line 5: key 'eval: max-new-token': not an eval setting"}}) {
    try {
      grid_from_yaml_text(text, "/x/grid.yaml");
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) { EXPECT_EQ(std::string(e.what()).rfind(needle, 0), 0u) << e.what(); }
  }
}

namespace {
// One model's evaluation of a task as `flatune eval` writes it: the result and per-item predictions.
void write_eval(const std::string& dir, const std::string& task, double acc, const std::vector<int>& preds) {
  make_dirs(join_path(dir, "eval"));
  json result = {{"task", task}, {"kind", "multiple_choice"}, {"n", preds.size()}, {"metrics", {{"acc", acc}}}};
  write_file_atomic(join_path(dir, "eval/" + task + ".json"), result.dump());
  std::string items;
  for (size_t i = 0; i < preds.size(); ++i)
    items += json{{"id", "i" + std::to_string(i)}, {"pred_acc", preds[i]}, {"gold", 0}}.dump() + "\n";
  write_file_atomic(join_path(dir, "eval/" + task + ".items.jsonl"), items);
}
}  // namespace

// Suite health on hand-made evaluations: ten two-choice items ("no", "yes" in that order, so a
// prediction of 0 is the answer "no"), then four-choice items whose texts move around.
TEST(SuiteHealth, FlagsOneAnswerSuitesUnchangingScoresAndChance) {
  TempDir tmp;
  std::string yesno, mc;
  for (int i = 0; i < 10; ++i) {
    yesno +=
        json{{"id", "i" + std::to_string(i)}, {"context", "q"}, {"choices", {"no", "yes"}}, {"gold", i % 2}}.dump() +
        "\n";
    // The answer "cat" sits at position i % 4: a model always answering "cat" predicts i % 4.
    std::vector<std::string> choices = {"a", "b", "c", "d"};
    choices[i % 4] = "cat";
    mc += json{{"id", "i" + std::to_string(i)}, {"context", "q"}, {"choices", choices}, {"gold", 0}}.dump() + "\n";
  }
  write_file_atomic(tmp / "yesno.jsonl", yesno);
  write_file_atomic(tmp / "animals.jsonl", mc);
  const std::string before = tmp / "before", r1 = tmp / "r1", r2 = tmp / "r2";
  // yesno: the before model says "no" to 9 of 10 (not above 0.9), run r1 to all 10; every score 0.5.
  write_eval(before, "yesno", 0.5, {0, 0, 0, 0, 0, 0, 0, 0, 0, 1});
  write_eval(r1, "yesno", 0.5, std::vector<int>(10, 0));
  write_eval(r2, "yesno", 0.5, {0, 1, 0, 1, 0, 1, 0, 1, 0, 1});
  // animals: before answers "cat" everywhere (positions differ, the text does not); runs vary.
  std::vector<int> cat;
  for (int i = 0; i < 10; ++i) cat.push_back(i % 4);
  write_eval(before, "animals", 0.9, cat);
  write_eval(r1, "animals", 0.8, {0, 0, 0, 0, 0, 0, 0, 0, 1, 2});
  write_eval(r2, "animals", 0.7, {3, 2, 1, 0, 3, 2, 1, 0, 3, 2});
  auto rows = suite_health({tmp / "yesno.jsonl", tmp / "animals.jsonl"}, before, {{"r1", r1}, {"r2", r2}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].task, "yesno");
  EXPECT_EQ(rows[0].items, 10);
  EXPECT_DOUBLE_EQ(rows[0].chance, 0.5);
  EXPECT_DOUBLE_EQ(rows[0].before_majority, 0.9);
  EXPECT_DOUBLE_EQ(rows[0].worst_majority, 1.0);
  EXPECT_EQ(rows[0].worst_run, "r1");
  EXPECT_TRUE(rows[0].same_in_every_run);
  // One answer in r1, unchanging score, near chance; the before model's 90% is not over the limit.
  ASSERT_EQ(rows[0].flags.size(), 3u);
  EXPECT_NE(rows[0].flags[0].find("r1 gives one answer to 100%"), std::string::npos);
  EXPECT_DOUBLE_EQ(rows[1].chance, 0.25);
  EXPECT_DOUBLE_EQ(rows[1].before_majority, 1.0);  // "cat" at four different positions
  EXPECT_FALSE(rows[1].same_in_every_run);
  ASSERT_EQ(rows[1].flags.size(), 1u);
  EXPECT_NE(rows[1].flags[0].find("the before model gives one answer to 100%"), std::string::npos);
  const std::string md = suite_health_markdown(rows);
  EXPECT_NE(md.find("| yesno | 10 | 0.500 | 0.5000 | 0.900 | 1.000 (r1) |"), std::string::npos) << md;
  // A run without the suite's evaluation is an error naming the file.
  try {
    suite_health({tmp / "yesno.jsonl"}, before, {{"r3", tmp / "r3"}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("r3/eval/yesno.json"), std::string::npos) << e.what();
  }
}

TEST(Grid, ComparisonsDefaultToEqualStepsAgainstTheFirstMethod) {
  const std::string base =
      "before: m\ntargets: [{name: t, data: d.json}]\nmethods: [{name: adamw}, {name: sam, sam: sam}, "
      "{name: adamw-2x, epochs: 2}]\n";
  Grid g = grid_from_yaml_text(base, "/x/grid.yaml");
  ASSERT_EQ(g.comparisons.size(), 2u);
  EXPECT_EQ(g.comparisons[1].method, "adamw-2x");
  EXPECT_EQ(g.comparisons[1].against, "adamw");
  EXPECT_EQ(g.comparisons[1].design, "equal steps");
  g = grid_from_yaml_text(base + "comparisons: [{method: sam, against: adamw-2x, design: compute-matched}]\n",
                          "/x/grid.yaml");
  ASSERT_EQ(g.comparisons.size(), 1u);
  EXPECT_EQ(g.comparisons[0].design, "compute-matched");
  EXPECT_THROW(grid_from_yaml_text(base + "comparisons: [{method: sgd, against: adamw}]\n", "/x/grid.yaml"), Error);
  EXPECT_THROW(grid_from_yaml_text(base + "eval: {batch-size: 0}\n", "/x/grid.yaml"), Error);
}

// A method's rho given for another model's weight norm runs at rho * ||before|| / that norm:
// the run's config holds the scaled rho, against ||w|| summed here from the file in float64.
TEST(Grid, RhoReferenceNormScalesRhoByTheBeforeWeightNorm) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa/config.json");
  const std::string before = flatune::testing::testdata("models/llama-gqa");
  const std::string methods = "before: m\ntargets: [{name: t, data: d.json}]\nmethods: [";
  for (const char* bad : {"{name: s, sam: sam, rho: 2, rho-reference-norm: 0}", "{name: s, rho-reference-norm: 50}"})
    EXPECT_THROW(grid_from_yaml_text(methods + bad + "]\n", "/x/grid.yaml"), Error) << bad;

  TempDir dir;
  flatune::testing::write_sums_alpaca(dir / "sums.json", 8);
  std::string text;
  for (int i = 0; i < 150; ++i) text += "word" + std::to_string(i) + " and more text here. ";
  write_file_atomic(dir / "text.txt", text);
  write_file_atomic(dir / "grid.yaml", "before: " + before +
                                           "\ntargets: [{name: t, data: sums.json, format: alpaca}]\n"
                                           "methods: [{name: s, sam: sam, rho: 2, rho-reference-norm: 50}]\n"
                                           "seeds: [1]\ntrain: {max-steps: 1, batch-size: 2, max-length: 128}\n"
                                           "flatness: {batches: 1, points: 3, lambda-iters: 1}\n"
                                           "eval: {perplexity: [text.txt]}\n");
  auto r = run_flatune("experiment --threads 1 --grid '" + (dir / "grid.yaml") + "' --out '" + (dir / "exp") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  double sum = 0;
  for (const auto& [name, t] : read_safetensors(before + "/model.safetensors"))
    sum += t.to(torch::kDouble).pow(2).sum().item<double>();
  const double want = 2 * std::sqrt(sum) / 50;
  const std::string config = read_file(dir / "exp/runs/t__s__s1/config.yaml");
  const auto at = config.find("\nrho: ");
  ASSERT_NE(at, std::string::npos) << config;
  EXPECT_NEAR(std::stod(config.substr(at + 6)), want, 1e-12 * want);
  EXPECT_NE(read_file(dir / "exp/report.md").find("rho used: "), std::string::npos);
}
