// Evaluation scored as lm-evaluation-harness scores it, against brute force and hand-worked values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/forgetting.h"
#include "flatune/eval/loglik.h"
#include "flatune/model/generate.h"
#include "flatune/text/tokenizer.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::TempDir;
using flatune::testing::testdata;

namespace {
std::vector<int64_t> enc(const Tokenizer& t, const std::string& s, bool special = false) {
  auto v = t.encode(s, special);
  return std::vector<int64_t>(v.begin(), v.end());
}
}  // namespace

TEST(EncodePair, TrailingSpacesMoveToTheContinuation) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/llama3");
  auto tok = load_tokenizer(testdata("tokenizers/llama3"));
  // "The answer is " + "4" is scored as "The answer is" + " 4"; the context carries what the
  // tokenizer adds by default, as lm-eval 0.4.13 encodes it (add_bos_token None: the tokenizer
  // decides; this early Llama 3 tokenizer.json adds nothing, the Llama 2 style one below BOS).
  auto p = encode_pair(*tok, "The answer is ", "4");
  EXPECT_EQ(p.context, enc(*tok, "The answer is", true));
  EXPECT_EQ(p.continuation, enc(*tok, " 4"));
  // Two trailing spaces: both move.
  auto q = encode_pair(*tok, "Answer:  ", "yes");
  EXPECT_EQ(q.context, enc(*tok, "Answer:", true));
  std::vector<int32_t> cont(q.continuation.begin(), q.continuation.end());
  EXPECT_EQ(tok->decode(cont), "  yes");
  // Empty context: the prefix token (BOS) stands for it; the continuation is encoded alone.
  auto e = encode_pair(*tok, "", " hello");
  EXPECT_EQ(e.context, (std::vector<int64_t>{128000}));
  EXPECT_EQ(e.continuation, enc(*tok, " hello"));
  // ... unless the continuation starts with the BOS token itself: then that is the context.
  auto b = encode_pair(*tok, "", "<|begin_of_text|>hello");
  EXPECT_EQ(b.context, (std::vector<int64_t>{128000}));
  EXPECT_EQ(b.continuation, enc(*tok, "hello"));
}

TEST(EncodePair, ContinuationIsTheWholeMinusTheContext) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/spm-bpe-32k");
  auto tok = load_tokenizer(testdata("tokenizers/spm-bpe-32k"));
  // SentencePiece-style: " world" alone would start with a lone "▁"; inside "Hello world" it
  // is one "▁world" piece, and that is what the continuation must be.
  auto p = encode_pair(*tok, "Hello", " world");
  auto whole = enc(*tok, "Hello world", true);
  EXPECT_EQ(p.context, enc(*tok, "Hello", true));
  ASSERT_EQ(whole.size(), p.context.size() + 1);
  EXPECT_EQ(p.continuation, std::vector<int64_t>(whole.begin() + p.context.size(), whole.end()));
  EXPECT_NE(p.continuation, enc(*tok, " world"));
  EXPECT_EQ(tok->id_to_token(static_cast<int32_t>(p.continuation[0])), "\xE2\x96\x81world");
  // The context starts with the tokenizer's BOS (add_bos_token), as lm-eval 0.4.13 encodes it...
  EXPECT_EQ(p.context.front(), 1);
  EXPECT_NE(enc(*tok, "Hello").front(), 1);
  // ... but a context that starts with BOS written out gets no second one (has_bos_prefix).
  auto w = encode_pair(*tok, "<s>Q:", " A");
  EXPECT_EQ(w.context, enc(*tok, "<s>Q:"));
  EXPECT_EQ(w.context.front(), 1);
  EXPECT_EQ(w.context.size(), enc(*tok, "Q:", true).size());
}

