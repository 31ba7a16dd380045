#include <gtest/gtest.h>

#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/core/progress.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::TempDir;

TEST(Error, MessageNamesWhereAndProblem) {
  Error e("data/x.json", "missing field 'output'");
  EXPECT_STREQ(e.what(), "data/x.json: missing field 'output'");
  EXPECT_EQ(e.where(), "data/x.json");
}

TEST(Json, SyntaxErrorNamesLineAndColumn) {
  try {
    parse_json_text("{\n  \"a\": 1,\n  \"b\": ]\n}", "f.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("f.json: malformed JSON at line 3, column 8"), std::string::npos) << msg;
  }
}

// Found by the config.json fuzzer: a number past double's range is well-formed JSON that
// nlohmann refuses with out_of_range, which escaped as a non-Error exception.
TEST(Json, NumberOutOfRangeIsCleanError) {
  try {
    parse_json_text("{\"rope_theta\": 1e706}", "config.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.where(), "config.json");
    EXPECT_NE(std::string(e.what()).find("number overflow parsing '1e706'"), std::string::npos) << e.what();
  }
}

TEST(Json, JsonlSkipsBlankLinesAndNamesBadLine) {
  TempDir dir;
  write_file_atomic(dir / "a.jsonl", "{\"x\":1}\n\n{\"x\":2}\n{bad\n");
  std::vector<int> seen;
  try {
    for_each_jsonl(dir / "a.jsonl", [&](const json& j, size_t) { seen.push_back(j["x"].get<int>()); });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a.jsonl:4: malformed JSON"), std::string::npos) << e.what();
  }
  EXPECT_EQ(seen, (std::vector<int>{1, 2}));
}

TEST(Json, RequireFieldErrors) {
  json j = {{"a", 1}, {"s", "t"}};
  EXPECT_EQ(require_int(j, "a", "w"), 1);
  EXPECT_EQ(require_string(j, "s", "w"), "t");
  EXPECT_THROW(require_field(j, "zz", "w"), Error);
  EXPECT_THROW(require_string(j, "a", "w"), Error);
}

TEST(Fs, AtomicWriteLeavesNoTemporary) {
  TempDir dir;
  write_file_atomic(dir / "f.txt", "hello");
  EXPECT_EQ(read_file(dir / "f.txt"), "hello");
  write_file_atomic(dir / "f.txt", "again");
  EXPECT_EQ(read_file(dir / "f.txt"), "again");
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path)) (void)e, ++n;
  EXPECT_EQ(n, 1);
}

TEST(Fs, MissingFileIsCleanError) {
  try {
    read_file("/nonexistent/flatune.txt");
    FAIL();
  } catch (const Error& e) { EXPECT_EQ(e.where(), "/nonexistent/flatune.txt"); }
  EXPECT_THROW(write_file_atomic("/nonexistent/dir/x", "a"), Error);
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(Progress::format_duration(5), "5s");
  EXPECT_EQ(Progress::format_duration(185), "3m05s");
  EXPECT_EQ(Progress::format_duration(3720), "1h02m");
  EXPECT_EQ(Progress::format_duration(-1), "?");
}
