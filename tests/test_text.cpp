// Tokenizers against the ids Hugging Face / SentencePiece produce (shared/testdata/tokenizers).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/text/sentencepiece_tokenizer.h"
#include "flatune/text/tokenizer.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::TempDir;
using flatune::testing::testdata;

namespace {
std::vector<int32_t> ids_of(const json& a) { return a.get<std::vector<int32_t>>(); }
}  // namespace

class TokenizerVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerVectors, IdsAndDecodingMatchReference) {
  const std::string rel = "tokenizers/" + GetParam();
  FLATUNE_REQUIRE_TESTDATA(rel);
  const std::string dir = testdata(rel);
  // The llama2-spm vectors come from SentencePiece itself: no special-token splitting.
  std::unique_ptr<Tokenizer> tok = GetParam() == "llama2-spm"
                                       ? load_sentencepiece_tokenizer(dir + "/tokenizer.model", json(), false)
                                       : load_tokenizer(dir);
  int lines = 0;
  for_each_jsonl(dir + "/vectors.jsonl", [&](const json& row, size_t line) {
    const std::string text = row.at("text");
    EXPECT_EQ(tok->encode(text, false), ids_of(row.at("ids"))) << GetParam() << " line " << line << ": " << text;
    EXPECT_EQ(tok->encode(text, true), ids_of(row.at("ids_with_special"))) << GetParam() << " line " << line;
    EXPECT_EQ(tok->decode(ids_of(row.at("ids"))), row.at("decoded").get<std::string>())
        << GetParam() << " line " << line;
    ++lines;
  });
  EXPECT_EQ(lines, 120);
}

INSTANTIATE_TEST_SUITE_P(Testdata, TokenizerVectors,
                         ::testing::Values("llama2-spm", "spm-bpe-32k", "llama3", "qwen3", "bytes-320"));

TEST(Tokenizer, SentencePieceSplitsSpecialTokensWrittenInText) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/llama2-spm/special-in-text.jsonl");
  auto tok = load_sentencepiece_tokenizer(testdata("tokenizers/llama2-spm/tokenizer.model"), json::object(), true);
  int lines = 0;
  for_each_jsonl(testdata("tokenizers/llama2-spm/special-in-text.jsonl"), [&](const json& row, size_t line) {
    EXPECT_EQ(tok->encode(row.at("text").get<std::string>(), false), ids_of(row.at("ids"))) << "line " << line;
    ++lines;
  });
  EXPECT_GT(lines, 5);
}

TEST(Tokenizer, ByteLevelRoundTripsRandomUnicode) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/llama3");
  std::mt19937 rng(7);
  for (const char* name : {"llama3", "qwen3", "bytes-320"}) {
    auto tok = load_tokenizer(testdata(std::string("tokenizers/") + name));
    bool cleans = std::string(name) == "llama3";  // clean_up_tokenization_spaces is on there
    for (int i = 0; i < 200; ++i) {
      std::string s;
      int n = rng() % 12;
      for (int k = 0; k < n; ++k) {
        // ASCII, Latin, CJK, emoji and whitespace.
        static const uint32_t ranges[][2] = {
            {0x20, 0x7e}, {0xa0, 0x17f}, {0x4e00, 0x4e80}, {0x1f600, 0x1f640}, {0x09, 0x0a}};
        auto& r = ranges[rng() % 5];
        uint32_t cp = r[0] + rng() % (r[1] - r[0] + 1);
        if (cp < 0x80) s += char(cp);
        else if (cp < 0x800) {
          s += char(0xC0 | (cp >> 6));
          s += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          s += char(0xE0 | (cp >> 12));
          s += char(0x80 | ((cp >> 6) & 0x3F));
          s += char(0x80 | (cp & 0x3F));
        } else {
          s += char(0xF0 | (cp >> 18));
          s += char(0x80 | ((cp >> 12) & 0x3F));
          s += char(0x80 | ((cp >> 6) & 0x3F));
          s += char(0x80 | (cp & 0x3F));
        }
      }
      if (cleans && (s.find(" ") != std::string::npos)) continue;  // clean-up changes spaces by design
      EXPECT_EQ(tok->decode(tok->encode(s, false)), s) << name;
    }
    // Invalid UTF-8 does not crash; the result decodes to something.
    std::string bad = "ok \xff\xfe\xc3 end";
    auto ids = tok->encode(bad, false);
    EXPECT_FALSE(tok->decode(ids).empty());
  }
}

TEST(Tokenizer, SpecialTokensFromConfig) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/qwen3");
  auto qwen = load_tokenizer(testdata("tokenizers/qwen3"));
  EXPECT_EQ(qwen->special().eos_id, qwen->token_to_id("<|im_end|>"));
  EXPECT_EQ(qwen->special().pad_id, qwen->token_to_id("<|endoftext|>"));
  EXPECT_FALSE(qwen->special().add_bos);
  EXPECT_NE(qwen->chat_template().find("im_start"), std::string::npos);
  EXPECT_EQ(qwen->kind(), "bpe-bytelevel");
  auto spm = load_tokenizer(testdata("tokenizers/spm-bpe-32k"));
  EXPECT_TRUE(spm->special().add_bos);
  EXPECT_EQ(spm->special().bos_id, 1);
  EXPECT_EQ(spm->kind(), "bpe-sentencepiece");
  // skip_special drops the BOS.
  EXPECT_EQ(spm->decode(spm->encode("hello", true), true), "hello");
}