TEST(Metrics, AccAccNormAndStderrByHand) {
  int pred = -1, pred_norm = -1;
  // acc picks the larger sum; acc_norm divides by characters: -1/1 < -2/6.
  score_choices({-1.0, -2.0}, {"a", "bbbbbb"}, &pred, &pred_norm);
  EXPECT_EQ(pred, 0);
  EXPECT_EQ(pred_norm, 1);
  // Characters, not bytes: "é" is one character.
  score_choices({-2.0, -2.1}, {"\xC3\xA9\xC3\xA9", "abc"}, &pred, &pred_norm);
  EXPECT_EQ(pred_norm, 1);  // -2/2 = -1 < -2.1/3 = -0.7
  // Ties keep the first, as np.argmax.
  score_choices({-1.0, -1.0}, {"x", "y"}, &pred, &pred_norm);
  EXPECT_EQ(pred, 0);
  auto m = mean_with_stderr({1, 0, 1, 1});
  EXPECT_DOUBLE_EQ(m.value, 0.75);
  EXPECT_DOUBLE_EQ(m.stderr_, 0.25);  // sample sd 0.5 / sqrt(4)
}

TEST(Loglik, SharedContextEqualsBruteForceIncludingTruncation) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  auto model = load_llama(testdata("models/llama-gqa"));
  model->eval();
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  std::mt19937 rng(11);
  auto random_text = [&](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "abcdefgh ijk,."[rng() % 14];
    return s;
  };
  int truncated = 0;
  for (int item = 0; item < 12; ++item) {
    std::string ctx = random_text(5 + rng() % 60);
    std::vector<EncodedPair> pairs;
    for (int c = 0; c < 4; ++c) pairs.push_back(encode_pair(*tok, ctx, " " + random_text(1 + rng() % 12)));
    const int64_t window = 24;  // small, so some items exceed it
    truncated += static_cast<int64_t>(pairs[0].context.size() + pairs[0].continuation.size()) > window + 1;
    auto fast = score_batched(model, pairs, window, 1);  // one item: its context once
    auto slow = score_naive(model, pairs, window);
    for (int c = 0; c < 4; ++c) {
      EXPECT_NEAR(fast[c].value, slow[c].value, 1e-5) << item << "/" << c;
      EXPECT_EQ(fast[c].is_greedy, slow[c].is_greedy);
    }
    // The brute force itself against a hand-rolled sum of log-softmax on the full sequence.
    if (static_cast<int64_t>(pairs[1].context.size() + pairs[1].continuation.size()) <= window + 1) {
      std::vector<int64_t> all = pairs[1].context;
      all.insert(all.end(), pairs[1].continuation.begin(), pairs[1].continuation.end());
      ForwardInput in;
      in.input_ids = torch::tensor(all, torch::kLong).unsqueeze(0);
      torch::NoGradGuard ng;
      auto logp = model->forward(in)[0].to(torch::kDouble).log_softmax(-1);
      double ref = 0;
      for (size_t t = pairs[1].context.size(); t < all.size(); ++t) ref += logp[t - 1][all[t]].item<double>();
      EXPECT_NEAR(slow[1].value, ref, 1e-5);  // float32 forwards of different lengths
    }
  }
  EXPECT_GT(truncated, 0);
}

