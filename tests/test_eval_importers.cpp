// Importers, few-shot sampling and Python's random, against prompt strings lm-evaluation-harness
// produces (spelled out by hand from its task YAMLs) and values CPython 3 printed.
#include <gtest/gtest.h>

#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/importers.h"
#include "flatune/eval/pyrandom.h"
#include "flatune/eval/tasks.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::TempDir;

TEST(PyRandom, MatchesCPython) {
  // python3: r = random.Random(1234); r.sample(range(10), 3); r.sample(range(100), 4); r.getrandbits(32)
  PyRandom r(1234);
  EXPECT_EQ(r.sample(10, 3), (std::vector<int64_t>{7, 1, 0}));
  EXPECT_EQ(r.sample(100, 4), (std::vector<int64_t>{11, 74, 4, 85}));
  EXPECT_EQ(r.genrand_uint32(), 2976787804u);
  // Both of sample's algorithms (pool for n <= setsize, set otherwise) and 64-bit getrandbits:
  // r = random.Random(1234); r.sample(range(30), 7); r.sample(range(200), 2); r.getrandbits(64)
  PyRandom q(1234);
  EXPECT_EQ(q.sample(30, 7), (std::vector<int64_t>{24, 14, 3, 0, 2, 18, 1}));
  EXPECT_EQ(q.sample(200, 2), (std::vector<int64_t>{171, 177}));
  EXPECT_EQ(q.getrandbits(64), 1815566295097997766ull);
  // random.Random(1234).sample(range(1000), 5) then .sample(range(50), 8), .getrandbits(40)
  PyRandom p(1234);
  EXPECT_EQ(p.sample(1000, 5), (std::vector<int64_t>{989, 796, 451, 119, 7}));
  EXPECT_EQ(p.sample(50, 8), (std::vector<int64_t>{5, 37, 2, 42, 44, 49, 6, 22}));
  EXPECT_EQ(p.getrandbits(40), 18196959433ull);
  EXPECT_THROW(p.sample(3, 4), Error);
}

TEST(Importers, MmluPromptsCategoriesAndTwoShot) {
  TempDir dir;
  const std::string file = dir.path + "/high_school_physics_test.csv";
  write_file_atomic(file,
                    "What is 1+1?,1,2,3,4,B\n"
                    "\"A \"\"quoted\"\", two-line\nquestion \",x,y,z,w,D\n"
                    "Speed of light?,c,b,a,d,A\n"
                    "Unit of force?,joule,watt,newton,pascal,C\n");
  auto items = import_mmlu(file);
  ASSERT_EQ(items.size(), 4u);
  const std::string desc = "The following are multiple choice questions (with answers) about high school physics.\n\n";
  EXPECT_EQ(items[0]["description"], desc);
  EXPECT_EQ(items[0]["context"], "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:");
  EXPECT_EQ(items[1]["context"], "A \"quoted\", two-line\nquestion\nA. x\nB. y\nC. z\nD. w\nAnswer:");  // question.strip()
  EXPECT_EQ(items[0]["choices"], json({"A", "B", "C", "D"}));
  EXPECT_EQ(items[0]["gold"], 1);
  EXPECT_EQ(items[1]["gold"], 3);
  EXPECT_EQ(items[0]["category"], "stem");
  EXPECT_EQ(mmlu_category("world_religions"), "humanities");
  EXPECT_EQ(mmlu_category("econometrics"), "social_sciences");
  EXPECT_EQ(mmlu_category("virology"), "other");
  EXPECT_THROW(mmlu_category("astrology"), Error);

  // lm-eval's 2-shot MMLU: description, then the first two rows of the dev split (sampler
  // first_n), each "<question block> <letter>" and "\n\n", then the item.
  std::filesystem::create_directories(dir.path + "/dev");
  write_file_atomic(dir.path + "/dev/high_school_physics_dev.csv",
                    "Unit of force?,joule,watt,newton,pascal,C\nSpeed of light?,c,b,a,d,A\nNot used?,1,2,3,4,A\n");
  auto shot2 = import_mmlu(file, 2, dir.path + "/dev");
  EXPECT_EQ(shot2[0]["description"].get<std::string>() + shot2[0]["context"].get<std::string>() + " " + "B",
            "The following are multiple choice questions (with answers) about high school physics.\n\n"
            "Unit of force?\nA. joule\nB. watt\nC. newton\nD. pascal\nAnswer: C\n\n"
            "Speed of light?\nA. c\nB. b\nC. a\nD. d\nAnswer: A\n\n"
            "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B");
  EXPECT_THROW(import_mmlu(file, 2, dir.path + "/nowhere"), Error);

  // Random few-shot from the evaluated split (lm-eval's default ContextSampler): one
  // random.Random(1234) per task; random.Random(1234).sample(range(4), 3) = [3, 0, 2] for item 0
  // (item 0 itself dropped -> items 3, 2); the next call gives [0, 2, 3] for item 1 -> items 0, 2.
  std::string jsonl;
  for (const auto& it : items) jsonl += it.dump() + "\n";
  write_file_atomic(dir.path + "/mmlu.jsonl", jsonl);
  Task task = read_task(dir.path + "/mmlu.jsonl");
  EvalOptions o;
  o.shots = 2;
  PyRandom rng(1234);
  EXPECT_EQ(item_prefix(task, 0, o, rng), desc + "Unit of force?\nA. joule\nB. watt\nC. newton\nD. pascal\nAnswer: C\n\n" +
                                              "Speed of light?\nA. c\nB. b\nC. a\nD. d\nAnswer: A\n\n");
  EXPECT_EQ(item_prefix(task, 1, o, rng),
            desc + "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n" + "Speed of light?\nA. c\nB. b\nC. a\nD. d\nAnswer: A\n\n");

  std::filesystem::create_directories(dir.path + "/bad");
  std::filesystem::create_directories(dir.path + "/bad2");
  write_file_atomic(dir.path + "/bad/anatomy_test.csv", "q,a,b,c,d,E\n");
  try {
    import_mmlu(dir.path + "/bad");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("anatomy_test.csv: row 1"), std::string::npos) << e.what();
  }
  write_file_atomic(dir.path + "/bad2/anatomy_test.csv", "q,a,b,c,d\n");
  EXPECT_THROW(import_mmlu(dir.path + "/bad2"), Error);
}