TEST(Tokenizer, BadInputIsACleanError) {
  TempDir dir;
  auto expect_error = [&](const std::string& content, const std::string& needle) {
    write_file_atomic(dir / "tokenizer.json", content);
    try {
      load_tokenizer(dir / "tokenizer.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
    }
  };
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  expect_error(R"({"model": {"type": "WordPiece", "vocab": {}}})", "unsupported model type 'WordPiece'");
  expect_error("{" + model + R"(, "normalizer": {"type": "NFKD"}})", "unsupported normalizer type 'NFKD'");
  expect_error("{" + model + R"(, "pre_tokenizer": {"type": "Whitespace"}})",
               "unsupported pre_tokenizer type 'Whitespace'");
  expect_error("{" + model + R"(, "decoder": {"type": "WordPiece"}})", "unsupported decoder type 'WordPiece'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a zz"]}})", "unknown token 'zz'");
  expect_error(R"({"model": {"type": "BPE", "vocab": )", "malformed JSON");
  // Ids index a dense table: an absurd or negative id is refused before anything is allocated,
  // and a post-processor may only add ids the vocabulary has.
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 2000000000}, "merges": []}})",
               "id 2000000000 of token 'a' is outside");
  expect_error("{" + model + R"(, "added_tokens": [{"id": -1, "content": "<x>", "special": true}]})",
               "id -1 of token '<x>' is outside");
  expect_error("{" + model + R"(, "added_tokens": [{"id": 1.5, "content": "<x>", "special": true}]})",
               "id of token '<x>' is not an integer");
  expect_error(
      "{" + model +
          R"(, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"ids": [99]}}}})",
      "post_processor adds id 99");
  write_file_atomic(dir / "tokenizer.model", "this is not a protobuf");
  EXPECT_THROW(load_sentencepiece_tokenizer(dir / "tokenizer.model", json(), false), Error);
  EXPECT_THROW(load_tokenizer(dir / "missing"), Error);
  // A minimal valid file works: "ab" merges.
  write_file_atomic(dir / "tokenizer.json", "{" + model + "}");
  EXPECT_EQ(load_tokenizer(dir / "tokenizer.json")->encode("abba", false), (std::vector<int32_t>{2, 1, 0}));
}

// `flatune tokenize` end to end: the binary's ids for the reference texts (given as JSON lines,
// so texts with newlines survive), with and without special tokens, and --decode back to text.
TEST(Cli, TokenizeMatchesReferenceVectors) {
  FLATUNE_REQUIRE_TESTDATA("tokenizers/spm-bpe-32k/vectors.jsonl");
  TempDir tmp;
  // spm-bpe-32k goes through tokenizer.json; llama2-spm through the SentencePiece bridge, which
  // must load inside the binary that also holds libtorch's protobuf.
  for (const std::string name : {"spm-bpe-32k", "llama2-spm"}) {
    const std::string dir = testdata("tokenizers/" + name);
    std::vector<json> rows;
    for_each_jsonl(dir + "/vectors.jsonl", [&](const json& row, size_t) { rows.push_back(row); });
    std::string input, id_lines;
    for (const auto& row : rows) {
      input += json{{"text", row.at("text")}}.dump() + "\n";
      id_lines += row.at("ids").dump() + "\n";
    }
    write_file_atomic(tmp / "in.jsonl", input);
    write_file_atomic(tmp / "ids.jsonl", id_lines);
    auto plain = flatune::testing::run_flatune("tokenize --tokenizer '" + dir + "' --input '" + tmp / "in.jsonl" + "'");
    ASSERT_EQ(plain.exit_code, 0) << plain.output;
    auto special = flatune::testing::run_flatune("tokenize --add-special --tokenizer '" + dir + "' --input '" +
                                                 tmp / "in.jsonl" + "'");
    ASSERT_EQ(special.exit_code, 0) << special.output;
    auto decoded = flatune::testing::run_flatune("tokenize --decode --tokenizer '" + dir + "' --input '" +
                                                 tmp / "ids.jsonl" + "'");
    ASSERT_EQ(decoded.exit_code, 0) << decoded.output;
    auto lines = [](const std::string& s) {
      std::vector<json> out;
      size_t pos = 0;
      for (size_t end; (end = s.find('\n', pos)) != std::string::npos; pos = end + 1)
        out.push_back(json::parse(s.substr(pos, end - pos)));
      return out;
    };
    auto p = lines(plain.output), s = lines(special.output), d = lines(decoded.output);
    ASSERT_EQ(p.size(), rows.size()) << name;
    ASSERT_EQ(s.size(), rows.size()) << name;
    ASSERT_EQ(d.size(), rows.size()) << name;
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_EQ(p[i], rows[i].at("ids")) << name << " line " << i + 1;
      EXPECT_EQ(s[i], rows[i].at("ids_with_special")) << name << " line " << i + 1;
      EXPECT_EQ(d[i], rows[i].at("decoded")) << name << " line " << i + 1;
    }
  }
}

// A missing folder, a truncated tokenizer.json and a tokenizer.model that is not one: each one
// line `flatune: <file>: <problem>` and exit code 2.
TEST(Cli, TokenizeBadTokenizerIsOneLineExit2) {
  TempDir tmp;
  write_file_atomic(tmp / "in.txt", "hello\n");
  std::filesystem::create_directories(tmp / "truncated");
  write_file_atomic(tmp / "truncated/tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0)");
  std::filesystem::create_directories(tmp / "notspm");
  write_file_atomic(tmp / "notspm/tokenizer.model", "this is not a protobuf");
  struct Case {
    std::string tokenizer, named;
  };
  for (const Case& c : std::vector<Case>{{tmp / "missing", tmp / "missing"},
                                         {tmp / "truncated", tmp / "truncated/tokenizer.json"},
                                         {tmp / "notspm", tmp / "notspm/tokenizer.model"}}) {
    auto r =
        flatune::testing::run_flatune("tokenize --tokenizer '" + c.tokenizer + "' --input '" + tmp / "in.txt" + "'");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(r.output.rfind("flatune: " + c.named + ": ", 0), 0u) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
}