TEST(Evaluate, TaskFileEndToEndAndFewShot) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  write_file_atomic(
      dir / "t.jsonl",
      "{\"id\": \"a\", \"context\": \"Q: one\\nA:\", \"choices\": [\"x\", \"yy\"], \"gold\": 1, \"category\": \"c1\"}\n"
      "{\"id\": \"b\", \"context\": \"Q: two\\nA:\", \"choices\": [\"zz\", \"w\", \"v\"], \"gold\": 0, \"category\": "
      "\"c2\"}\n"
      "{\"id\": \"c\", \"contexts\": [\"The cat\", \"The dog\"], \"continuation\": \"sat.\", \"gold\": 1, "
      "\"category\": \"c2\"}\n");
  Task task = read_task(dir / "t.jsonl");
  EXPECT_EQ(task.mc.size(), 3u);
  auto model = load_llama(testdata("models/llama-gqa"));
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  EvalOptions o;
  TaskResult fast = evaluate_task(model, *tok, task, o);
  o.naive = true;
  TaskResult naive = evaluate_task(model, *tok, task, o);
  ASSERT_EQ(fast.items.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    for (size_t c = 0; c < fast.items[i]["loglik"].size(); ++c)
      EXPECT_NEAR(fast.items[i]["loglik"][c].get<double>(), naive.items[i]["loglik"][c].get<double>(), 1e-5);
  // acc is the share of items whose argmax is gold.
  double hits = 0;
  for (auto& it : fast.items) hits += it["pred_acc"] == it["gold"];
  EXPECT_DOUBLE_EQ(fast.metrics["acc"].value, hits / 3);
  EXPECT_EQ(fast.category_counts["c2"], 2);
  o.shots = 2;
  o.naive = false;
  TaskResult shot = evaluate_task(model, *tok, task, o);
  EXPECT_EQ(shot.n, 3);
}

