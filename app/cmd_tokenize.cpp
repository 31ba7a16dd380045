// `flatune tokenize`: ids for lines of text (JSON objects with "text", or plain lines), or text
// for lines of id arrays with --decode; `flatune bench tokenize`: encoder throughput in MB/s.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"
#include "flatune/text/spm_bridge.h"
#include "flatune/text/tokenizer.h"

namespace flatune::cli {

namespace {
struct TokenizeArgs {
  std::string tokenizer, input;
  bool add_special = false, decode = false;
};

// The text of one input line: a JSON object's "text" field, a JSON string, or the line itself.
std::string line_text(const std::string& line, const std::string& where) {
  size_t first = line.find_first_not_of(" \t\r");
  if (first == std::string::npos || (line[first] != '{' && line[first] != '"')) return line;
  json j = parse_json_text(line, where);
  if (j.is_string()) return j.get<std::string>();
  if (!j.contains("text") || !j["text"].is_string()) throw Error(where, "object has no string field 'text'");
  return j["text"].get<std::string>();
}

std::vector<int32_t> line_ids(const std::string& line, const std::string& where) {
  json j = parse_json_text(line, where);
  if (!j.is_array()) throw Error(where, "expected a JSON array of token ids");
  std::vector<int32_t> ids;
  for (const auto& v : j) {
    if (!v.is_number_integer()) throw Error(where, "token ids must be integers");
    ids.push_back(v.get<int32_t>());
  }
  return ids;
}

void run_tokenize(const TokenizeArgs& a) {
  auto tok = load_tokenizer(a.tokenizer);
  std::ifstream file;
  if (!a.input.empty()) {
    file.open(a.input, std::ios::binary);
    if (!file) throw Error(a.input, "cannot open");
  }
  std::istream& in = a.input.empty() ? std::cin : file;
  const std::string name = a.input.empty() ? "<stdin>" : a.input;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    const std::string where = name + ":" + std::to_string(n);
    if (a.decode) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto ids = line_ids(line, where);
      for (int32_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) throw Error(where, "token id " + std::to_string(id) + " out of range");
      std::printf("%s\n", json(tok->decode(ids)).dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::printf("%s\n", json(tok->encode(line_text(line, where), a.add_special)).dump().c_str());
    }
  }
}

struct BenchTokenizeArgs {
  std::string tokenizer, input;
  int repeats = 3;
};

// Seconds of wall time and of this thread's CPU time: on a shared machine the wall time of a
// pass depends on the other load, the CPU time much less, so both are reported.
struct Timing {
  double wall = 1e300, cpu = 1e300;
};

template <typename Encode>
Timing best_of(int repeats, const std::vector<std::string_view>& lines, Encode encode, size_t& tokens) {
  Timing best;
  for (int r = 0; r < repeats; ++r) {
    timespec c0{}, c1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    auto t0 = std::chrono::steady_clock::now();
    tokens = 0;
    for (auto l : lines) tokens += encode(l);
    best.wall = std::min(best.wall, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    best.cpu = std::min(best.cpu, (c1.tv_sec - c0.tv_sec) + 1e-9 * (c1.tv_nsec - c0.tv_nsec));
  }
  return best;
}

void run_bench_tokenize(const BenchTokenizeArgs& a) {
  auto tok = load_tokenizer(a.tokenizer);
  std::string text = read_file(a.input);
  std::vector<std::string_view> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    lines.emplace_back(text.data() + pos, end - pos);
    pos = end + 1;
  }
  const double mb = text.size() / 1e6;
  size_t tokens = 0;
  Timing t = best_of(a.repeats, lines, [&](std::string_view l) { return tok->encode(l, false).size(); }, tokens);
  std::printf(
      "tokenizer %s (%s): %.2f MB in %zu lines, %zu tokens, best of %d: %.3f s wall, %.3f s cpu; %.2f MB/s wall, %.2f "
      "MB/s cpu\n",
      a.tokenizer.c_str(), tok->kind().c_str(), mb, lines.size(), tokens, a.repeats, t.wall, t.cpu, mb / t.wall,
      mb / t.cpu);
  if (tok->kind() != "sentencepiece") return;
  // The same text through libsentencepiece's own encoder (reached through the bridge, as
  // libsentencepiece cannot share this process's protobuf otherwise): flatune's overhead.
  const std::string model_path = file_exists(a.tokenizer) ? a.tokenizer : join_path(a.tokenizer, "tokenizer.model");
  spm::Model sp(read_file(model_path), model_path);
  size_t sp_tokens = 0;
  Timing s = best_of(a.repeats, lines, [&](std::string_view l) { return sp.encode(std::string(l)).size(); }, sp_tokens);
  std::printf(
      "libsentencepiece %s: %zu tokens%s, best of %d: %.3f s wall, %.3f s cpu; %.2f MB/s wall, %.2f MB/s cpu; "
      "flatune/libsentencepiece speed ratio %.3f (cpu)\n",
      model_path.c_str(), sp_tokens, sp_tokens == tokens ? " (same count)" : " (DIFFERENT count)", a.repeats, s.wall,
      s.cpu, mb / s.wall, mb / s.cpu, s.cpu / t.cpu);
}
}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* sub = app.add_subcommand("tokenize", "print token ids per input line (or text per id array with --decode)");
  // No CLI11 existence checks: a missing path is reported by the loader as one line with exit 2.
  sub->add_option("--tokenizer", args->tokenizer, "model folder, tokenizer.json or tokenizer.model")->required();
  sub->add_option("--input", args->input, "input file (default: standard input)");
  sub->add_flag("--add-special", args->add_special, "add BOS/EOS as the tokenizer's post-processor says");
  sub->add_flag("--decode", args->decode, "read JSON arrays of ids and print each text as a JSON string");
  sub->callback([args] { run_tokenize(*args); });
}

void add_bench_tokenize_command(CLI::App& bench) {
  auto args = std::make_shared<BenchTokenizeArgs>();
  CLI::App* sub = bench.add_subcommand("tokenize", "encoder throughput in MB/s over a text file's lines");
  sub->add_option("--tokenizer", args->tokenizer, "model folder, tokenizer.json or tokenizer.model")
      ->required()
      ->check(CLI::ExistingPath);
  sub->add_option("--input", args->input, "text file (for SentencePiece models libsentencepiece is timed beside)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--repeats", args->repeats, "passes over the file (the best is reported)")
      ->check(CLI::PositiveNumber);
  sub->callback([args] { run_bench_tokenize(*args); });
}

}  // namespace flatune::cli