TEST(Importers, HellaswagPreprocessing) {
  TempDir dir;
  write_file_atomic(dir.path + "/hs.jsonl",
                    R"({"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "HE starts", "endings": ["pulling up roofing [step] on a roof.", "  is using wrap.", "c [title] d", "e"], "label": 3})"
                    "\n");
  auto items = import_hellaswag(dir.path + "/hs.jsonl");
  ASSERT_EQ(items.size(), 1u);
  // ctx = ctx_a + " " + ctx_b.capitalize(); query = preprocess(activity_label + ": " + ctx)
  EXPECT_EQ(items[0]["context"], "Roof shingle removal: A man is sitting on a roof. He starts");
  // "[step]" removed leaving "roofing  on" -> one space; strip; " [title]" -> ". "
  EXPECT_EQ(items[0]["choices"], json({"pulling up roofing on a roof.", "is using wrap.", "c. d", "e"}));
  EXPECT_EQ(items[0]["gold"], 3);
  EXPECT_EQ(items[0]["id"], 24);
  // "c [title] d" -> "c.  d" -> "c. d"; Python's replace("  ", " ") is one left-to-right pass.
  EXPECT_EQ(hellaswag_preprocess("c [title] d"), "c. d");
  EXPECT_EQ(hellaswag_preprocess("a   b"), "a  b");
  write_file_atomic(dir.path + "/bad.jsonl", R"({"ctx_a": "x"})" "\n");
  try {
    import_hellaswag(dir.path + "/bad.jsonl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:1"), std::string::npos) << e.what();
  }
}

TEST(Importers, ArcBothLayouts) {
  TempDir dir;
  write_file_atomic(dir.path + "/arc.jsonl",
                    R"({"id": "Mercury_1", "question": {"stem": "Which is a metal?", "choices": [{"text": "wood", "label": "A"}, {"text": "iron", "label": "B"}]}, "answerKey": "B"})"
                    "\n"
                    R"({"id": "q2", "question": "Pick 3.", "choices": {"text": ["1", "2", "3"], "label": ["1", "2", "3"]}, "answerKey": "3"})"
                    "\n");
  auto items = import_arc(dir.path + "/arc.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0]["context"], "Question: Which is a metal?\nAnswer:");
  EXPECT_EQ(items[0]["choices"], json({"wood", "iron"}));
  EXPECT_EQ(items[0]["gold"], 1);
  EXPECT_EQ(items[1]["context"], "Question: Pick 3.\nAnswer:");
  EXPECT_EQ(items[1]["gold"], 2);
  write_file_atomic(dir.path + "/bad.jsonl", R"({"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "Z"})" "\n");
  EXPECT_THROW(import_arc(dir.path + "/bad.jsonl"), Error);
  EXPECT_THROW(import_suite("lambada", dir.path + "/bad.jsonl"), Error);
}