TEST(Evaluate, MalformedItemsNameFileAndLine) {
  TempDir dir;
  auto expect_error = [&](const std::string& line, const std::string& needle) {
    write_file_atomic(dir / "bad.jsonl",
                      "{\"context\": \"ok\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n" + line + "\n");
    try {
      read_task(dir / "bad.jsonl");
      ADD_FAILURE() << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{\"context\": \"c\", \"choices\": [\"a\"], \"gold\": 3}", "gold 3 is out of range");
  expect_error("{\"context\": \"c\", \"choices\": [], \"gold\": 0}", "no choices");
  expect_error("{\"contexts\": [\"a\"], \"continuation\": \"x\", \"gold\": 0}", "at least two");
  expect_error("{\"context\": \"c\", \"gold\": 0}", "missing field 'choices'");
  expect_error("{\"prompt\": \"p\", \"answer\": \"1\"}", "mixes generative");
}

TEST(Perplexity, RollingWindowsMatchHandComputation) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha");
  auto model = load_llama(testdata("models/llama-mha"));
  model->eval();
  auto tok = load_tokenizer(testdata("models/llama-mha"));
  const std::string text = "the quick brown fox jumps over the lazy dog";
  auto tokens = enc(*tok, text);
  const int64_t n = static_cast<int64_t>(tokens.size());
  torch::NoGradGuard ng;
  auto score = [&](const std::vector<int64_t>& input, int64_t first_target, int64_t count) {
    ForwardInput in;
    in.input_ids = torch::tensor(input, torch::kLong).unsqueeze(0);
    auto logp = model->forward(in)[0].to(torch::kDouble).log_softmax(-1);
    double s = 0;
    for (int64_t k = 0; k < count; ++k) s += logp[input.size() - count + k][tokens[first_target + k]].item<double>();
    return s;
  };
  // Window larger than the text: one pass with BOS in front.
  std::vector<int64_t> one = {1};
  one.insert(one.end(), tokens.begin(), tokens.end() - 1);
  auto whole = rolling_perplexity(model, *tok, text, 128);
  EXPECT_NEAR(whole.loglik, score(one, 0, n), 1e-9);
  EXPECT_EQ(whole.tokens, n);
  EXPECT_EQ(whole.words, 9);
  EXPECT_EQ(whole.bytes, static_cast<int64_t>(text.size()));
  EXPECT_NEAR(whole.bits_per_byte(), -whole.loglik / (text.size() * std::log(2.0)), 1e-12);
  // Window 8: [BOS, t0..t6] -> t0..t7, then windows of 8 inputs predicting the next 8 (or the rest).
  ASSERT_GT(n, 16);
  double ref = 0;
  std::vector<int64_t> w0 = {1};
  w0.insert(w0.end(), tokens.begin(), tokens.begin() + 7);
  ref += score(w0, 0, 8);
  for (int64_t predicted = 8; predicted < n;) {
    int64_t len = std::min<int64_t>(8, n - predicted), end = predicted + len;
    ref += score(std::vector<int64_t>(tokens.begin() + end - 9, tokens.begin() + end - 1), end - len, len);
    predicted += len;
  }
  EXPECT_NEAR(rolling_perplexity(model, *tok, text, 8).loglik, ref, 1e-9);
}

TEST(Generative, AnswerExtraction) {
  EXPECT_EQ(extract_answer("so the total is 12.\n#### 1,234"), "1234");
  EXPECT_EQ(extract_answer("The answer is: 42"), "42");
  EXPECT_EQ(extract_answer("we get 3 apples and then 7.0"), "7");
  EXPECT_EQ(extract_answer("costs $15 in total"), "15");
  EXPECT_EQ(extract_answer("-5 degrees"), "-5");
  EXPECT_EQ(extract_answer("no number here"), "");
}

// Generative items decoded in batches (left-padded, sorted by length) give each item the text
// it gets alone: the reference is generate() on that item's prompt by itself, greedy, cut at the
// stop string. Two items' answers are their own outputs, so exact match is 2/5 by hand.
TEST(Generative, BatchedItemsDecodeAsEachAlone) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  auto model = load_llama(testdata("models/llama-gqa"));
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  const std::vector<std::string> prompts = {"Q: a\nA:", "Question: what is two and two?\nAnswer:", "x", "The cat sat",
                                            "one two three four five six seven"};
  GenerateOptions g;
  g.max_new_tokens = 6;
  if (const auto eos = tok->special().eos_id) g.eos_ids.push_back(*eos);
  for (auto id : model->config().eos_token_ids)
    if (std::find(g.eos_ids.begin(), g.eos_ids.end(), id) == g.eos_ids.end()) g.eos_ids.push_back(id);
  std::vector<std::string> alone;
  for (const auto& p : prompts) {
    std::vector<int32_t> kept;
    const auto out = generate(model, {enc(*tok, p, true)}, g);
    for (int64_t t : out[0])
      if (std::find(g.eos_ids.begin(), g.eos_ids.end(), t) == g.eos_ids.end()) kept.push_back(static_cast<int32_t>(t));
    std::string text = tok->decode(kept, true);
    if (auto at = text.find("\n\n"); at != std::string::npos) text.resize(at);
    alone.push_back(text);
  }
  TempDir dir;
  std::string lines;
  for (size_t i = 0; i < prompts.size(); ++i)
    lines += json{{"id", "g" + std::to_string(i)},
                  {"prompt", prompts[i]},
                  {"answer", i == 0 || i == 3 ? alone[i] : "no such answer 0.5"}}
                 .dump() +
             "\n";
  write_file_atomic(dir / "gen.jsonl", lines);
  Task task = read_task(dir / "gen.jsonl");
  EvalOptions o;
  o.max_new_tokens = 6;
  o.batch_size = 3;
  TaskResult r = evaluate_task(model, *tok, task, o);
  ASSERT_EQ(r.items.size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(r.items[i]["id"], "g" + std::to_string(i));
    EXPECT_EQ(r.items[i]["output"], alone[i]) << i;
  }
  EXPECT_TRUE(r.items[0]["correct"].get<bool>());
  EXPECT_TRUE(r.items[3]["correct"].get<bool>());
  EXPECT_DOUBLE_EQ(r.metrics["exact_match"].value, 2.0 / 5);
}

