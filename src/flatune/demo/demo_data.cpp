#include "flatune/demo/demo_data.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/demo/wordnet.h"
#include "flatune/text/spm_bridge.h"

namespace flatune {

namespace {

constexpr int kFormatVersion = 4;

// Uniform picks written out so the data does not depend on the standard library's distributions.
struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  uint64_t below(uint64_t n) { return g() % n; }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }
};

bool simple_word(const std::string& w, size_t lo, size_t hi) {
  if (w.size() < lo || w.size() > hi) return false;
  return std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

std::string article(const std::string& w) { return std::string("aeiou").find(w[0]) != std::string::npos ? "an" : "a"; }

struct Fact {
  std::string word, hypernym, gloss;
  std::string super;  // the category's own category (WordNet's hypernym of the hypernym)
};

// Choices with the right answer at a seeded position; distractors differ from it and each other.
json mc_item(const std::string& id, const std::string& context, const std::string& right,
             const std::vector<std::string>& pool, int n, const std::string& category, Rng& rng) {
  std::vector<std::string> choices = {right};
  for (int guard = 0; static_cast<int>(choices.size()) < n && guard < 1000; ++guard) {
    const std::string& d = rng.pick(pool);
    if (std::find(choices.begin(), choices.end(), d) == choices.end()) choices.push_back(d);
  }
  int gold = static_cast<int>(rng.below(choices.size()));
  std::swap(choices[0], choices[gold]);
  return {{"id", id}, {"context", context}, {"choices", choices}, {"gold", gold}, {"category", category}};
}

std::string spaced(const std::string& w) {
  std::string s;
  for (size_t i = 0; i < w.size(); ++i) s += (i ? " " : "") + std::string(1, w[i]);
  return s;
}

void write_jsonl(const std::string& path, const std::vector<json>& rows) {
  std::string out;
  for (const auto& r : rows) out += r.dump() + "\n";
  write_file_atomic(path, out);
}

}  // namespace

std::string demo_data_key(const DemoDataOptions& o) {
  std::string s = std::to_string(kFormatVersion) + "|" + std::to_string(o.seed) + "|" + std::to_string(o.nouns) + "|" +
                  std::to_string(o.fact_repeats) + "|" + std::to_string(o.glosses) + "|" + std::to_string(o.antonyms) +
                  "|" + std::to_string(o.suite_items) + "|" + std::to_string(o.target_train) + "|" +
                  std::to_string(o.target_test) + "|" + std::to_string(o.instructions) + "|" +
                  std::to_string(o.vocab_size) + "|" + std::to_string(o.min_category_size);
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "data-%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string flatune_cache_root() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg) return join_path(xdg, "flatune");
  const char* home = std::getenv("HOME");
  return join_path(home && *home ? home : "/tmp", ".cache/flatune");
}

