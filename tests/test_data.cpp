// Readers, templates, labels, truncation, packing and data order.
#include <gtest/gtest.h>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/data/batching.h"
#include "flatune/data/dataset.h"
#include "flatune/model/llama.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::TempDir;
using flatune::testing::testdata;

namespace {
std::unique_ptr<Tokenizer> bytes_tokenizer() { return load_tokenizer(testdata("tokenizers/bytes-320")); }

// The text under the labelled positions, and the text under the masked ones.
std::pair<std::string, std::string> split_by_labels(const Example& e, const Tokenizer& tok) {
  std::vector<int32_t> on, off;
  for (size_t i = 0; i < e.ids.size(); ++i) (e.labels[i] != -100 ? on : off).push_back(static_cast<int32_t>(e.ids[i]));
  return {tok.decode(on, true), tok.decode(off, true)};
}
}  // namespace

TEST(Data, AlpacaPromptIsStanfordsAndOnlyTheResponseIsLearned) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/bytes-320");
  TempDir dir;
  write_file_atomic(dir / "a.json", R"([{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
                                       {"instruction": "Translate.", "input": "chat", "output": "cat"}])");
  auto data = read_conversations(dir / "a.json", "auto");
  ASSERT_EQ(data.size(), 2u);
  auto segs = render(data[0], "alpaca");
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].text,
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nAdd 2 and 3.\n\n### Response:");
  EXPECT_FALSE(segs[0].train);
  EXPECT_EQ(segs[1].text, "5");
  EXPECT_TRUE(segs[1].train && segs[1].add_eos);
  EXPECT_EQ(render(data[1], "alpaca")[0].text,
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n### Input:\nchat\n\n### Response:");
  auto tok = bytes_tokenizer();
  TokenizeStats st;
  auto ex = tokenize_conversations(data, *tok, {"alpaca", 512, false}, &st);
  ASSERT_EQ(ex.size(), 2u);
  // BOS (id 1) first and masked; the response and the EOS (id 2) are the only labels.
  EXPECT_EQ(ex[0].ids.front(), 1);
  EXPECT_EQ(ex[0].ids.back(), 2);
  EXPECT_EQ(ex[0].labels.back(), 2);
  auto [learned, masked] = split_by_labels(ex[0], *tok);
  EXPECT_EQ(learned, "5");
  EXPECT_EQ(masked, segs[0].text);
  EXPECT_EQ(st.label_tokens, static_cast<int64_t>(tok->encode("5", false).size() + 1 + tok->encode("cat", false).size() + 1));
  // Training on everything labels every token but the first (never a target).
  auto all = tokenize_conversations(data, *tok, {"alpaca", 512, true}, nullptr);
  EXPECT_EQ(std::vector<int64_t>(all[0].labels.begin() + 1, all[0].labels.end()),
            std::vector<int64_t>(all[0].ids.begin() + 1, all[0].ids.end()));
}

TEST(Data, MultiTurnShareGptMasksEveryUserTurn) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/bytes-320");
  TempDir dir;
  write_file_atomic(dir / "c.jsonl",
                    R"({"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Ciao"}]})"
                    "\n"
                    R"({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})"
                    "\n");
  auto data = read_conversations(dir / "c.jsonl", "sharegpt");
  ASSERT_EQ(data.size(), 2u);
  ASSERT_EQ(data[0].turns.size(), 5u);
  auto tok = bytes_tokenizer();
  struct Case {
    const char* tpl;
    const char* learned;
    const char* masked;
  };
  for (const Case& c : {Case{"chatml", "Hello<|im_end|>Ciao<|im_end|>",
                             "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\n"
                             "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n\n"},
                        Case{"llama3", "Hello<|eot_id|>Ciao<|eot_id|>",
                             "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n"},
                        Case{"llama2", " Hello  Ciao ", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST][INST] Bye [/INST]"},
                        // (the second exchange's <s> is the BOS token, dropped by skip_special)
                        Case{"vicuna", " Hello Ciao", "Be brief. USER: Hi ASSISTANT:USER: Bye ASSISTANT:"},
                        Case{"plain", "HelloCiao", "Hi\nBye\n"}}) {
    auto ex = tokenize_conversations({data[0]}, *tok, {c.tpl, 512, false}, nullptr);
    ASSERT_EQ(ex.size(), 1u) << c.tpl;
    auto [learned, masked] = split_by_labels(ex[0], *tok);
    EXPECT_EQ(learned, c.learned) << c.tpl;
    EXPECT_EQ(masked, c.masked) << c.tpl;
  }
}