TEST(Forgetting, TableFromHandWrittenResults) {
  TempDir dir;
  auto write = [&](const std::string& run, const std::string& task, double acc, double acc_norm) {
    make_dirs(dir / run + "/eval");
    json j = {{"task", task}, {"metrics", {{"acc", acc}, {"acc_norm", acc_norm}}}};
    write_file_atomic(dir / run + "/eval/" + task + ".json", j.dump());
  };
  // base / tuned: mmlu (acc), hellaswag (acc_norm), boolq (acc), arc_challenge (acc_norm), target.
  write("base", "mmlu", 0.50, 0.0);
  write("base", "hellaswag", 0.0, 0.60);
  write("base", "boolq", 0.70, 0.0);
  write("base", "arc_challenge", 0.0, 0.40);
  write("base", "math", 0.10, 0.0);
  write("tuned", "mmlu", 0.40, 0.0);
  write("tuned", "hellaswag", 0.0, 0.50);
  write("tuned", "boolq", 0.80, 0.0);
  write("tuned", "arc_challenge", 0.0, 0.30);
  write("tuned", "math", 0.50, 0.0);
  auto t = forgetting_table(dir / "base", {dir / "tuned"}, paper_categories(), {"math"});
  ASSERT_EQ(t.categories.size(), 3u);  // knowledge, reasoning, exams (no understanding task)
  EXPECT_EQ(t.categories[0].name, "knowledge");
  EXPECT_DOUBLE_EQ(t.categories[1].base, (0.60 + 0.70) / 2);
  EXPECT_DOUBLE_EQ(t.categories[1].tuned[0], (0.50 + 0.80) / 2);
  // overall: mean of the category means.
  EXPECT_DOUBLE_EQ(t.overall.base, (0.50 + 0.65 + 0.40) / 3);
  EXPECT_DOUBLE_EQ(t.overall.tuned[0], (0.40 + 0.65 + 0.30) / 3);
  ASSERT_EQ(t.targets.size(), 1u);
  EXPECT_DOUBLE_EQ(t.targets[0].tuned[0] - t.targets[0].base, 0.40);
  for (auto& r : t.tasks)
    if (r.name == "hellaswag") EXPECT_EQ(r.metric, "acc_norm");
  auto md = forgetting_markdown(t);
  EXPECT_NE(md.find("| **overall** |"), std::string::npos) << md;
  EXPECT_NE(md.find("-0.0667"), std::string::npos) << md;  // overall change: (1.35 - 1.55) / 3
  EXPECT_THROW(forgetting_table(dir / "base", {dir / "nothing"}, paper_categories(), {}), Error);
}

TEST(Metrics, TruthfulQaMc2MassByHand) {
  // exp(-1), exp(-2), exp(-3) normalised; only the first true: 1 / (1 + e^-1 + e^-2).
  EXPECT_NEAR(true_probability_mass({-1, -2, -3}, {1, 0, 0}), 0.6652409557748218, 1e-12);
  // Probabilities 0.5, 0.3, 0.2 with the first and last true.
  EXPECT_NEAR(true_probability_mass({std::log(0.5), std::log(0.3), std::log(0.2)}, {1, 0, 1}), 0.7, 1e-12);
  // Far below exp's range the ratio is still e^-1 / (1 + e^-1) (numpy would give 0/0 here).
  EXPECT_NEAR(true_probability_mass({-1000, -1001}, {0, 1}), 0.2689414213699951, 1e-12);
  EXPECT_THROW(true_probability_mass({-1, -2}, {1}), Error);
}

