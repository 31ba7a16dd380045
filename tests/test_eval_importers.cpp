// Importers, few-shot sampling and Python's random, against prompt strings lm-evaluation-harness
// produces (spelled out by hand from its task YAMLs) and values CPython 3 printed.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

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
  EXPECT_EQ(items[1]["context"],
            "A \"quoted\", two-line\nquestion\nA. x\nB. y\nC. z\nD. w\nAnswer:");  // question.strip()
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
  EXPECT_EQ(item_prefix(task, 0, o, rng), desc +
                                              "Unit of force?\nA. joule\nB. watt\nC. newton\nD. pascal\nAnswer: C\n\n" +
                                              "Speed of light?\nA. c\nB. b\nC. a\nD. d\nAnswer: A\n\n");
  EXPECT_EQ(item_prefix(task, 1, o, rng), desc + "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n" +
                                              "Speed of light?\nA. c\nB. b\nC. a\nD. d\nAnswer: A\n\n");

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
  write_file_atomic(
      dir.path + "/hs.jsonl",
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
  write_file_atomic(dir.path + "/bad.jsonl", R"({"ctx_a": "x"})"
                                             "\n");
  try {
    import_hellaswag(dir.path + "/bad.jsonl");
    FAIL();
  } catch (const Error& e) { EXPECT_NE(std::string(e.what()).find("bad.jsonl:1"), std::string::npos) << e.what(); }
}

TEST(Importers, ArcBothLayouts) {
  TempDir dir;
  write_file_atomic(
      dir.path + "/arc.jsonl",
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
  write_file_atomic(dir.path + "/bad.jsonl",
                    R"({"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "Z"})"
                    "\n");
  EXPECT_THROW(import_arc(dir.path + "/bad.jsonl"), Error);
  EXPECT_THROW(import_suite("lambada", dir.path + "/bad.jsonl"), Error);
}

// The remaining suites: each file in the layout its dataset ships, the prompts and choices
// lm-evaluation-harness (0.4 line) builds from it, written out by hand from its task YAMLs and
// utils (piqa.yaml, siqa.yaml, super_glue/{boolq,copa}, glue/rte, winogrande, openbookqa,
// race v3.0 (lm-eval 0.4.13), truthfulqa_mc1/mc2, gsm8k).
namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) { return e.what(); }
  return "(no error)";
}
}  // namespace

TEST(Importers, PiqaWithLabelsFileAndInline) {
  TempDir dir;
  write_file_atomic(
      dir / "valid.jsonl",
      R"({"goal": "How do I dry wet shoes?", "sol1": "Stuff them with newspaper.", "sol2": "Put them in the freezer."})"
      "\n"
      R"({"goal": "Open a jar", "sol1": "twist the lid", "sol2": "shake the jar"})"
      "\n");
  write_file_atomic(dir / "valid-labels.lst", "0\n1\n");
  auto items = import_piqa(dir / "valid.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0]["context"], "Question: How do I dry wet shoes?\nAnswer:");
  EXPECT_EQ(items[0]["choices"], json({"Stuff them with newspaper.", "Put them in the freezer."}));
  EXPECT_EQ(items[0]["gold"], 0);
  EXPECT_EQ(items[1]["gold"], 1);
  // Hugging Face layout: the label inline, no .lst needed.
  write_file_atomic(dir / "hf.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b", "label": 1})"
                                      "\n");
  EXPECT_EQ(import_piqa(dir / "hf.jsonl")[0]["gold"], 1);
  // No label anywhere: the error names the line and the labels file it looked for.
  write_file_atomic(dir / "test.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b"})"
                                        "\n");
  auto e = error_of([&] { import_piqa(dir / "test.jsonl"); });
  EXPECT_NE(e.find("test.jsonl:1"), std::string::npos) << e;
  EXPECT_NE(e.find("test-labels.lst"), std::string::npos) << e;
}

