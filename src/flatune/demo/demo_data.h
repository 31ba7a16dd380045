// The embedded study's data, built from Debian's WordNet: a general corpus in which every fact
// is stated in several phrasings, a SentencePiece tokenizer trained on it, general instructions
// (the "before" stage), three target fine-tuning sets in the paper's formats, general-ability
// suites per category asked in held-out phrasings, and target test sets. Deterministic from the
// seed; written as ordinary files a user can read or swap.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flatune {

struct DemoDataOptions {
  uint64_t seed = 1;
  int64_t nouns = 1000;            // noun -> category facts (knowledge, reasoning, understanding)
  int64_t min_category_size = 25;  // nouns drawn only from categories with this many candidates
  int64_t fact_repeats = 12;       // times each fact is stated in the corpus (two phrasings each)
  int64_t glosses = 3000;          // definition lines of general text about other nouns
  int64_t antonyms = 1000;         // adjective pairs (exams)
  int64_t suite_items = 1000;      // per general-ability suite
  int64_t target_train = 1000;     // per target dataset
  int64_t target_test = 60;
  int64_t instructions = 4000;  // general instructions for the "before" stage
  int64_t vocab_size = 2000;
};

struct DemoDataPaths {
  std::string dir;
  std::string corpus, heldout, tokenizer_dir, general_instructions;
  std::string target_math, target_stem, target_chat;  // train files
  std::string test_math, test_stem, test_chat;        // generative test sets
  std::vector<std::string> suites;                    // knowledge reasoning understanding exams
  std::string categories;                             // YAML grouping of the suites
};

// A short hash of the options and the format version: the cache folder's name.
std::string demo_data_key(const DemoDataOptions& o);

// Builds everything into out_dir (skips the work when out_dir/DONE exists for these options).
DemoDataPaths build_demo_data(const DemoDataOptions& o, const std::string& wordnet_dir, const std::string& out_dir);

// $XDG_CACHE_HOME/flatune, else ~/.cache/flatune.
std::string flatune_cache_root();

}  // namespace flatune
