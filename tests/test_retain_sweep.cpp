// The Wise-FT alpha sweep (report/wiseft_sweep.h): its alpha = 0 and alpha = 1 rows equal
// evaluating the base and the tuned model directly; categories, forgetting and target gain by
// hand; the CSV, JSON and figures written; alpha lists and bad input, in the library and the CLI.
#include <gtest/gtest.h>

#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/forgetting.h"
#include "flatune/io/checkpoint.h"
#include "flatune/model/llama.h"
#include "flatune/report/wiseft_sweep.h"
#include "flatune/text/tokenizer.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::run_flatune;
using flatune::testing::TempDir;
using flatune::testing::testdata;

namespace {

std::string write_mc_task(const std::string& path, int n, int offset) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    int a = (i * 3 + offset) % 10, b = (i * 7 + offset) % 10;
    json item = {
        {"id", std::to_string(i)},
        {"context", std::to_string(a) + " plus " + std::to_string(b) + " is"},
        {"choices", {" " + std::to_string(a + b), " " + std::to_string(a + b + 1), " " + std::to_string(a * b + 2)}},
        {"gold", i % 3},
        {"category", "sums"}};
    out += item.dump() + "\n";
  }
  write_file_atomic(path, out);
  return path;
}

std::map<std::string, double> scores_of(const std::string& model_dir, const std::vector<std::string>& tasks) {
  auto tok = load_tokenizer(model_dir);
  auto model = load_llama(model_dir);
  std::map<std::string, double> out;
  for (const auto& path : tasks) {
    Task task = read_task(path);
    json r = task_result_to_json(evaluate_task(model, *tok, task, EvalOptions{}));
    out[task.name] = r["metrics"][reported_metric(task.name, r)].get<double>();
  }
  return out;
}

}  // namespace