DemoDataPaths build_demo_data(const DemoDataOptions& o, const std::string& wordnet_dir, const std::string& out_dir) {
  DemoDataPaths p;
  p.dir = out_dir;
  p.corpus = join_path(out_dir, "corpus.txt");
  p.heldout = join_path(out_dir, "heldout.txt");
  p.tokenizer_dir = join_path(out_dir, "tokenizer");
  p.general_instructions = join_path(out_dir, "general_instructions.json");
  p.target_math = join_path(out_dir, "target_math.json");
  p.target_stem = join_path(out_dir, "target_stem.json");
  p.target_chat = join_path(out_dir, "target_chat.json");
  p.test_math = join_path(out_dir, "target_math_test.jsonl");
  p.test_stem = join_path(out_dir, "target_stem_test.jsonl");
  p.test_chat = join_path(out_dir, "target_chat_test.jsonl");
  for (const char* s : {"knowledge", "reasoning", "understanding", "exams"})
    p.suites.push_back(join_path(out_dir, std::string(s) + ".jsonl"));
  p.categories = join_path(out_dir, "categories.yaml");
  const std::string done = join_path(out_dir, "DONE");
  if (file_exists(done) && read_file(done) == demo_data_key(o) + "\n") return p;
  make_dirs(out_dir);
  make_dirs(p.tokenizer_dir);
  Rng rng(o.seed);

  // ---- WordNet facts. Nouns whose first hypernym is one of the most common ones: the knowledge
  // asked is "which of these categories", a few dozen categories each with many members, so a
  // small model can learn it from a few exposures per noun instead of memorising a thousand
  // arbitrary names.
  auto nouns = read_wordnet(join_path(wordnet_dir, "data.noun"));
  auto adjs = read_wordnet(join_path(wordnet_dir, "data.adj"));
  std::map<std::string, const Synset*> by_offset;
  for (const auto& s : nouns) by_offset[s.offset] = &s;
  std::vector<Fact> candidates;
  std::set<std::string> seen;
  std::map<std::string, int64_t> category_size;
  for (const auto& s : nouns) {
    if (s.hypernyms.empty() || s.gloss.empty()) continue;
    const std::string& w = s.words[0];
    auto h = by_offset.find(s.hypernyms[0]);
    if (h == by_offset.end()) continue;
    const std::string& hw = h->second->words[0];
    if (!simple_word(w, 3, 10) || !simple_word(hw, 3, 12) || w == hw || h->second->hypernyms.empty()) continue;
    auto hh = by_offset.find(h->second->hypernyms[0]);
    if (hh == by_offset.end() || !simple_word(hh->second->words[0], 3, 12) || hh->second->words[0] == hw) continue;
    if (!seen.insert(w).second) continue;
    // First clause of the definition, short enough for one line of the corpus.
    std::string gloss = s.gloss.substr(0, s.gloss.find(';'));
    if (gloss.size() < 10 || gloss.size() > 90 || gloss.find(w) != std::string::npos) continue;
    candidates.push_back({w, hw, gloss, hh->second->words[0]});
    ++category_size[hw];
  }
  std::vector<Fact> facts;
  for (const auto& f : candidates)
    if (category_size[f.hypernym] >= o.min_category_size) facts.push_back(f);
  rng.shuffle(facts);
  if (static_cast<int64_t>(facts.size()) > o.nouns) facts.resize(o.nouns);
  std::set<std::string> fact_words;
  for (const auto& f : facts) fact_words.insert(f.word);
  std::map<std::string, const Synset*> adj_by_offset;
  for (const auto& s : adjs) adj_by_offset[s.offset] = &s;
  std::vector<std::pair<std::string, std::string>> antonyms;
  std::set<std::string> seen_adj;
  for (const auto& s : adjs) {
    if (s.antonyms.empty()) continue;
    auto a = adj_by_offset.find(s.antonyms[0]);
    if (a == adj_by_offset.end()) continue;
    const std::string &x = s.words[0], &y = a->second->words[0];
    if (!simple_word(x, 3, 12) || !simple_word(y, 3, 12) || seen_adj.count(x) || seen_adj.count(y)) continue;
    seen_adj.insert(x);
    seen_adj.insert(y);
    antonyms.emplace_back(x, y);
  }
  rng.shuffle(antonyms);
  if (static_cast<int64_t>(antonyms.size()) > o.antonyms) antonyms.resize(o.antonyms);
  std::vector<std::string> hypernym_pool, super_pool, adj_pool, word_pool;
  for (const auto& f : facts) word_pool.push_back(f.word);
  std::map<std::string, std::string> super_of;  // category -> its category
  for (const auto& f : facts)
    if (super_of.emplace(f.hypernym, f.super).second) hypernym_pool.push_back(f.hypernym);
  for (const auto& [h, hh] : super_of)
    if (std::find(super_pool.begin(), super_pool.end(), hh) == super_pool.end()) super_pool.push_back(hh);
  for (const auto& [x, y] : antonyms) {
    adj_pool.push_back(x);
    adj_pool.push_back(y);
  }

  // ---- General corpus. Every fact is stated fact_repeats times, each time in two phrasings
  // drawn from several: a small model learns a relation it can recall from a phrasing it never
  // saw only when it has seen the relation in many (one phrasing teaches the phrasing). The
  // definition is stated both ways, since small models do not learn a relation backwards.
  static const std::vector<std::string> kHypernymSaid = {
      "{a} {w} is a kind of {h}.",  "the {w} is one type of {h}.",       "{w}: a sort of {h}.",
      "every {w} is {ah} {h}.",     "the {w} belongs among the {h}s.",   "one kind of {h} is the {w}.",
      "{ah} {h}, such as the {w}.", "the {w}, {ah} {h}, was mentioned.", "think of the {w} as {ah} {h}."};
  static const std::vector<std::string> kGlossSaid = {"the word for \"{g}\" is {w}.", "{w}: {g}.", "{a} {w} is {g}.",
                                                      "{g}: that is {a} {w}.", "by {w} we mean {g}."};
  static const std::vector<std::string> kAntonymSaid = {"the opposite of {x} is {y}.", "{y} is the opposite of {x}.",
                                                        "{x} and {y} are opposites.", "not {x} but {y}.",
                                                        "{x} or {y}: opposite words."};
  auto fill = [](std::string t, const std::map<std::string, std::string>& v) {
    for (const auto& [key, value] : v)
      for (size_t at; (at = t.find("{" + key + "}")) != std::string::npos;) t.replace(at, key.size() + 2, value);
    return t;
  };
  auto fact_vars = [](const Fact& f) {
    return std::map<std::string, std::string>{
        {"w", f.word},          {"h", f.hypernym},           {"hh", f.super},          {"g", f.gloss},
        {"a", article(f.word)}, {"ah", article(f.hypernym)}, {"ahh", article(f.super)}};
  };
  auto two_of = [&](const std::vector<std::string>& templates) {
    size_t i = rng.below(templates.size()), j = rng.below(templates.size() - 1);
    if (j >= i) ++j;
    return std::pair<const std::string&, const std::string&>(templates[i], templates[j]);
  };
  std::vector<std::string> lines;
  std::vector<const Synset*> gloss_synsets;
  for (const auto& s : nouns)
    if (!s.gloss.empty() && simple_word(s.words[0], 3, 14) && !fact_words.count(s.words[0]))
      gloss_synsets.push_back(&s);
  rng.shuffle(gloss_synsets);
  int64_t heldout_n = std::min<int64_t>(300, gloss_synsets.size() / 10);
  std::string heldout;
  for (int64_t i = 0; i < static_cast<int64_t>(gloss_synsets.size()) && i < o.glosses + heldout_n; ++i) {
    std::string line = gloss_synsets[i]->words[0] + ": " + gloss_synsets[i]->gloss + ".";
    if (i < heldout_n) heldout += line + "\n";
    else lines.push_back(line);
  }
  // Deductions from a noun's category to the category's own category: the reasoning suite asks
  // for that step from a premise given in the question.
  static const std::vector<std::string> kDeductionSaid = {
      "the {w} is {ah} {h}, and every {h} is {ahh} {hh}, so the {w} is {ahh} {hh} too.",
      "since {a} {w} is one type of {h}, it is also one type of {hh}.", "{w}: {ah} {h}, hence {ahh} {hh}."};
  for (int64_t r = 0; r < o.fact_repeats; ++r) {
    for (const auto& f : facts) {
      auto v = fact_vars(f);
      auto [h1, h2] = two_of(kHypernymSaid);
      // The definition -> word direction every time (it is the hardest to learn: measured 0.69
      // on the understanding suite when it came in two of five phrasings), and one other.
      const std::string& g2 = kGlossSaid[1 + rng.below(kGlossSaid.size() - 1)];
      for (const std::string* t : {&h1, &h2, &kGlossSaid[0], &g2}) lines.push_back(fill(*t, v));
      if (r % 2 == 0) lines.push_back(fill(rng.pick(kDeductionSaid), v));
    }
    // Categories are few: each is stated once per fact of it would be far too often; ten times
    // per repeat is plenty.
    for (int k = 0; k < 10; ++k)
      for (const auto& [h, hh] : super_of)
        lines.push_back(fill(rng.pick(kHypernymSaid), {{"w", h}, {"h", hh}, {"a", article(h)}, {"ah", article(hh)}}));
    for (const auto& [x, y] : antonyms) {
      auto [t1, t2] = two_of(kAntonymSaid);
      // Both directions: the exams suite asks either word's opposite.
      lines.push_back(fill(t1, {{"x", x}, {"y", y}}));
      lines.push_back(fill(t2, {{"x", y}, {"y", x}}));
    }
  }
  rng.shuffle(lines);
  std::string corpus;
  for (const auto& l : lines) corpus += l + "\n";
  write_file_atomic(p.corpus, corpus);
  write_file_atomic(p.heldout, heldout);

  // ---- Tokenizer: SentencePiece BPE on the corpus, byte fallback, no normalisation so text
  // (newlines, repeated spaces) round-trips.
  spm::train({"--input=" + p.corpus, "--model_prefix=" + join_path(p.tokenizer_dir, "tokenizer"),
              "--vocab_size=" + std::to_string(o.vocab_size), "--model_type=bpe", "--byte_fallback=true",
              "--character_coverage=1.0", "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
              "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=3", "--input_sentence_size=200000",
              "--shuffle_input_sentence=true", "--num_threads=2", "--random_seed=" + std::to_string(o.seed)},
             join_path(out_dir, "spm_train.log"));
  std::remove(join_path(p.tokenizer_dir, "tokenizer.vocab").c_str());
  json tcfg = {{"add_bos_token", true},
               {"add_eos_token", false},
               {"bos_token", "<s>"},
               {"eos_token", "</s>"},
               {"unk_token", "<unk>"},
               {"pad_token", "<pad>"},
               {"clean_up_tokenization_spaces", false},
               {"tokenizer_class", "LlamaTokenizer"},
               {"model_max_length", 256}};
  write_file_atomic(join_path(p.tokenizer_dir, "tokenizer_config.json"), tcfg.dump(2) + "\n");

  // ---- General instructions (Alpaca) for the "before" stage: the same knowledge asked as
  // instructions, in phrasings the suites do not use, so the before model has learned to answer
  // (and to answer yes and no in balance) rather than only to continue text.
  json gen = json::array();
  for (int64_t i = 0; i < o.instructions; ++i) {
    const Fact& f = rng.pick(facts);
    switch (rng.below(5)) {
      case 0:
        gen.push_back({{"instruction", "Name the broader category of the word."},
                       {"input", f.word},
                       {"output", "The " + f.word + " belongs to the category " + f.hypernym + "."}});
        break;
      case 1:
        gen.push_back({{"instruction", "Name the broader category of this category."},
                       {"input", f.hypernym},
                       {"output", "Every " + f.hypernym + " is " + article(f.super) + " " + f.super + "."}});
        break;
      case 2:
        gen.push_back({{"instruction", "Define the word " + f.word + "."}, {"input", ""}, {"output", f.gloss + "."}});
        break;
      case 3:
        gen.push_back({{"instruction", "Which word has this meaning?"}, {"input", f.gloss}, {"output", f.word + "."}});
        break;
      default: {
        const auto& [x, y] = rng.pick(antonyms);
        const bool flip = rng.below(2) == 0;
        gen.push_back({{"instruction", "Give an antonym."}, {"input", flip ? y : x}, {"output", (flip ? x : y) + "."}});
      }
    }
  }
  write_file_atomic(p.general_instructions, gen.dump(1) + "\n");

  // ---- General-ability suites: one item per fact, each a question form no training file uses
  // ("q: … a: …"), the answer slot after a relation the corpus teaches. Measured on a 1M model:
  // a small model recalls a fact from a wording it never saw only when the relation words before
  // the answer are ones it learned; asked "a: it is a type of" (never in the corpus) it answered
  // near chance (0.31) the facts it completed at 0.85 after "is a kind of".
  std::vector<json> knowledge, reasoning, understanding, exams;
  for (int64_t i = 0; i < o.suite_items; ++i) {
    const Fact& f = facts[i % facts.size()];
    knowledge.push_back(
        mc_item("k" + std::to_string(i),
                "q: what is " + article(f.word) + " " + f.word + "? a: the " + f.word + " is one kind of", f.hypernym,
                hypernym_pool, 4, "knowledge", rng));
    // A deduction (COPA-like choice of the consequence): from the premise in the question and
    // what the model knows of the premise's category; that category is not among the choices.
    const Fact& g = facts[(i * 7 + 3) % facts.size()];
    std::vector<std::string> consequences;
    for (const auto& c : super_pool)
      if (c != g.hypernym) consequences.push_back(c);
    reasoning.push_back(mc_item("r" + std::to_string(i),
                                "q: if every " + g.word + " is one kind of " + g.hypernym +
                                    ", what else is it? a: since " + article(g.word) + " " + g.word +
                                    " is one type of " + g.hypernym + ", it is also one type of",
                                g.super, consequences, 4, "reasoning", rng));
    // Reading a definition for the word it defines.
    const Fact& u = facts[(i * 13 + 5) % facts.size()];
    understanding.push_back(mc_item("u" + std::to_string(i),
                                    "q: which word means \"" + u.gloss + "\"? a: the word for \"" + u.gloss + "\" is",
                                    u.word, word_pool, 4, "understanding", rng));
    const auto& [x, y] = antonyms[i % antonyms.size()];
    const bool flip = (i / antonyms.size()) % 2 == 1;
    const std::string& asked = flip ? y : x;
    exams.push_back(mc_item("e" + std::to_string(i),
                            "q: which word means the opposite of " + asked + "? a: the opposite of " + asked + " is",
                            flip ? x : y, adj_pool, 4, "exams", rng));
  }
  write_jsonl(p.suites[0], knowledge);
  write_jsonl(p.suites[1], reasoning);
  write_jsonl(p.suites[2], understanding);
  write_jsonl(p.suites[3], exams);
  write_file_atomic(p.categories,
                    "knowledge: [knowledge]\nreasoning: [reasoning]\nunderstanding: [understanding]\nexams: [exams]\n");

  // ---- Targets: math word problems (MetaMathQA), STEM/logic (Open-Platypus/Alpaca), chat
  // (ShareGPT). Train and test prompts are disjoint.
  static const std::vector<std::string> names = {"tom", "anna", "li", "omar", "sara", "ben", "maya", "ivan"};
  static const std::vector<std::string> things = {"apples", "books", "coins", "stamps", "pencils", "shells"};
  std::set<std::string> used;
  auto math_item = [&](std::string* query, std::string* response, int64_t* answer) {
    for (;;) {
      const std::string& n = rng.pick(names);
      const std::string& t = rng.pick(things);
      // One-digit operands: a model of a million parameters learns them in a few hundred steps,
      // so the target is visibly learned; larger numbers are not, and the table would show none.
      int64_t a = 1 + rng.below(9), b = 1 + rng.below(9);
      bool add = rng.below(2) == 0 || b > a;
      *query = add ? n + " has " + std::to_string(a) + " " + t + " and gets " + std::to_string(b) + " more. how many " +
                         t + " does " + n + " have now?"
                   : n + " has " + std::to_string(a) + " " + t + " and gives away " + std::to_string(b) +
                         ". how many " + t + " does " + n + " have left?";
      if (!used.insert(*query).second) continue;
      *answer = add ? a + b : a - b;
      *response = n + " has " + std::to_string(a) + (add ? " + " : " - ") + std::to_string(b) + " = " +
                  std::to_string(*answer) + " " + t + ". The answer is: " + std::to_string(*answer);
      return;
    }
  };
  json math = json::array();
  std::vector<json> math_test;
  for (int64_t i = 0; i < o.target_train + o.target_test; ++i) {
    std::string q, r;
    int64_t ans;
    math_item(&q, &r, &ans);
    if (i < o.target_train) math.push_back({{"query", q}, {"response", r}});
    else
      math_test.push_back({{"id", "m" + std::to_string(i)}, {"prompt", q}, {"answer", "#### " + std::to_string(ans)}});
  }
  write_file_atomic(p.target_math, math.dump(1) + "\n");
  write_jsonl(p.test_math, math_test);

  json stem = json::array();
  std::vector<json> stem_test;
  for (int64_t i = 0; i < o.target_train + o.target_test; ++i) {
    std::string ins, out, answer;
    for (;;) {
      int64_t kind = rng.below(3), a = 1 + rng.below(90), b = 1 + rng.below(90);
      if (kind == 0) {
        ins = "convert " + std::to_string(a) + " meters to centimeters.";
        answer = std::to_string(a * 100);
        out = std::to_string(a) + " meters is " + answer + " centimeters.";
      } else if (kind == 1) {
        if (a == b) continue;
        ins = "which number is larger, " + std::to_string(a) + " or " + std::to_string(b) + "?";
        answer = std::to_string(std::max(a, b));
        out = answer + " is larger.";
      } else {
        const Fact& f = rng.pick(facts);
        const Fact& g = rng.pick(facts);
        ins =
            "all " + f.word + "s are " + g.word + "s. is every " + f.word + " " + article(g.word) + " " + g.word + "?";
        answer = "yes";
        out = "yes.";
      }
      if (used.insert(ins).second) break;
    }
    if (i < o.target_train) stem.push_back({{"instruction", ins}, {"input", ""}, {"output", out}});
    else stem_test.push_back({{"id", "s" + std::to_string(i)}, {"prompt", ins}, {"answer", answer}});
  }
  write_file_atomic(p.target_stem, stem.dump(1) + "\n");
  write_jsonl(p.test_stem, stem_test);

  // Chat: the test words never occur in a training conversation; training words may repeat.
  json chat = json::array();
  std::vector<json> chat_test;
  std::vector<std::string> words = word_pool;
  rng.shuffle(words);
  const size_t n_test = std::min<size_t>(o.target_test, words.size() / 2);
  for (size_t i = 0; i < n_test; ++i)
    chat_test.push_back({{"id", "c" + std::to_string(i)},
                         {"prompt", "can you spell " + words[i] + "?"},
                         {"answer", "sure: " + spaced(words[i]) + "."}});
  for (int64_t i = 0; i < o.target_train; ++i) {
    const std::string& w = words[n_test + rng.below(words.size() - n_test)];
    std::string rev(w.rbegin(), w.rend());
    chat.push_back({{"conversations",
                     {{{"from", "human"}, {"value", "can you spell " + w + "?"}},
                      {{"from", "gpt"}, {"value", "sure: " + spaced(w) + "."}},
                      {{"from", "human"}, {"value", "and backwards?"}},
                      {{"from", "gpt"}, {"value", spaced(rev) + "."}}}}});
  }
  write_file_atomic(p.target_chat, chat.dump(1) + "\n");
  write_jsonl(p.test_chat, chat_test);
  write_file_atomic(done, demo_data_key(o) + "\n");
  return p;
}

}  // namespace flatune
