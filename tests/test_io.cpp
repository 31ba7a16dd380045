// io and config: testdata folders load, save/load round trips (single and sharded), bf16
// rounding equals torch's, malformed safetensors and config.json give clean, named errors.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/io/checkpoint.h"
#include "flatune/io/safetensors.h"
#include "flatune/model/config.h"
#include "test_util.h"

using namespace flatune;
namespace ft = flatune::testing;

namespace {
const char* kModels[] = {"llama-bias", "llama-gqa", "llama-mha", "llama3-rope", "qwen2-tied"};

void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }
// 8-byte little-endian length + header + data.
std::string safetensors_bytes(const std::string& header, const std::string& data, uint64_t len_override = 0) {
  uint64_t n = len_override ? len_override : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}
void expect_error_containing(const std::function<void()>& f, const std::string& a, const std::string& b) {
  try {
    f();
    ADD_FAILURE() << "no error (expected one mentioning " << a << " and " << b << ")";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(a), std::string::npos) << msg;
    EXPECT_NE(msg.find(b), std::string::npos) << msg;
  }
}
void expect_same(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  std::map<std::string, torch::Tensor> bm(b.begin(), b.end());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(bm.count(name)) << name;
    const auto& u = bm[name];
    ASSERT_EQ(t.scalar_type(), u.scalar_type()) << name;
    ASSERT_EQ(t.sizes(), u.sizes()) << name;
    ASSERT_EQ(0, std::memcmp(t.contiguous().data_ptr(), u.contiguous().data_ptr(), t.nbytes())) << name;
  }
}
}  // namespace

TEST(Config, EveryTestdataModelLoads) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-mha/config.json");
  for (const char* m : kModels) {
    std::string dir = ft::testdata(std::string("models/") + m);
    LlamaConfig c = load_llama_config(dir + "/config.json");
    EXPECT_EQ(c.hidden_size, c.head_dim * c.num_attention_heads) << m;
    auto w = load_checkpoint_weights(dir);
    // num_parameters from shapes alone equals the stored element count.
    int64_t stored = 0;
    for (const auto& [n, t] : w) stored += t.numel();
    EXPECT_EQ(stored, c.num_parameters()) << m;
    EXPECT_TRUE(read_safetensors(dir + "/vectors.safetensors").size() >= 2) << m;
  }
  EXPECT_EQ(load_llama_config(ft::testdata("models/qwen2-tied/config.json")).qkv_bias, true);
  EXPECT_EQ(load_llama_config(ft::testdata("models/llama3-rope/config.json")).rope_scaling.type, "llama3");
}

TEST(Config, FieldsAndDefaults) {
  auto j = nlohmann::json::parse(R"({"model_type":"mistral","vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
    "sliding_window":4096,"bos_token_id":1,"eos_token_id":[2,3],"rope_scaling":{"rope_type":"linear","factor":2.0}})");
  LlamaConfig c = parse_llama_config(j, "c.json");
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.sliding_window, std::optional<int64_t>(4096));
  EXPECT_EQ(c.bos_token_ids, std::vector<int64_t>({1}));
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>({2, 3}));
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  // Hand count: embed 10*8 + layer (q 8*8, k 8*4, v 8*4, o 8*8, mlp 3*8*16, 2 norms 16) + norm 8 + head 10*8.
  EXPECT_EQ(c.num_parameters(), 80 + (64 + 32 + 32 + 64 + 384 + 16) + 8 + 80);
  LlamaConfig again = parse_llama_config(llama_config_to_json(c), "again");
  EXPECT_EQ(again.eos_token_ids, c.eos_token_ids);
  EXPECT_EQ(again.rope_scaling.type, "linear");
}

TEST(Config, MalformedNamesTheField) {
  ft::TempDir tmp;
  const std::string base = R"("vocab_size":10,"intermediate_size":16,"num_hidden_layers":1,"num_key_value_heads":1)";
  struct Case {
    std::string text, field;
  };
  std::vector<Case> cases = {
      {R"({"model_type":"llama", )", "line"},  // bad JSON: position reported
      {"{" + base + R"(,"model_type":"gpt2","hidden_size":8,"num_attention_heads":2})", "model_type"},
      {"{" + base + R"(,"model_type":"llama","num_attention_heads":2})", "hidden_size"},
      {"{" + base + R"(,"model_type":"llama","hidden_size":9,"num_attention_heads":2})", "num_attention_heads"},
      {"{" + base +
           R"(,"model_type":"llama","hidden_size":8,"num_attention_heads":2,"rope_scaling":{"type":"yarn","factor":2}})",
       "yarn"},
      // Seen while writing bench/fuzz's config target: fields of the wrong JSON type escaped as
      // nlohmann type errors (exit 1) instead of naming the field.
      {"{" + base + R"(,"model_type":"llama","hidden_size":8,"num_attention_heads":2,"rope_scaling":{"rope_type":3}})",
       "rope_scaling.rope_type"},
      {"{" + base + R"(,"model_type":"llama","hidden_size":8,"num_attention_heads":2,"torch_dtype":16})",
       "torch_dtype"},
  };
  for (const auto& c : cases) {
    write_bytes(tmp / "config.json", c.text);
    expect_error_containing([&] { load_llama_config(tmp / "config.json"); }, "config.json", c.field);
  }
  expect_error_containing([&] { load_llama_config(tmp / "absent.json"); }, "absent.json", "");
}

