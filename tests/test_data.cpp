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

// A tokenizer with one token per byte (ids 3..258; 0 <unk>, 1 <s> added in front, 2 </s>), so
// that token positions are character positions and the expected labels can be written out.
class ByteTokenizer : public Tokenizer {
 public:
  explicit ByteTokenizer(std::string chat_template = "") : template_(std::move(chat_template)) {
    sp_.unk_id = 0;
    sp_.bos_id = 1;
    sp_.eos_id = 2;
    sp_.add_bos = true;
  }
  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int32_t> ids;
    if (add_special) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(c + 3);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override {
    std::string s;
    for (int32_t id : ids)
      s += id >= 3 ? std::string(1, static_cast<char>(id - 3)) : skip_special ? "" : id_to_token(id);
    return s;
  }
  int64_t vocab_size() const override { return 259; }
  std::optional<int32_t> token_to_id(std::string_view) const override { return std::nullopt; }
  std::string id_to_token(int32_t id) const override {
    static const char* specials[] = {"<unk>", "<s>", "</s>"};
    return id < 3 ? specials[id] : std::string(1, static_cast<char>(id - 3));
  }
  const SpecialTokens& special() const override { return sp_; }
  const std::string& chat_template() const override { return template_; }
  std::string kind() const override { return "test-bytes"; }

 private:
  SpecialTokens sp_;
  std::string template_;
};

// An example written out token by token, with {…} around the runs of labelled tokens (each
// label checked to equal its input id).
std::string marked(const Example& e, const Tokenizer& tok) {
  std::string s;
  bool in = false;
  for (size_t i = 0; i < e.ids.size(); ++i) {
    bool on = e.labels[i] != -100;
    if (on) EXPECT_EQ(e.labels[i], e.ids[i]) << "position " << i;
    if (on != in) s += on ? "{" : "}";
    in = on;
    s += tok.id_to_token(static_cast<int32_t>(e.ids[i]));
  }
  return in ? s + "}" : s;
}

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
  EXPECT_EQ(
      segs[0].text,
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
      "### Instruction:\nAdd 2 and 3.\n\n### Response:");
  EXPECT_FALSE(segs[0].train);
  EXPECT_EQ(segs[1].text, "5");
  EXPECT_TRUE(segs[1].train && segs[1].add_eos);
  EXPECT_EQ(render(data[1], "alpaca")[0].text,
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n### "
            "Input:\nchat\n\n### Response:");
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
  EXPECT_EQ(st.label_tokens,
            static_cast<int64_t>(tok->encode("5", false).size() + 1 + tok->encode("cat", false).size() + 1));
  // Training on everything labels every token but the first (never a target).
  auto all = tokenize_conversations(data, *tok, {"alpaca", 512, true}, nullptr);
  EXPECT_EQ(std::vector<int64_t>(all[0].labels.begin() + 1, all[0].labels.end()),
            std::vector<int64_t>(all[0].ids.begin() + 1, all[0].ids.end()));
}