TEST(WiseFtSweep, EndRowsEqualEvaluatingBaseAndTuned) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string base_dir = testdata("models/llama-gqa");
  NamedTensors tuned;
  torch::manual_seed(9);
  for (const auto& [n, t] : load_checkpoint_weights(base_dir)) tuned.emplace_back(n, t + torch::randn_like(t) * 0.2);
  save_checkpoint(dir / "tuned", read_json_file(base_dir + "/config.json"), tuned, SaveOptions{}, base_dir);
  WiseFtSweepOptions o;
  o.base_dir = base_dir;
  o.tuned_dir = dir / "tuned";
  o.alphas = {1, 0.5};  // 0 is added
  // hellaswag_* falls in the paper's "reasoning" (scored by acc_norm); mytask in none, so it is
  // its own category (scored by acc).
  o.general_tasks = {write_mc_task(dir / "hellaswag_tiny.jsonl", 9, 1), write_mc_task(dir / "mytask.jsonl", 9, 4)};
  o.target_task = write_mc_task(dir / "target.jsonl", 9, 2);
  o.out_dir = dir / "sweep";
  WiseFtSweep s = run_wiseft_sweep(o);

  ASSERT_EQ(s.rows.size(), 3u);
  EXPECT_EQ(s.rows[0].alpha, 0);
  EXPECT_EQ(s.rows[1].alpha, 0.5);
  EXPECT_EQ(s.rows[2].alpha, 1);
  EXPECT_EQ(s.categories, (std::vector<std::string>{"reasoning", "mytask"}));
  EXPECT_EQ(s.task_metric.at("hellaswag_tiny"), "acc_norm");
  EXPECT_EQ(s.task_metric.at("mytask"), "acc");
  std::vector<std::string> all = o.general_tasks;
  all.push_back(o.target_task);
  auto base = scores_of(base_dir, all), tuned_scores = scores_of(dir / "tuned", all);
  for (const auto& [row, want] : {std::make_pair(&s.rows[0], &base), std::make_pair(&s.rows[2], &tuned_scores)}) {
    EXPECT_EQ(row->task_scores.at("hellaswag_tiny"), want->at("hellaswag_tiny")) << row->alpha;
    EXPECT_EQ(row->task_scores.at("mytask"), want->at("mytask")) << row->alpha;
    EXPECT_EQ(row->target, want->at("target")) << row->alpha;
    EXPECT_EQ(row->category_scores.at("reasoning"), want->at("hellaswag_tiny"));
    EXPECT_DOUBLE_EQ(row->general, (want->at("hellaswag_tiny") + want->at("mytask")) / 2);
  }
  const double g0 = (base.at("hellaswag_tiny") + base.at("mytask")) / 2;
  const double g1 = (tuned_scores.at("hellaswag_tiny") + tuned_scores.at("mytask")) / 2;
  EXPECT_EQ(s.rows[0].forgetting, 0);
  EXPECT_EQ(s.rows[0].target_gain, 0);
  EXPECT_DOUBLE_EQ(s.rows[2].forgetting, g0 - g1);
  EXPECT_DOUBLE_EQ(s.rows[2].target_gain, tuned_scores.at("target") - base.at("target"));
  // The noise is large enough that the tuned model scores differently somewhere.
  EXPECT_TRUE(g0 != g1 || base.at("target") != tuned_scores.at("target"));

  // Files: the table, the JSON, and non-empty figures.
  std::string csv = read_file(dir / "sweep/wiseft_sweep.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "alpha,reasoning,mytask,general,forgetting,target,target_gain");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
  json j = read_json_file(dir / "sweep/wiseft_sweep.json");
  ASSERT_EQ(j.at("rows").size(), 3u);
  EXPECT_EQ(j["rows"][2]["target"].get<double>(), tuned_scores.at("target"));
  EXPECT_EQ(j["tasks"]["mytask"]["category"], "mytask");
  std::string png = read_file(dir / "sweep/wiseft_sweep.png");
  ASSERT_GT(png.size(), 1000u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  std::string svg = read_file(dir / "sweep/wiseft_sweep.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_GT(svg.size(), 1000u);

  // The CLI verb runs the same function: the same table.
  auto r = run_flatune("wiseft-sweep --base '" + base_dir + "' --tuned '" + (dir / "tuned") +
                       "' --alphas 1,0.5 --tasks '" + o.general_tasks[0] + "' '" + o.general_tasks[1] + "' --target '" +
                       o.target_task + "' --threads 1 --out '" + (dir / "cli") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file(dir / "cli/wiseft_sweep.csv"), csv);
  EXPECT_TRUE(std::filesystem::exists(dir / "cli/wiseft_sweep.png"));
}

TEST(WiseFtSweep, AlphaListsAndBadInput) {
  EXPECT_EQ(parse_alpha_list("0, 0.25,0.5 ,1", "--alphas"), (std::vector<double>{0, 0.25, 0.5, 1}));
  for (const char* bad : {"0,,1", "0;1", "half", ""}) {
    try {
      parse_alpha_list(bad, "--alphas");
      FAIL() << bad;
    } catch (const Error& e) { EXPECT_EQ(e.where(), "--alphas") << bad; }
  }
  WiseFtSweepOptions o;
  o.base_dir = o.tuned_dir = "/nonexistent";
  o.general_tasks = {"/nonexistent/a.jsonl"};
  o.target_task = "/nonexistent/t.jsonl";
  o.alphas = {0.5, 1.2};
  try {
    run_wiseft_sweep(o);  // the alpha is refused before any file is read
    FAIL() << "no error";
  } catch (const Error& e) { EXPECT_EQ(e.where(), "--alphas") << e.what(); }
}

TEST(WiseFtSweep, CliRefusesAnAlphaOutsideTheUnitInterval) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  const std::string m = testdata("models/llama-gqa");
  auto r = run_flatune("wiseft-sweep --base '" + m + "' --tuned '" + m +
                       "' --alphas 0,2 --tasks a.jsonl --target t.jsonl --out '" + (dir / "sweep") + "'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(r.output.rfind("flatune: --alphas: each alpha must be in [0, 1]", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "sweep"));
}