TEST(Safetensors, MalformedFilesAreCleanErrors) {
  ft::TempDir tmp;
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data8(8, '\0');
  struct Case {
    std::string name, bytes;
  };
  std::vector<Case> cases = {
      {"truncated", std::string("\x10\0\0", 3)},
      {"length_past_end", safetensors_bytes(ok_header, data8, 4096)},
      {"length_above_cap", safetensors_bytes(ok_header, data8, (200ull << 20))},
      {"non_object", safetensors_bytes("[1,2,3]", "")},
      {"unknown_dtype", safetensors_bytes(R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", data8)},
      {"wrong_byte_count", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8)},
      {"out_of_bounds", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data8)},
      {"overlap",
       safetensors_bytes(
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           data8)},
      {"duplicate",
       safetensors_bytes(
           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
           data8)},
      {"non_integer_shape", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", data8)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = tmp / (c.name + ".safetensors");
    write_bytes(path, c.bytes);
    expect_error_containing([&] { SafetensorsFile f(path); }, c.name + ".safetensors", "");
  }
  // The well-formed variant reads.
  write_bytes(tmp / "ok.safetensors", safetensors_bytes(ok_header, data8));
  EXPECT_EQ(read_safetensors(tmp / "ok.safetensors").size(), 1u);
}

TEST(Safetensors, AllDtypesRoundTrip) {
  ft::TempDir tmp;
  NamedTensors t;
  for (auto dt : {torch::kFloat64, torch::kFloat32, torch::kFloat16, torch::kBFloat16, torch::kInt64, torch::kInt32,
                  torch::kInt16, torch::kInt8, torch::kUInt8, torch::kBool})
    t.emplace_back(torch_dtype_to_safetensors(dt), torch::arange(6).reshape({2, 3}).remainder(2 + 5).to(dt));
  write_safetensors(tmp / "x.safetensors", t, {{"format", "pt"}});
  expect_same(t, read_safetensors(tmp / "x.safetensors"));
  EXPECT_EQ(SafetensorsFile(tmp / "x.safetensors").header().metadata.at("format"), "pt");
}

TEST(Checkpoint, SaveLoadBitIdenticalAndSharded) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa/config.json");
  ft::TempDir tmp;
  std::string src = ft::testdata("models/llama-gqa");
  auto w = load_checkpoint_weights(src);
  auto cfg = llama_config_to_json(load_llama_config(src + "/config.json"));
  save_checkpoint(tmp / "single", cfg, w, {}, src);
  expect_same(w, load_checkpoint_weights(tmp / "single"));
  EXPECT_TRUE(std::filesystem::exists(tmp / "single/tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(tmp / "single/generation_config.json"));

  SaveOptions o;
  o.max_shard_bytes = 4096;
  save_checkpoint(tmp / "sharded", cfg, w, o);
  expect_same(w, load_checkpoint_weights(tmp / "sharded"));
  auto index = nlohmann::json::parse(read_file(tmp / "sharded/model.safetensors.index.json"));
  int64_t total = 0;
  for (const auto& [n, t] : w) total += t.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), w.size());
  for (const auto& [name, file] : index["weight_map"].items()) {
    SafetensorsFile shard(tmp / ("sharded/" + file.get<std::string>()));
    EXPECT_TRUE(shard.contains(name)) << name;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "sharded/model.safetensors"));
}

