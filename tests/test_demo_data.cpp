// The embedded study's data: deterministic, readable by flatune's own readers, suites held out.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/data/dataset.h"
#include "flatune/demo/demo_data.h"
#include "flatune/eval/tasks.h"
#include "flatune/text/tokenizer.h"
#include "test_util.h"

using namespace flatune;
using flatune::testing::TempDir;

namespace {
const char* kWordnet = "/usr/share/wordnet";
DemoDataOptions small() {
  DemoDataOptions o;
  o.nouns = 300;
  o.glosses = 2000;
  o.antonyms = 100;
  o.suite_items = 40;
  o.target_train = 200;
  o.target_test = 20;
  o.instructions = 200;
  o.vocab_size = 600;
  return o;
}
}  // namespace

TEST(DemoData, DeterministicParsableAndHeldOut) {
  if (!file_exists(std::string(kWordnet) + "/data.noun")) GTEST_SKIP() << "wordnet-base not installed";
  TempDir a, b;
  auto pa = build_demo_data(small(), kWordnet, a / "d");
  auto pb = build_demo_data(small(), kWordnet, b / "d");
  for (const auto& [x, y] :
       std::vector<std::pair<std::string, std::string>>{{pa.corpus, pb.corpus},
                                                        {pa.general_instructions, pb.general_instructions},
                                                        {pa.target_math, pb.target_math},
                                                        {pa.suites[0], pb.suites[0]},
                                                        {pa.test_chat, pb.test_chat}})
    EXPECT_EQ(read_file(x), read_file(y)) << x;
  // Another seed gives other data.
  DemoDataOptions other = small();
  other.seed = 2;
  auto pc = build_demo_data(other, kWordnet, a / "other");
  EXPECT_NE(read_file(pa.suites[0]), read_file(pc.suites[0]));

  // Every file parses with flatune's readers.
  EXPECT_EQ(read_conversations(pa.general_instructions, "alpaca").size(), 200u);
  EXPECT_EQ(read_conversations(pa.target_math, "metamath").size(), 200u);
  EXPECT_EQ(read_conversations(pa.target_stem, "alpaca").size(), 200u);
  auto chat = read_conversations(pa.target_chat, "sharegpt");
  EXPECT_EQ(chat[0].turns.size(), 4u);
  for (const auto& t : {pa.test_math, pa.test_stem, pa.test_chat}) EXPECT_EQ(read_task(t).gen.size(), 20u);

  // Suites: answerable from the corpus, phrased as no training file phrases anything.
  const std::string corpus = read_file(pa.corpus);
  std::string training = corpus + read_file(pa.general_instructions) + read_file(pa.target_math) +
                         read_file(pa.target_stem) + read_file(pa.target_chat);
  for (const auto& suite : pa.suites) {
    Task t = read_task(suite);
    EXPECT_EQ(t.mc.size(), 40u);
    for (const auto& item : t.mc) {
      EXPECT_EQ(training.find(item.contexts[0]), std::string::npos) << item.contexts[0];
      EXPECT_LT(item.gold, item.num_choices());
    }
  }
  // The knowledge suite's answers are stated in the corpus: some line names the noun and its
  // category ("q: what is a w? a: the w is one kind of" -> h).
  std::vector<std::string> lines;
  for (size_t at = 0, nl; at < corpus.size(); at = nl + 1) {
    nl = corpus.find('\n', at);
    lines.push_back(" " + corpus.substr(at, nl - at) + " ");
  }
  auto stated = [&](const std::string& a, const std::string& b) {
    for (const auto& l : lines)
      if (l.find(" " + a + " ") != std::string::npos &&
          (l.find(" " + b + ".") != std::string::npos || l.find(" " + b + " ") != std::string::npos ||
           l.find(" " + b + ",") != std::string::npos || l.find(" " + b + "s") != std::string::npos))
        return true;
    return false;
  };
  for (const auto& item : read_task(pa.suites[0]).mc) {
    std::string w = item.contexts[0].substr(std::string("q: what is ").size());
    w = w.substr(w.find(' ') + 1);  // past the article
    w = w.substr(0, w.find('?'));
    EXPECT_TRUE(stated(w, item.choices[item.gold])) << w << " -> " << item.choices[item.gold];
  }
  // Every item has four distinct choices; the antonym suite's answers are stated too.
  for (const auto& suite : pa.suites)
    for (const auto& item : read_task(suite).mc) {
      std::set<std::string> distinct(item.choices.begin(), item.choices.end());
      EXPECT_EQ(distinct.size(), 4u) << item.id;
    }
  for (const auto& item : read_task(pa.suites[3]).mc) {
    std::string x = item.contexts[0].substr(std::string("q: which word means the opposite of ").size());
    x = x.substr(0, x.find('?'));
    EXPECT_TRUE(stated(x, item.choices[item.gold])) << x;
  }
  // Target tests are disjoint from their training sets.
  for (const auto& [train, test] : std::vector<std::pair<std::string, std::string>>{{pa.target_math, pa.test_math},
                                                                                    {pa.target_stem, pa.test_stem}}) {
    std::string tr = read_file(train);
    for (const auto& g : read_task(test).gen) EXPECT_EQ(tr.find("\"" + g.prompt + "\""), std::string::npos) << g.prompt;
  }
  // The tokenizer loads and shortens the corpus below one token per byte.
  auto tok = load_tokenizer(pa.tokenizer_dir);
  EXPECT_EQ(tok->kind(), "sentencepiece");
  std::string sample = corpus.substr(0, 20000);
  EXPECT_LT(tok->encode(sample, false).size() * 1.5, sample.size());  // a 600-piece vocabulary here
  EXPECT_EQ(tok->decode(tok->encode("what is a cat?\n\n### Response:", false)), "what is a cat?\n\n### Response:");
  EXPECT_THROW(build_demo_data(small(), "/nonexistent/wordnet", a / "x"), Error);
}

// The default study's suites: 1,000 items each, four distinct choices, and the reasoning suite
// never offers the premise's own category (the answer must be the category's category).
TEST(DemoData, DefaultSuitesHaveAThousandItemsAndReasoningExcludesThePremise) {
  if (!file_exists(std::string(kWordnet) + "/data.noun")) GTEST_SKIP() << "wordnet-base not installed";
  TempDir a;
  auto p = build_demo_data(DemoDataOptions{}, kWordnet, a / "d");
  for (const auto& suite : p.suites) EXPECT_EQ(read_task(suite).mc.size(), 1000u) << suite;
  for (const auto& item : read_task(p.suites[1]).mc) {
    // "q: if every W is one kind of H, what else is it? a: …"
    const std::string& c = item.contexts[0];
    const size_t at = c.find(" is one kind of ") + std::string(" is one kind of ").size();
    const std::string premise = c.substr(at, c.find(',', at) - at);
    for (const auto& choice : item.choices) EXPECT_NE(choice, premise) << c;
  }
}