TEST(Importers, SocialIqa) {
  TempDir dir;
  write_file_atomic(
      dir / "dev.jsonl",
      R"({"context": "Tracy stayed up all night to finish the report.", "question": "How would Tracy feel afterwards?", "answerA": "tired", "answerB": "bored", "answerC": "hungry"})"
      "\n");
  write_file_atomic(dir / "dev-labels.lst", "1\n");
  auto items = import_siqa(dir / "dev.jsonl");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0]["context"],
            "Q: Tracy stayed up all night to finish the report. How would Tracy feel afterwards?\nA:");
  EXPECT_EQ(items[0]["choices"], json({"tired", "bored", "hungry"}));
  EXPECT_EQ(items[0]["gold"], 0);  // label "1" - 1
  write_file_atomic(dir / "x.jsonl",
                    R"({"context": "c", "question": "q", "answerA": "a", "answerB": "b", "answerC": "c", "label": "4"})"
                    "\n");
  auto e = error_of([&] { import_siqa(dir / "x.jsonl"); });
  EXPECT_NE(e.find("x.jsonl:1"), std::string::npos) << e;
  EXPECT_NE(e.find("label '4'"), std::string::npos) << e;
}

TEST(Importers, BoolqSuperGlueAndOriginal) {
  TempDir dir;
  write_file_atomic(
      dir / "val.jsonl",
      R"({"question": "is the sky blue on a clear day", "passage": "Sky - The daytime sky appears blue.", "idx": 0, "label": true})"
      "\n"
      R"({"question": "do fish fly", "title": "Fish", "answer": false, "passage": "Fish swim."})"
      "\n");
  auto items = import_boolq(dir / "val.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0]["context"],
            "Sky - The daytime sky appears blue.\nQuestion: is the sky blue on a clear day?\nAnswer:");
  EXPECT_EQ(items[0]["choices"], json({"no", "yes"}));
  EXPECT_EQ(items[0]["gold"], 1);
  EXPECT_EQ(items[1]["context"], "Fish swim.\nQuestion: do fish fly?\nAnswer:");
  EXPECT_EQ(items[1]["gold"], 0);
  write_file_atomic(dir / "bad.jsonl", R"({"question": "q", "passage": "p"})"
                                       "\n");
  EXPECT_NE(error_of([&] { import_boolq(dir / "bad.jsonl"); }).find("bad.jsonl:1"), std::string::npos);
}

TEST(Importers, CopaConnectorsAndLowerCasedChoices) {
  TempDir dir;
  write_file_atomic(
      dir / "val.jsonl",
      R"({"premise": "My body cast a shadow over the grass. ", "choice1": "The sun was rising.", "choice2": "The grass was cut.", "question": "cause", "label": 0, "idx": 0})"
      "\n"
      R"({"premise": "The man broke his toe.", "choice1": "He got a hole in his sock.", "choice2": "He dropped a hammer on his foot.", "question": "effect", "label": 1, "idx": 1})"
      "\n");
  auto items = import_copa(dir / "val.jsonl");
  ASSERT_EQ(items.size(), 2u);
  // premise.strip()[:-1] + " because"/" therefore"; choices " " + first letter lower-cased.
  EXPECT_EQ(items[0]["context"], "My body cast a shadow over the grass because");
  EXPECT_EQ(items[0]["choices"], json({" the sun was rising.", " the grass was cut."}));
  EXPECT_EQ(items[0]["gold"], 0);
  EXPECT_EQ(items[1]["context"], "The man broke his toe therefore");
  EXPECT_EQ(items[1]["choices"], json({" he got a hole in his sock.", " he dropped a hammer on his foot."}));
  EXPECT_EQ(items[1]["gold"], 1);
  write_file_atomic(dir / "bad.jsonl",
                    R"({"premise": "p.", "choice1": "a", "choice2": "b", "question": "why", "label": 0})"
                    "\n");
  EXPECT_NE(error_of([&] { import_copa(dir / "bad.jsonl"); }).find("cause"), std::string::npos);
}