TEST(Data, MultiTurnShareGptMasksEveryUserTurn) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/bytes-320");
  TempDir dir;
  write_file_atomic(
      dir / "c.jsonl",
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
  for (const Case& c :
       {Case{"chatml", "Hello<|im_end|>Ciao<|im_end|>",
             "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\n"
             "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n\n"},
        Case{
            "llama3", "Hello<|eot_id|>Ciao<|eot_id|>",
            "<|start_header_id|>system<|end_header_id|>\n\nBe "
            "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
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
    } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what(); }
  };
  expect_error("[{\"instruction\": \"x\",\n \"output\": }]", "alpaca", "d.json: malformed JSON at line 2");
  expect_error(R"([{"instruction": "x"}])", "alpaca", "record 0: missing field 'output'");
  expect_error("{\"query\": \"q\", \"response\": \"r\"}\n{\"query\": \"q\"}\n", "metamath",
               "d.json:2: missing field 'response'");
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
  // Summed token loss and label count of a batch, fed to the model exactly as the trainer does.
  auto loss_of = [&](const Batch& b) {
    ForwardInput in;
    in.input_ids = b.input_ids;
    in.attention_mask = b.attention_mask;
    in.position_ids = b.position_ids;
    in.segment_ids = b.segment_ids;
    auto [sum, n] = causal_lm_loss_sum(model->forward(in), b.labels);
    return std::make_pair(sum.item<double>(), n);
  };
  double separate = 0;
  int64_t separate_count = 0;
  for (auto* e : ptrs) {
    auto [sum, n] = loss_of(collate({e}, 0));
    separate += sum;
    separate_count += n;
  }
  Batch packed = collate_packed(ptrs, 128, 0);
  EXPECT_EQ(packed.input_ids.size(0), 1);
  EXPECT_EQ(packed.label_tokens, separate_count);
  // Packed into one row; padded; packed into two rows, the second one padded: the same total.
  const int64_t row = static_cast<int64_t>(ex[0].ids.size() + ex[1].ids.size());
  ASSERT_LT(static_cast<int64_t>(ex[2].ids.size()), row);
  Batch two = collate_packed(ptrs, row, 0);
  ASSERT_EQ(two.input_ids.size(0), 2);
  for (const Batch& b : {packed, collate(ptrs, 0), two}) {
    auto [sum, n] = loss_of(b);
    EXPECT_EQ(n, separate_count);
    EXPECT_NEAR(sum, separate, 1e-4);
  }
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
  // The same file as raw-text examples: one per line, every token labelled, EOS closing each.
  auto docs = read_conversations(dir / "t.txt", "text");
  ASSERT_EQ(docs.size(), 40u);
  EXPECT_EQ(docs[3].text, "line number 3 of the corpus");
  ByteTokenizer bytes;
  auto ex = tokenize_conversations({docs[3]}, bytes, {"plain", 512, false}, nullptr);
  EXPECT_EQ(marked(ex[0], bytes), "<s>{line number 3 of the corpus</s>}");
  write_file_atomic(dir / "blank.txt", "\n  \n");
  EXPECT_THROW(read_conversations(dir / "blank.txt", "text"), Error);
}

