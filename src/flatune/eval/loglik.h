// Log-likelihood of continuations as lm-evaluation-harness (0.4) computes it for Hugging Face
// causal models:
//  - trailing spaces of the context move to the continuation; the continuation's tokens are the
//    encoding of context+continuation minus the context's token count (HFLM._encode_pair);
//  - no special tokens are added (add_bos_token false); an empty context becomes the prefix token
//    (BOS, else EOS) and the continuation is encoded on its own;
//  - input = (context + continuation)[-(max_length+1):][:-1]: truncated from the left;
//  - the log-likelihood is the sum over the continuation's tokens; is_greedy says whether every
//    one of them is the argmax.
#pragma once
#include <cstdint>
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

// Pairs that share one context: the context runs once and its KV cache serves every
// continuation, batched. Pairs whose input would be truncated are scored by the naive path.
std::vector<Loglik> score_shared_context(LlamaForCausalLM& model, const std::vector<EncodedPair>& pairs, int64_t max_length);

}  // namespace flatune