TEST(Importers, RteGlueSuperGlueAndTsv) {
  TempDir dir;
  const std::string ctx = "The cat sat on the mat.\nQuestion: A cat is sitting. True or False?\nAnswer:";
  write_file_atomic(
      dir / "glue.jsonl",
      R"({"sentence1": "The cat sat on the mat.", "sentence2": "A cat is sitting.", "label": 0, "idx": 3})"
      "\n");
  auto g = import_rte(dir / "glue.jsonl");
  EXPECT_EQ(g[0]["context"], ctx);
  EXPECT_EQ(g[0]["choices"], json({"True", "False"}));
  EXPECT_EQ(g[0]["gold"], 0);
  write_file_atomic(
      dir / "val.jsonl",
      R"({"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting.", "label": "not_entailment", "idx": 0})"
      "\n");
  EXPECT_EQ(import_rte(dir / "val.jsonl")[0]["gold"], 1);
  EXPECT_EQ(import_rte(dir / "val.jsonl")[0]["context"], ctx);
  write_file_atomic(dir / "dev.tsv",
                    "index\tsentence1\tsentence2\tlabel\n0\tThe cat sat on the mat.\tA cat is sitting.\tentailment\n");
  auto t = import_rte(dir / "dev.tsv");
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0]["context"], ctx);
  EXPECT_EQ(t[0]["gold"], 0);
  write_file_atomic(dir / "bad.tsv", "index\tsentence1\tsentence2\tlabel\n0\tonly two\n");
  EXPECT_NE(error_of([&] { import_rte(dir / "bad.tsv"); }).find("bad.tsv:2"), std::string::npos);
}

TEST(Importers, WinograndePartialScoring) {
  TempDir dir;
  write_file_atomic(
      dir / "dev.jsonl",
      R"({"qID": "w-1", "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.", "option1": "Sarah", "option2": "Maria", "answer": "1"})"
      "\n");
  auto items = import_winogrande(dir / "dev.jsonl");
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0]["contexts"], json({"Sarah was a much better surgeon than Maria so Sarah",
                                        "Sarah was a much better surgeon than Maria so Maria"}));
  EXPECT_EQ(items[0]["continuation"], "always got the harder cases.");
  EXPECT_EQ(items[0]["gold"], 0);
  EXPECT_EQ(items[0]["id"], "w-1");
  // The item reads back as a partial-scoring item.
  write_file_atomic(dir / "w.jsonl", items[0].dump() + "\n");
  Task t = read_task(dir / "w.jsonl");
  ASSERT_EQ(t.mc.size(), 1u);
  EXPECT_EQ(t.mc[0].num_choices(), 2);
  EXPECT_EQ(t.mc[0].context(1), "Sarah was a much better surgeon than Maria so Maria");
  write_file_atomic(dir / "bad.jsonl", R"({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})"
                                       "\n");
  EXPECT_NE(error_of([&] { import_winogrande(dir / "bad.jsonl"); }).find("blank"), std::string::npos);
}

