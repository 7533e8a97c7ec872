// Perplexity of a text under a variant, computed as llama.cpp's llama-perplexity
// computes it, so the figures compare with llama.cpp's: the text is tokenized
// once (BOS first when the tokenizer adds one, special tokens not parsed); it is
// cut into chunks of `ctx` tokens (the tail that fills no chunk is dropped);
// each chunk runs from an empty KV cache with its first token replaced by BOS;
// the logits at positions ctx/2 .. ctx-2 score the token after them. PPL is
// exp(mean NLL) over every scored token of every chunk. docs/eval.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/runtime/engine.h"
#include "strata/runtime/tokenizer.h"

namespace strata {

struct PerplexityOptions {
  int ctx = 512;        // tokens per chunk
  int parallel = 4;     // chunks run together in one batched forward
  int64_t chunks = 0;   // at most this many chunks (0: all)
  // After each group of chunks: chunks done and the total.
  std::function<void(int64_t done, int64_t total)> on_progress;
};

struct PerplexityResult {
  int ctx = 0;
  int64_t text_tokens = 0;    // the whole text, with BOS
  int64_t chunks = 0;
  int64_t scored_tokens = 0;  // chunks * (ctx - 1 - ctx/2)
  int64_t scored_bytes = 0;   // bytes the scored tokens decode to (Tokenizer::TokenBytes)
  double nll_sum = 0;         // sum of -log p(token), natural log
  double nll2_sum = 0;        // sum of its squares
  double seconds = 0;         // the forward passes and scoring

  double nll_per_token() const { return scored_tokens ? nll_sum / scored_tokens : 0; }
  double ppl() const;
  // llama-perplexity's "+/-": ppl * the standard error of the mean NLL.
  double ppl_error() const;
  double nll_per_byte() const { return scored_bytes ? nll_sum / scored_bytes : 0; }
  double bits_per_byte() const;
  double scored_tokens_per_s() const { return seconds > 0 ? scored_tokens / seconds : 0; }
  // Every token the forward ran (chunks * ctx) per second.
  double tokens_per_s() const { return seconds > 0 ? static_cast<double>(chunks) * ctx / seconds : 0; }
};

// The text's tokens as llama-perplexity takes them: BOS when `t` adds one,
// then Encode(text) with special tokens left as text.
std::vector<int> PerplexityTokens(const Tokenizer& t, std::string_view text);

// What is wrong with scoring `n_tokens` tokens at `ctx` on a model whose
// context is `max_context` ("" when nothing): ctx below 4 or past the context;
// fewer than 2 * ctx tokens (llama-perplexity's minimum).
std::string PerplexityProblem(int64_t n_tokens, int ctx, int64_t max_context);

// The chunks Perplexity() scores: floor(n_tokens / ctx), at most o.chunks.
int64_t PerplexityChunks(int64_t n_tokens, const PerplexityOptions& o);

// EngineOptions for Perplexity(): one sequence reaches ctx positions, and
// `parallel` of them fit in the KV cache at once.
EngineOptions PerplexityEngineOptions(EngineOptions base, const PerplexityOptions& o);

// Scores `tokens` (from PerplexityTokens) on `engine`, whose options came from
// PerplexityEngineOptions. Throws Error when PerplexityProblem says so, or when
// the engine fails.
PerplexityResult Perplexity(Engine& engine, const Tokenizer& t, const std::vector<int>& tokens,
                            const PerplexityOptions& o);

// The byte offset of the first invalid UTF-8 sequence in `text`, or -1.
int64_t FirstInvalidUtf8(std::string_view text);

}  // namespace strata
