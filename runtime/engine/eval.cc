// Perplexity as llama-perplexity computes it (eval.h; docs/eval.md).
#include "strata/runtime/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "strata/formats/error.h"
#include "strata/runtime/tokenizer_unicode.h"

namespace strata {

double PerplexityResult::ppl() const { return std::exp(nll_per_token()); }

double PerplexityResult::ppl_error() const {
  if (scored_tokens < 2) return 0;
  const double n = static_cast<double>(scored_tokens), mean = nll_sum / n;
  const double var = nll2_sum / n - mean * mean;
  return var > 0 ? std::sqrt(var / (n - 1)) * ppl() : 0;
}

double PerplexityResult::bits_per_byte() const { return nll_per_byte() / std::log(2.0); }

std::vector<int> PerplexityTokens(const Tokenizer& t, std::string_view text) {
  std::vector<int> ids;
  if (t.add_bos() && t.bos_id() >= 0) ids.push_back(t.bos_id());
  std::vector<int> body = t.Encode(text, /*parse_special=*/false);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::string PerplexityProblem(int64_t n_tokens, int ctx, int64_t max_context) {
  if (ctx < 4) return "--ctx " + std::to_string(ctx) + " is too small: a chunk needs at least 4 tokens";
  if (max_context > 0 && ctx > max_context)
    return "--ctx " + std::to_string(ctx) + " is past the model's context of " + std::to_string(max_context) +
           " positions (max_position_embeddings); use --ctx " + std::to_string(max_context) + " or less";
  if (n_tokens < 2 * static_cast<int64_t>(ctx))
    return "the text is " + std::to_string(n_tokens) + " tokens; perplexity at --ctx " + std::to_string(ctx) +
           " needs at least " + std::to_string(2 * static_cast<int64_t>(ctx)) +
           " (two chunks, as llama-perplexity requires): give a longer text or a smaller --ctx";
  return "";
}

int64_t PerplexityChunks(int64_t n_tokens, const PerplexityOptions& o) {
  const int64_t n = o.ctx > 0 ? n_tokens / o.ctx : 0;
  return o.chunks > 0 ? std::min(n, o.chunks) : n;
}

EngineOptions PerplexityEngineOptions(EngineOptions base, const PerplexityOptions& o) {
  base.max_context = o.ctx;
  base.kv_budget_bytes = 0;
  // Each sequence holds whole blocks: room for ctx rounded up to a block, per chunk.
  const int64_t block = base.kv_block_tokens > 0 ? base.kv_block_tokens : kDefaultKvBlockTokens;
  base.kv_positions = (o.ctx + block - 1) / block * block * std::max(1, o.parallel);
  return base;
}

namespace {

// -log softmax(logits)[token], in double as llama-perplexity's log_softmax
// (max subtracted, the sum of exponentials accumulated in double).
double Nll(const float* logits, int64_t V, int token) {
  float mx = logits[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return -(static_cast<double>(logits[token]) - mx - std::log(sum));
}

}  // namespace

PerplexityResult Perplexity(Engine& engine, const Tokenizer& t, const std::vector<int>& tokens,
                            const PerplexityOptions& o) {
  if (std::string p = PerplexityProblem(static_cast<int64_t>(tokens.size()), o.ctx, engine.max_context());
      !p.empty())
    throw Error(p);
  const int ctx = o.ctx, first = ctx / 2, parallel = std::max(1, o.parallel);
  const int64_t V = engine.config().vocab;
  const int64_t n_chunk = PerplexityChunks(static_cast<int64_t>(tokens.size()), o);
  const int bos = t.add_bos() ? t.bos_id() : -1;

  PerplexityResult r;
  r.ctx = ctx;
  r.text_tokens = static_cast<int64_t>(tokens.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t c0 = 0; c0 < n_chunk; c0 += parallel) {
    const int64_t group = std::min<int64_t>(parallel, n_chunk - c0);
    std::vector<std::unique_ptr<Sequence>> owned;
    std::vector<Sequence*> seqs;
    std::vector<std::vector<int>> chunks;
    for (int64_t g = 0; g < group; ++g) {
      const auto b = tokens.begin() + (c0 + g) * ctx;
      chunks.emplace_back(b, b + ctx);
      if (bos >= 0) chunks.back()[0] = bos;
      owned.push_back(engine.NewSequence());
      seqs.push_back(owned.back().get());
    }
    // The first half asks for no logits; the second keeps every position's.
    for (int64_t g = 0; g < group; ++g)
      seqs[g]->Prefill(std::vector<int>(chunks[g].begin(), chunks[g].begin() + first));
    engine.Step(seqs);
    for (int64_t g = 0; g < group; ++g) {
      seqs[g]->keep_logits(false, true);
      seqs[g]->Append(std::vector<int>(chunks[g].begin() + first, chunks[g].end()));
    }
    engine.Step(seqs);
    for (int64_t g = 0; g < group; ++g) {
      const std::vector<float>& lg = seqs[g]->all_logits();
      if (static_cast<int64_t>(lg.size()) != static_cast<int64_t>(ctx - first) * V)
        throw Error("internal: the engine returned " + std::to_string(lg.size()) + " logits for a chunk");
      for (int i = 0; i + first + 1 < ctx; ++i) {
        const int next = chunks[g][static_cast<size_t>(first + i + 1)];
        const double v = Nll(lg.data() + static_cast<int64_t>(i) * V, V, next);
        r.nll_sum += v;
        r.nll2_sum += v * v;
        r.scored_tokens += 1;
        r.scored_bytes += static_cast<int64_t>(t.TokenBytes(next).size());
      }
    }
    r.chunks += group;
    if (o.on_progress) o.on_progress(r.chunks, n_chunk);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

int64_t FirstInvalidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const DecodedChar d = DecodeUtf8(text, i);
    if (d.cp == kInvalidCodepoint) return static_cast<int64_t>(i);
    i += static_cast<size_t>(d.len);
  }
  return -1;
}

}  // namespace strata