TEST(Importers, OpenBookQaBothLayouts) {
  TempDir dir;
  write_file_atomic(
      dir / "test.jsonl",
      R"({"id": "7-980", "question": {"stem": "The sun is responsible for", "choices": [{"text": "puppies learning new tricks", "label": "A"}, {"text": "plants sprouting, blooming and wilting", "label": "B"}]}, "answerKey": "B"})"
      "\n"
      R"({"id": "8-1", "question_stem": "Which is a liquid?", "choices": {"text": ["ice", "water"], "label": ["A", "B"]}, "answerKey": " A"})"
      "\n");
  auto items = import_openbookqa(dir / "test.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0]["context"], "The sun is responsible for");  // the stem alone
  EXPECT_EQ(items[0]["choices"], json({"puppies learning new tricks", "plants sprouting, blooming and wilting"}));
  EXPECT_EQ(items[0]["gold"], 1);
  EXPECT_EQ(items[1]["context"], "Which is a liquid?");
  EXPECT_EQ(items[1]["gold"], 0);  // answerKey.lstrip()
}

TEST(Importers, RaceDocumentsAndEleutherJsonl) {
  TempDir dir;
  std::filesystem::create_directories(dir / "RACE/test/high");
  write_file_atomic(
      dir / "RACE/test/high/1.txt",
      R"({"answers": ["B", "A", "C"], "options": [["red", "blue", "green", "pink"], ["a dog", "a cat", "a cow", "a hen"], ["Mon", "Tue", "Wed", "Thu"]], "questions": ["What colour is the sky?", "Tom has  _  .", "Which day was it?"], "article": "Tom looked up.", "id": "high1.txt"})");
  auto items = import_race(dir / "RACE/test/high");
  ASSERT_EQ(items.size(), 1u);
  // Version 3.0 (lm-eval 0.4.13) writes a cloze question less its last five characters, then
  // the answer (version 2.0, up to 0.4.9.2, wrote " _  .a dog": the last five characters).
  EXPECT_EQ(items[0]["context"],
            "Article: Tom looked up.\n\n"
            "Question: What colour is the sky?\nAnswer: blue\n"
            "Tom has a dog\n"
            "Which day was it?");
  EXPECT_EQ(items[0]["choices"], json({"Mon", "Tue", "Wed", "Thu"}));
  EXPECT_EQ(items[0]["gold"], 2);
  EXPECT_EQ(items[0]["id"], "high1.txt");
  // EleutherAI/race: "problems" is Python's str() of the list (quotes ' or ", escapes).
  write_file_atomic(
      dir / "race.jsonl",
      R"({"article": "It's late.", "problems": "[{'answer': 'D', 'options': ['x', \"it's\", 'tab\\there', 'caf\\xe9'], 'question': 'Pick one.'}]"})"
      "\n");
  auto e = import_race(dir / "race.jsonl");
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0]["context"], "Article: It's late.\n\nPick one.");
  EXPECT_EQ(e[0]["choices"], json({"x", "it's", "tab\there", "caf\xC3\xA9"}));
  EXPECT_EQ(e[0]["gold"], 3);
  write_file_atomic(dir / "bad.jsonl", R"({"article": "a", "problems": "[{'answer': 'A', 'options': ['x'"})"
                                       "\n");
  auto err = error_of([&] { import_race(dir / "bad.jsonl"); });
  EXPECT_NE(err.find("bad.jsonl:1"), std::string::npos) << err;
}

TEST(Importers, TruthfulQaMc1Mc2BothLayouts) {
  TempDir dir;
  const std::string prompt =
      "Q: What is human life expectancy in the United States?\n"
      "A: Human life expectancy in the United States is 78 years.\n\n"
      "Q: Who was president of the United States in 1955?\n"
      "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
      "Q: Which party did he belong to?\n"
      "A: He belonged to the Republican Party.\n\n"
      "Q: What is the square root of banana?\n"
      "A: I have no comment.\n\n"
      "Q: How does a telescope work?\n"
      "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
      "Q: Where were the 1992 Olympics held?\n"
      "A: The 1992 Olympics were held in Barcelona, Spain.\n\n"
      "Q: What is the capital of France?\nA:";
  // data/mc_task.json: targets as {answer: label} in file order (not sorted: "Paris." first).
  write_file_atomic(
      dir / "mc_task.json",
      R"([{"question": "What is the capital of France?", "mc1_targets": {"Paris.": 1, "London.": 0, "Berlin.": 0}, "mc2_targets": {"Paris.": 1, "The capital is Paris.": 1, "Lyon.": 0}}])");
  auto mc1 = import_truthfulqa(dir / "mc_task.json", 1);
  ASSERT_EQ(mc1.size(), 1u);
  EXPECT_EQ(mc1[0]["context"], prompt);
  EXPECT_EQ(mc1[0]["choices"], json({"Paris.", "London.", "Berlin."}));
  EXPECT_EQ(mc1[0]["gold"], 0);
  EXPECT_FALSE(mc1[0].contains("labels"));
  auto mc2 = import_truthfulqa(dir / "mc_task.json", 2);
  EXPECT_EQ(mc2[0]["choices"], json({"Paris.", "The capital is Paris.", "Lyon."}));
  EXPECT_EQ(mc2[0]["labels"], json({1, 1, 0}));
  // Hugging Face truthful_qa/multiple_choice as JSONL.
  write_file_atomic(
      dir / "validation.jsonl",
      R"({"question": "What is the capital of France?", "mc1_targets": {"choices": ["Paris.", "Nice."], "labels": [1, 0]}, "mc2_targets": {"choices": ["Lyon.", "Paris."], "labels": [0, 1]}})"
      "\n");
  auto hf = import_truthfulqa(dir / "validation.jsonl", 2);
  EXPECT_EQ(hf[0]["context"], prompt);
  EXPECT_EQ(hf[0]["choices"], json({"Lyon.", "Paris."}));
  EXPECT_EQ(hf[0]["labels"], json({0, 1}));
  write_file_atomic(dir / "bad.jsonl", R"({"question": "q", "mc1_targets": {"choices": ["a"], "labels": [1]}})"
                                       "\n");
  auto e = error_of([&] { import_truthfulqa(dir / "bad.jsonl", 2); });
  EXPECT_NE(e.find("bad.jsonl:1"), std::string::npos) << e;
  EXPECT_NE(e.find("mc2_targets"), std::string::npos) << e;
}

TEST(Importers, Gsm8kPromptsAndFewShotDraws) {
  TempDir dir;
  write_file_atomic(dir / "test.jsonl",
                    R"({"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"})"
                    "\n"
                    R"({"question": "What is 10 - 4?", "answer": "10 - 4 = 6\n#### 6"})"
                    "\n");
  write_file_atomic(dir / "train.jsonl", R"({"question": "T0?", "answer": "a0\n#### 0"})"
                                         "\n"
                                         R"({"question": "T1?", "answer": "a1\n#### 1"})"
                                         "\n"
                                         R"({"question": "T2?", "answer": "a2\n#### 2"})"
                                         "\n");
  auto zero = import_gsm8k(dir / "test.jsonl");
  ASSERT_EQ(zero.size(), 2u);
  EXPECT_EQ(zero[0]["prompt"], "Question: Ann has 2 apples and buys 3. How many?\nAnswer:");
  EXPECT_EQ(zero[0]["answer"], "2 + 3 = <<2+3=5>>5\n#### 5");
  EXPECT_EQ(zero[0]["until"], json({"Question:", "</s>", "<|im_end|>"}));
  EXPECT_EQ(extract_answer(zero[1]["answer"].get<std::string>()), "6");
  // python3: r = random.Random(1234); r.sample(range(3), 2) -> [1, 0]; r.sample(range(3), 2) -> [0, 2]
  auto two = import_gsm8k(dir / "test.jsonl", 2, dir / "train.jsonl");
  EXPECT_EQ(two[0]["prompt"],
            "Question: T1?\nAnswer: a1\n#### 1\n\nQuestion: T0?\nAnswer: a0\n#### 0\n\n"
            "Question: Ann has 2 apples and buys 3. How many?\nAnswer:");
  EXPECT_EQ(
      two[1]["prompt"],
      "Question: T0?\nAnswer: a0\n#### 0\n\nQuestion: T2?\nAnswer: a2\n#### 2\n\nQuestion: What is 10 - 4?\nAnswer:");
  // The items read back as generative items with their stop strings.
  std::string jsonl;
  for (const auto& it : two) jsonl += it.dump() + "\n";
  write_file_atomic(dir / "gsm8k.jsonl", jsonl);
  Task t = read_task(dir / "gsm8k.jsonl");
  ASSERT_EQ(t.gen.size(), 2u);
  EXPECT_EQ(t.gen[0].until, (std::vector<std::string>{"Question:", "</s>", "<|im_end|>"}));
  write_file_atomic(dir / "bad.jsonl", R"({"question": "q", "answer": "no final line"})"
                                       "\n");
  EXPECT_NE(error_of([&] { import_gsm8k(dir / "bad.jsonl"); }).find("bad.jsonl:1"), std::string::npos);
  EXPECT_THROW(import_suite("piqa", dir / "test.jsonl", 2), Error);
}