TEST(Data, EveryTemplateLabelsExactlyTheAssistantTokens) {
  ByteTokenizer tok;
  Conversation chat{{Turn{"system", "Be brief.", ""}, Turn{"user", "Hi", ""}, Turn{"assistant", "Hello", ""},
                     Turn{"user", "Bye", ""}, Turn{"assistant", "Ciao", ""}},
                    ""};
  Conversation alpaca{{Turn{"user", "Add.", "2 3"}, Turn{"assistant", "5", ""}}, ""};
  struct Case {
    const char* tpl;
    const Conversation* c;
    const char* expected;
  };
  const Case cases[] = {
      {"alpaca", &alpaca,
       "<s>Below is an instruction that describes a task, paired with an input that provides further context. "
       "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2 3\n\n"
       "### Response:{5</s>}"},
      {"llama2", &chat,
       "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]{ Hello </s>}<s>[INST] Bye [/INST]{ Ciao </s>}"},
      {"chatml", &chat,
       "<s><|im_start|>system\nBe "
       "brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n{Hello<|im_end|>}\n"
       "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n{Ciao<|im_end|>}\n"},
      {"llama3", &chat,
       "<s><|start_header_id|>system<|end_header_id|>\n\nBe "
       "brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\n{Hello<|eot_id|>}<|start_header_id|>user<|end_header_id|>"
       "\n\nBye<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\n{Ciao<|eot_id|>}"},
      {"vicuna", &chat, "<s>Be brief. USER: Hi ASSISTANT:{ Hello</s>}USER: Bye ASSISTANT:{ Ciao</s>}"},
      {"plain", &chat, "<s>Hi\n{Hello</s>}Bye\n{Ciao</s>}"},
  };
  for (const Case& c : cases) {
    TokenizeStats st;
    auto ex = tokenize_conversations({*c.c}, tok, {c.tpl, 4096, false}, &st);
    ASSERT_EQ(ex.size(), 1u) << c.tpl;
    EXPECT_EQ(marked(ex[0], tok), c.expected) << c.tpl;
    EXPECT_EQ(st.tokens, static_cast<int64_t>(ex[0].ids.size()));
  }
  // Training on everything: every position labelled but the BOS (position 0 is never a target).
  TokenizeStats st;
  auto all = tokenize_conversations({chat}, tok, {"plain", 4096, true}, &st);
  EXPECT_EQ(marked(all[0], tok), "<s>{Hi\nHello</s>Bye\nCiao</s>}");
  EXPECT_EQ(st.label_tokens, static_cast<int64_t>(all[0].ids.size()) - 1);
  // The Vicuna default system prompt (FastChat vicuna_v1.1) when the data has none.
  EXPECT_EQ(render(alpaca, "vicuna")[0].text,
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions. USER: Add.\n\n2 3 ASSISTANT:");
}

TEST(Data, AutoTemplateFollowsTheTokenizersChatTemplate) {
  EXPECT_EQ(resolve_template("auto", ByteTokenizer("{% for m in messages %}<|im_start|>{{ m.role }}")), "chatml");
  EXPECT_EQ(resolve_template("auto", ByteTokenizer("{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>' }}")),
            "llama3");
  EXPECT_EQ(resolve_template("auto", ByteTokenizer("{{ bos_token + '[INST] ' + content + ' [/INST]' }}")), "llama2");
  EXPECT_EQ(resolve_template("auto", ByteTokenizer("")), "alpaca");
  EXPECT_EQ(resolve_template("vicuna", ByteTokenizer("<|im_start|>")), "vicuna");
  EXPECT_THROW(resolve_template("mistral", ByteTokenizer()), Error);
}

TEST(Data, TruncationKeepsWhatIsLeftOfTheResponse) {
  ByteTokenizer tok;
  Conversation c{{Turn{"user", "ab", ""}, Turn{"assistant", "xyz", ""}}, ""};
  TokenizeStats st;
  // <s> a b \n x y z </s> cut to 6 tokens: the response's first two bytes stay labelled.
  auto ex = tokenize_conversations({c}, tok, {"plain", 6, false}, &st);
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(marked(ex[0], tok), "<s>ab\n{xy}");
  EXPECT_EQ(st.truncated, 1);
  EXPECT_EQ(st.dropped, 0);
  EXPECT_EQ(st.label_tokens, 2);
  // Cut to 4 tokens nothing of the response is left: dropped, counted, never silently kept.
  auto none = tokenize_conversations({c}, tok, {"plain", 4, false}, &st);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(st.dropped, 1);
  EXPECT_THROW(tokenize_conversations({c}, tok, {"plain", 1, false}, nullptr), Error);
}

TEST(Data, PaddingAndPackingLayOutPositionsAndSegments) {
  Example a{{10, 11, 12}, {-100, 11, 12}}, b{{20, 21}, {-100, 21}}, c{{30, 31, 32, 33}, {-100, -100, 32, 33}};
  Batch p = collate({&a, &b}, 0);
  EXPECT_TRUE(torch::equal(p.input_ids, torch::tensor({10, 11, 12, 20, 21, 0}, torch::kLong).view({2, 3})));
  EXPECT_TRUE(torch::equal(p.labels, torch::tensor({-100, 11, 12, -100, 21, -100}, torch::kLong).view({2, 3})));
  EXPECT_TRUE(torch::equal(p.attention_mask, torch::tensor({1, 1, 1, 1, 1, 0}, torch::kLong).view({2, 3})));
  EXPECT_TRUE(torch::equal(p.position_ids, torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong).view({2, 3})));
  EXPECT_FALSE(p.segment_ids.defined());
  EXPECT_EQ(p.tokens, 5);
  EXPECT_EQ(p.label_tokens, 3);
  // First fit into rows of 6: a+b (5 tokens) in row 0, c does not fit there and opens row 1.
  Batch k = collate_packed({&a, &b, &c}, 6, 0);
  EXPECT_TRUE(
      torch::equal(k.input_ids, torch::tensor({10, 11, 12, 20, 21, 30, 31, 32, 33, 0}, torch::kLong).view({2, 5})));
  EXPECT_TRUE(torch::equal(
      k.labels, torch::tensor({-100, 11, 12, -100, 21, -100, -100, 32, 33, -100}, torch::kLong).view({2, 5})));
  EXPECT_TRUE(torch::equal(k.position_ids, torch::tensor({0, 1, 2, 0, 1, 0, 1, 2, 3, 0}, torch::kLong).view({2, 5})));
  EXPECT_TRUE(torch::equal(k.segment_ids, torch::tensor({0, 0, 0, 1, 1, 0, 0, 0, 0, -1}, torch::kLong).view({2, 5})));
  EXPECT_EQ(k.tokens, 9);
  EXPECT_EQ(k.label_tokens, 5);
  EXPECT_THROW(collate_packed({&c}, 3, 0), Error);
}

