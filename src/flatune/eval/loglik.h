// Log-likelihood of continuations as lm-evaluation-harness (0.4.13) computes it for Hugging Face
// causal models:
//  - trailing spaces of the context move to the continuation; the continuation's tokens are the
//    encoding of context+continuation minus the context's token count (HFLM._encode_pair);
//  - both encodings add the special tokens the tokenizer adds by default (BOS for Llama), as
//    lm-eval does since its add_bos_token defaults to None (EleutherAI/lm-evaluation-harness#3347;
//    0.4.9.2 added none but for Gemma), except for text that starts with the prefix token
//    written out; an empty context becomes the prefix token (BOS, else EOS) and the
//    continuation is encoded on its own, without special tokens (if it starts with the prefix
//    token, that token becomes the context);
//  - input = (context + continuation)[-(max_length+1):][:-1]: truncated from the left;
//  - the log-likelihood is the sum over the continuation's tokens; is_greedy says whether every
//    one of them is the argmax.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "flatune/model/llama.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

struct EncodedPair {
  std::vector<int64_t> context, continuation;
};

EncodedPair encode_pair(const Tokenizer& tok, std::string context, std::string continuation);

struct Loglik {
  double value = 0;
  bool is_greedy = false;
};

// Each pair scored by its own forward pass (the reference).
std::vector<Loglik> score_naive(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs, int64_t max_length);

// Pairs from many items at once; each context runs once and its KV cache serves all its
// continuations. Consecutive pairs with the same context form a group (one
// item's choices; each context of a WinoGrande item is a group of one). Groups are sorted by
// length (longest first, so padding stays small and memory peaks early) and `batch_size` of them
// go through one padded forward; each group's continuations, packed into one row over its cache,
// then go through a second padded forward. Pairs whose input would be truncated are scored by the naive path. Results
// are in the order of `pairs`; `progress(done)` counts pairs scored.
std::vector<Loglik> score_batched(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs, int64_t max_length,
                                  int64_t batch_size, const std::function<void(int64_t)>& progress = {});

}  // namespace flatune