TEST(Loglik, BatchedAcrossItemsEqualsBruteForce) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  auto model = load_llama(testdata("models/llama-gqa"));
  model->eval();
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  std::mt19937 rng(5);
  auto random_text = [&](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "abcdefgh ijk,.xyz"[rng() % 17];
    return s;
  };
  // Randomised items: 1-5 choices of 1-20 characters after contexts of 1-70 characters (some
  // longer than the window), and partial-scoring items whose choices change the context.
  const int64_t window = 24;
  std::vector<EncodedPair> pairs;
  int truncated = 0, partial = 0;
  for (int item = 0; item < 30; ++item) {
    if (item % 5 == 4) {
      std::string cont = random_text(1 + rng() % 10);
      for (int c = 0; c < 2; ++c) pairs.push_back(encode_pair(*tok, random_text(1 + rng() % 40), " " + cont));
      ++partial;
      continue;
    }
    std::string ctx = random_text(1 + rng() % 70);
    const int n_choices = 1 + rng() % 5;
    for (int c = 0; c < n_choices; ++c) {
      pairs.push_back(encode_pair(*tok, ctx, " " + random_text(1 + rng() % 20)));
      truncated += static_cast<int64_t>(pairs.back().context.size() + pairs.back().continuation.size()) > window + 1;
    }
  }
  ASSERT_GT(truncated, 0);
  ASSERT_GT(partial, 0);
  // An item that lists one choice twice (an exact tie, as lm-eval's separate forwards give it).
  const size_t twice = pairs.size();
  const std::string ctx = random_text(9), choice = " " + random_text(7);
  for (const std::string& c : {choice, " " + random_text(5), choice}) pairs.push_back(encode_pair(*tok, ctx, c));
  auto slow = score_naive(model, pairs, window);
  for (int64_t batch : {1, 3, 64}) {
    int64_t last_progress = 0;
    auto fast = score_batched(model, pairs, window, batch, [&](int64_t done) {
      EXPECT_GT(done, last_progress);
      last_progress = done;
    });
    ASSERT_EQ(fast.size(), pairs.size());
    EXPECT_EQ(last_progress, static_cast<int64_t>(pairs.size()));
    for (size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_NEAR(fast[i].value, slow[i].value, 1e-5) << "batch " << batch << " pair " << i;
      EXPECT_EQ(fast[i].is_greedy, slow[i].is_greedy) << "batch " << batch << " pair " << i;
    }
    EXPECT_EQ(fast[twice].value, fast[twice + 2].value) << "batch " << batch;
  }
  EXPECT_THROW(score_batched(model, pairs, window, 0), Error);
}

TEST(Evaluate, Mc2ItemsReportTheTrueMassAsAcc) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  TempDir dir;
  write_file_atomic(dir / "truthfulqa_mc2.jsonl",
                    "{\"id\": \"0\", \"context\": \"Q: sky?\\nA:\", \"choices\": [\"blue.\", \"Blue it is.\", "
                    "\"red.\"], \"gold\": 0, \"labels\": [1, 1, 0]}\n"
                    "{\"id\": \"1\", \"context\": \"Q: fire?\\nA:\", \"choices\": [\"hot.\", \"cold.\"], \"gold\": 0, "
                    "\"labels\": [1, 0]}\n");
  Task task = read_task(dir / "truthfulqa_mc2.jsonl");
  auto model = load_llama(testdata("models/llama-gqa"));
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  TaskResult r = evaluate_task(model, *tok, task, EvalOptions{});
  ASSERT_EQ(r.items.size(), 2u);
  double sum = 0;
  const std::vector<std::vector<int>> labels = {{1, 1, 0}, {1, 0}};
  for (size_t i = 0; i < 2; ++i) {
    // The mass by hand from the logged log-likelihoods.
    auto ll = r.items[i]["loglik"].get<std::vector<double>>();
    double all = 0, truth = 0;
    for (size_t c = 0; c < ll.size(); ++c) all += std::exp(ll[c]), truth += labels[i][c] * std::exp(ll[c]);
    EXPECT_NEAR(r.items[i]["true_mass"].get<double>(), truth / all, 1e-12);
    sum += truth / all;
  }
  EXPECT_NEAR(r.metrics["acc"].value, sum / 2, 1e-12);
  EXPECT_EQ(r.metrics.count("acc_norm"), 0u);  // lm-eval's MC2 reports acc only
  write_file_atomic(dir / "bad.jsonl",
                    "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 0, \"labels\": [1]}\n");
  EXPECT_THROW(read_task(dir / "bad.jsonl"), Error);
  write_file_atomic(dir / "bad.jsonl",
                    "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 0, \"labels\": [0, 0]}\n");
  EXPECT_THROW(read_task(dir / "bad.jsonl"), Error);
}