TEST(Data, PackingBalancesRowsToLeaveLittlePadding) {
  // 6 + 1 + 1 + 1 + 1 tokens into rows of 8: first fit in order would give rows of 8 and 2 (the
  // second padded by 6); two rows of 6 and 4 need only 2 pads.
  Example big{{1, 2, 3, 4, 5, 6}, {-100, 2, 3, 4, 5, 6}};
  std::vector<Example> small;
  for (int64_t i = 0; i < 4; ++i) small.push_back({{10 + i}, {-100}});
  Batch k = collate_packed({&big, &small[0], &small[1], &small[2], &small[3]}, 8, 0);
  EXPECT_TRUE(
      torch::equal(k.input_ids, torch::tensor({1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 0, 0}, torch::kLong).view({2, 6})));
  EXPECT_TRUE(
      torch::equal(k.segment_ids, torch::tensor({0, 0, 0, 0, 0, 0, 0, 1, 2, 3, -1, -1}, torch::kLong).view({2, 6})));
  EXPECT_EQ(k.tokens, 10);
  // No two of these fit in a row of 4: one row each, none padded.
  Example four{{1, 1, 1, 1}, {-100, 1, 1, 1}}, three{{2, 2, 2}, {-100, 2, 2}};
  Batch m = collate_packed({&four, &three, &four, &three}, 4, 0);
  EXPECT_EQ(m.input_ids.size(0), 4);
  EXPECT_EQ(m.input_ids.size(1), 4);
  EXPECT_EQ(m.tokens, 14);
  EXPECT_THROW(collate_packed({}, 4, 0), Error);
}

TEST(Data, LengthGroupingSortsWithinGroupsAndStaysSeeded) {
  std::vector<int64_t> lengths = {5, 9, 1, 7, 3, 8, 2, 6, 4, 10};
  DataOrder plain(10, 3), grouped(10, 3);
  grouped.group_by_length(lengths, 5);
  auto p = plain.take(10), g = grouped.take(10);
  for (size_t start : {0u, 5u}) {
    // The same examples as the ungrouped shuffle in each group, longest first.
    std::vector<size_t> ps(p.begin() + start, p.begin() + start + 5), gs(g.begin() + start, g.begin() + start + 5);
    for (size_t i = 1; i < 5; ++i) EXPECT_GT(lengths[gs[i - 1]], lengths[gs[i]]);
    std::sort(ps.begin(), ps.end());
    std::sort(gs.begin(), gs.end());
    EXPECT_EQ(ps, gs);
  }
  auto next = grouped.take(4);
  DataOrder resumed(10, 3);
  resumed.group_by_length(lengths, 5);
  resumed.restore(1, 4);
  EXPECT_EQ(resumed.take(6), grouped.take(6));
  DataOrder again(10, 3);
  again.group_by_length(lengths, 5);
  again.restore(1, 0);
  EXPECT_EQ(again.take(4), next);
  EXPECT_THROW(again.group_by_length({1, 2}, 5), Error);
}

TEST(Data, ValidationSizeIsAFractionOrACount) {
  EXPECT_EQ(validation_size(200, 0.05), 10);
  EXPECT_EQ(validation_size(10, 0.01), 1);  // a positive fraction holds out at least one
  EXPECT_EQ(validation_size(200, 0), 0);
  EXPECT_EQ(validation_size(200, 25), 25);
  EXPECT_THROW(validation_size(200, -0.5), Error);
}