TEST(Data, ReadersNameFileLineAndField) {
  TempDir dir;
  auto expect_error = [&](const std::string& content, const std::string& format, const std::string& needle) {
    write_file_atomic(dir / "d.json", content);
    try {
      read_conversations(dir / "d.json", format);
      ADD_FAILURE() << "no error: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("[{\"instruction\": \"x\",\n \"output\": }]", "alpaca", "d.json: malformed JSON at line 2");
  expect_error(R"([{"instruction": "x"}])", "alpaca", "record 0: missing field 'output'");
  expect_error("{\"query\": \"q\", \"response\": \"r\"}\n{\"query\": \"q\"}\n", "metamath", "d.json:2: missing field 'response'");
  expect_error("[]", "alpaca", "empty dataset");
  expect_error(R"([{"conversations": [{"from": "human", "value": "hi"}]}])", "sharegpt", "no assistant turn");
  expect_error(R"([{"conversations": [{"from": "robot", "value": "hi"}]}])", "sharegpt", "unknown role 'robot'");
  expect_error(R"([{"foo": 1}])", "auto", "cannot tell the data format");
  EXPECT_THROW(read_conversations(dir / "nope.json", "alpaca"), Error);
  write_file_atomic(dir / "m.json", R"([{"query": "q", "response": "r"}])");
  EXPECT_EQ(read_conversations(dir / "m.json", "auto")[0].turns[1].content, "r");
}

TEST(Data, TruncationDropsExamplesWhoseResponseIsCutAway) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/bytes-320");
  Conversation long_prompt{{Turn{"user", std::string(300, 'x'), ""}, Turn{"assistant", "ok", ""}}, ""};
  Conversation short_one{{Turn{"user", "hi", ""}, Turn{"assistant", "yes", ""}}, ""};
  auto tok = bytes_tokenizer();
  TokenizeStats st;
  auto ex = tokenize_conversations({long_prompt, short_one}, *tok, {"plain", 64, false}, &st);
  EXPECT_EQ(ex.size(), 1u);
  EXPECT_EQ(st.dropped, 1);
  EXPECT_EQ(st.truncated, 1);
}

TEST(Data, PackedRowLossIsTheSumOfSeparateLosses) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa");
  auto model = load_llama(testdata("models/llama-gqa"));
  model->eval();
  auto tok = load_tokenizer(testdata("models/llama-gqa"));
  std::vector<Conversation> data = {{{Turn{"user", "one plus one", ""}, Turn{"assistant", "two", ""}}, ""},
                                    {{Turn{"user", "a cat is a", ""}, Turn{"assistant", "feline", ""}}, ""},
                                    {{Turn{"user", "hi", ""}, Turn{"assistant", "hello there", ""}}, ""}};
  auto ex = tokenize_conversations(data, *tok, {"plain", 128, false}, nullptr);
  std::vector<const Example*> ptrs = {&ex[0], &ex[1], &ex[2]};
  torch::NoGradGuard ng;
  double separate = 0;
  int64_t separate_count = 0;
  for (auto* e : ptrs) {
    Batch b = collate({e}, 0);
    ForwardInput in;
    in.input_ids = b.input_ids;
    auto [sum, n] = causal_lm_loss_sum(model->forward(in), b.labels);
    separate += sum.item<double>();
    separate_count += n;
  }
  Batch packed = collate_packed(ptrs, 128, 0);
  EXPECT_EQ(packed.input_ids.size(0), 1);
  ForwardInput in;
  in.input_ids = packed.input_ids;
  in.position_ids = packed.position_ids;
  in.segment_ids = packed.segment_ids;
  auto [sum, n] = causal_lm_loss_sum(model->forward(in), packed.labels);
  EXPECT_EQ(n, separate_count);
  EXPECT_EQ(packed.label_tokens, separate_count);
  EXPECT_NEAR(sum.item<double>(), separate, 1e-4);
  // Padded batch: the same total.
  Batch padded = collate(ptrs, 0);
  ForwardInput pin;
  pin.input_ids = padded.input_ids;
  pin.attention_mask = padded.attention_mask;
  auto [psum, pn] = causal_lm_loss_sum(model->forward(pin), padded.labels);
  EXPECT_EQ(pn, separate_count);
  EXPECT_NEAR(psum.item<double>(), separate, 1e-4);
}

TEST(Data, OrderIsSeededAndRestorable) {
  DataOrder a(10, 7), b(10, 7), c(10, 8);
  auto first = a.take(25);
  EXPECT_EQ(first, b.take(25));
  EXPECT_NE(first, c.take(25));
  // Every epoch is a permutation.
  std::vector<size_t> epoch0(first.begin(), first.begin() + 10);
  std::sort(epoch0.begin(), epoch0.end());
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(epoch0[i], i);
  DataOrder resumed(10, 7);
  resumed.restore(a.epoch(), a.position());
  EXPECT_EQ(resumed.take(7), a.take(7));
}

TEST(Data, TextBlocksAndValidationSplit) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/bytes-320");
  TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "line number " + std::to_string(i) + " of the corpus\n";
  write_file_atomic(dir / "t.txt", text);
  auto tok = bytes_tokenizer();
  auto blocks = text_blocks(dir / "t.txt", *tok, 32);
  ASSERT_GT(blocks.size(), 10u);
  for (auto& b : blocks) EXPECT_EQ(b.ids.size(), 32u);
  std::vector<Example> val;
  auto train = blocks;
  split_validation(train, val, 5, 1);
  EXPECT_EQ(val.size(), 5u);
  EXPECT_EQ(train.size() + val.size(), blocks.size());
  auto train2 = blocks;
  std::vector<Example> val2;
  split_validation(train2, val2, 5, 1);
  EXPECT_EQ(val2[0].ids, val[0].ids);
  EXPECT_THROW(text_blocks(dir / "t.txt", *tok, 100000), Error);
}