TEST(Checkpoint, Bf16SaveRoundsAsTorch) {
  ft::TempDir tmp;
  // Values straddling bf16 rounding boundaries, including exact ties (even rounding).
  auto x = torch::tensor({1.0f, 1.00390625f, 1.01171875f, -3.14159f, 65504.0f, 1e-40f, 0.0f}, torch::kFloat32);
  NamedTensors w = {{"model.embed_tokens.weight", x}};
  nlohmann::json cfg = {{"model_type", "llama"}};
  SaveOptions o;
  o.dtype = torch::kBFloat16;
  save_checkpoint(tmp / "bf", cfg, w, o);
  auto back = load_checkpoint_weights(tmp / "bf");
  auto expected = x.to(torch::kBFloat16);
  ASSERT_EQ(back[0].second.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(0, std::memcmp(back[0].second.data_ptr(), expected.data_ptr(), expected.nbytes()));
  // Hand check of the tie: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and rounds to even (1).
  EXPECT_EQ(back[0].second[1].item<float>(), 1.0f);
  auto saved_cfg = nlohmann::json::parse(read_file(tmp / "bf/config.json"));
  EXPECT_EQ(saved_cfg["torch_dtype"], "bfloat16");
}

// ||w|| over the stored floating-point tensors: 3-4-12 gives 13 whether in one file (with an
// integer tensor, not a weight, left out) or in shards.
TEST(Checkpoint, WeightNormByHandSingleAndSharded) {
  ft::TempDir tmp;
  NamedTensors w = {{"model.embed_tokens.weight", torch::tensor({3.0f, 4.0f}, torch::kFloat32)},
                    {"model.norm.weight", torch::tensor({12.0}, torch::kBFloat16)}};
  NamedTensors with_int = w;
  with_int.emplace_back("model.step", torch::tensor({100}, torch::kInt64));
  make_dirs(tmp / "one");
  write_safetensors(tmp / "one/model.safetensors", with_int, {});
  EXPECT_DOUBLE_EQ(checkpoint_weight_norm(tmp / "one"), 13.0);
  SaveOptions o;
  o.max_shard_bytes = 8;
  // A config `flatune info` accepts (the shape is not checked against the tensors).
  const nlohmann::json cfg = {{"model_type", "llama"},   {"vocab_size", 10},       {"hidden_size", 8},
                              {"intermediate_size", 16}, {"num_hidden_layers", 1}, {"num_attention_heads", 2}};
  save_checkpoint(tmp / "sharded", cfg, w, o);
  ASSERT_TRUE(std::filesystem::exists(tmp / "sharded/model.safetensors.index.json"));
  EXPECT_DOUBLE_EQ(checkpoint_weight_norm(tmp / "sharded"), 13.0);
  auto r = ft::run_flatune("info --weight-norm " + tmp / "sharded");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("weight norm: 13\n"), std::string::npos) << r.output;
  expect_error_containing([&] { checkpoint_weight_norm(tmp / "absent"); }, "absent", "no such model folder");
}

TEST(Checkpoint, MissingFilesAreNamed) {
  ft::TempDir tmp;
  expect_error_containing([&] { load_checkpoint_weights(tmp.path); }, "model.safetensors", "");
  write_bytes(tmp / "model.safetensors.index.json", R"({"weight_map":{"a":"model-00001-of-00002.safetensors"}})");
  expect_error_containing([&] { load_checkpoint_weights(tmp.path); }, "model-00001-of-00002.safetensors", "");
}

TEST(Cli, InfoOnModelAndBrokenFile) {
  FLATUNE_REQUIRE_TESTDATA("models/qwen2-tied/config.json");
  auto r = ft::run_flatune("info " + ft::testdata("models/qwen2-tied"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model_type: qwen2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokenizer.json"), std::string::npos) << r.output;
  auto t = ft::run_flatune("info " + ft::testdata("models/qwen2-tied/vectors.safetensors"));
  EXPECT_EQ(t.exit_code, 0) << t.output;
  EXPECT_NE(t.output.find("input_ids"), std::string::npos) << t.output;
  ft::TempDir tmp;
  write_bytes(tmp / "broken.safetensors", "abc");
  auto b = ft::run_flatune("info " + tmp / "broken.safetensors");
  EXPECT_EQ(b.exit_code, 2) << b.output;
  EXPECT_EQ(b.output.rfind("flatune: " + tmp / "broken.safetensors" + ":", 0), 0u) << b.output;
  EXPECT_EQ(std::count(b.output.begin(), b.output.end(), '\n'), 1) << b.output;
}

// `flatune generate` prints the whole decoded text, NUL bytes included (printf's %s stopped at
// the first). The model is made to emit only token 3, which the byte-level tokenizer decodes to
// byte 0x00: no layer writes to the residual stream (o_proj, down_proj zero), every embedding
// and the final norm are ones, so the last hidden state is all ones, and lm_head's only
// non-zero row is token 3's.
TEST(Cli, GeneratePrintsNulBytes) {
  FLATUNE_REQUIRE_TESTDATA("models/llama-gqa/config.json");
  ft::TempDir tmp;
  const std::string src = ft::testdata("models/llama-gqa");
  NamedTensors weights = load_checkpoint_weights(src);
  for (auto& [name, t] : weights) {
    if (name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos)
      t = torch::zeros_like(t);
    if (name == "model.embed_tokens.weight" || name == "model.norm.weight") t = torch::ones_like(t);
    if (name == "lm_head.weight") {
      t = torch::zeros_like(t);
      t[3].fill_(1.0);
    }
  }
  save_checkpoint(tmp / "nul", read_json_file(src + "/config.json"), weights, {}, src);
  auto r = ft::run_flatune("generate --model " + tmp / "nul" + " --prompt 'a b' --max-new-tokens 16 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, std::string(16, '\0') + "\n");
}
