// Reading Debian's WordNet database files (wndb(5) format: data.noun, data.adj) into the
// handful of relations the embedded study uses.
#pragma once
#include <string>
#include <vector>

namespace flatune {

struct Synset {
  std::string offset;
  std::vector<std::string> words;                               // lemmas, '_' for spaces
  std::vector<std::string> hypernyms, part_meronyms, antonyms;  // offsets of related synsets
  std::string gloss;                                            // definition without the quoted examples
};

// All synsets of one data file, in file order. Missing file: an Error naming it and the Debian
// package (wordnet-base).
std::vector<Synset> read_wordnet(const std::string& data_file);

}  // namespace flatune
