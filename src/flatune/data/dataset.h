// Training data: readers for the usual instruction formats, prompt templates that mark which
// tokens are the response, and tokenisation into examples with labels (-100 = no loss).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "flatune/text/tokenizer.h"

namespace flatune {

struct Turn {
  std::string role;  // system | user | assistant
  std::string content;
  std::string input;  // Alpaca's optional input, on a user turn
};

// One training example before tokenisation: a conversation, or raw text (pretraining rows of
// JSONL {"text": …}).
struct Conversation {
  std::vector<Turn> turns;
  std::string text;  // set instead of turns for raw text
};

// format: alpaca (also Open-Platypus), sharegpt (conversations [{from, value}] or messages
// [{role, content}]), metamath (query/response), jsonl (prompt/response, messages or text),
// text (each non-blank line a raw-text document), or auto (from the first record's fields).
// JSON arrays and JSONL are both accepted. Errors name
// the file, the record (line for JSONL, index for arrays) and the field.
std::vector<Conversation> read_conversations(const std::string& path, const std::string& format);

// A rendered piece of a prompt template: text and whether the loss is computed on it.
struct Segment {
  std::string text;
  bool train = false;
  bool add_eos = false;  // append the tokenizer's EOS id after this segment (part of it)
  bool add_bos = false;  // put the tokenizer's BOS id before this segment (llama2's later exchanges)
};

// Templates: alpaca llama2 chatml llama3 vicuna plain. "auto" recognises the tokenizer's chat
// template (llama2, chatml, llama3 families) and falls back to alpaca.
std::string resolve_template(const std::string& name, const Tokenizer& tok);
std::vector<Segment> render(const Conversation& c, const std::string& template_name);

struct Example {
  std::vector<int64_t> ids;
  std::vector<int64_t> labels;  // -100 where no loss is computed
};

struct TokenizeOptions {
  std::string template_name = "alpaca";
  int64_t max_length = 512;
  bool train_on_prompt = false;  // loss on every token
};

struct TokenizeStats {
  int64_t examples = 0;
  int64_t truncated = 0;
  int64_t dropped = 0;  // truncation would have cut away the whole response
  int64_t tokens = 0;
  int64_t label_tokens = 0;
};

// BOS when the tokenizer adds one; each segment encoded on its own, so the boundary between
// prompt and response is exact. Raw-text conversations are labelled everywhere.
std::vector<Example> tokenize_conversations(const std::vector<Conversation>& data, const Tokenizer& tok,
                                            const TokenizeOptions& opts, TokenizeStats* stats);

// Plain text for pretraining: each non-empty line is a document; documents are encoded,
// joined with EOS, and cut into blocks of `block_size` tokens (the last partial block dropped).
std::vector<Example> text_blocks(const std::string& path, const Tokenizer& tok, int64_t block_size);

// How many of n examples to hold out: `fraction_or_count` below 1 is a fraction of n (rounded,
// at least one when positive), 1 or more an example count.
int64_t validation_size(int64_t n, double fraction_or_count);

// Deterministic split: a seeded shuffle of indices; the first `val_count` go to validation.
void split_validation(std::vector<Example>& train, std::vector<Example>& val, int64_t val_count, uint64_t seed);

}  // namespace flatune
