#include "flatune/demo/wordnet.h"

#include <sstream>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

namespace flatune {

std::vector<Synset> read_wordnet(const std::string& path) {
  if (!file_exists(path)) fail(path, "WordNet data file not found (install the Debian package wordnet-base)");
  std::istringstream in(read_file(path));
  std::vector<Synset> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == ' ') continue;  // the licence header lines start with spaces
    size_t bar = line.find(" | ");
    std::istringstream f(line.substr(0, bar));
    Synset s;
    std::string lex, type, count_hex;
    f >> s.offset >> lex >> type >> count_hex;
    int words = std::stoi(count_hex, nullptr, 16);
    for (int i = 0; i < words; ++i) {
      std::string w, lex_id;
      f >> w >> lex_id;
      auto paren = w.find('(');  // adjective markers such as "(a)"
      if (paren != std::string::npos) w = w.substr(0, paren);
      s.words.push_back(w);
    }
    int pointers = 0;
    f >> pointers;
    for (int i = 0; i < pointers; ++i) {
      std::string sym, off, pos, st;
      f >> sym >> off >> pos >> st;
      if (sym == "@" || sym == "@i") s.hypernyms.push_back(off);
      else if (sym == "%p") s.part_meronyms.push_back(off);
      else if (sym == "!") s.antonyms.push_back(off);
    }
    if (bar != std::string::npos) {
      std::string gloss = line.substr(bar + 3);
      size_t q = gloss.find("; \"");
      if (q != std::string::npos) gloss = gloss.substr(0, q);
      while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == ';')) gloss.pop_back();
      s.gloss = gloss;
    }
    out.push_back(std::move(s));
  }
  if (out.empty()) fail(path, "no synsets (not a WordNet data file?)");
  return out;
}

}  // namespace flatune
