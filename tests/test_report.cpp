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
#include "flatune/report/plot.h"
#include "flatune/report/run_table.h"
#include "flatune/report/stats.h"
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
        "runs/math__adamw__s1/flatness.json", "base/eval/knowledge.json"})
    EXPECT_TRUE(file_exists(dir / "study/" + f)) << f;
  std::string md = read_file(dir / "study/report.md");
  for (const char* s :
       {"## Forgetting per run", "| **overall** |", "## Against the baseline (adamw)", "Pearson", "## Findings"})
    EXPECT_NE(md.find(s), std::string::npos) << s;
  auto forgetting = read_json_file(dir / "study/forgetting.json");
  EXPECT_EQ(forgetting["tuned"].size(), 4u);
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
