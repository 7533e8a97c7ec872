// What every backend shares: the batch checks, the default sequence.
#include "strata/runtime/backend.h"

#include <algorithm>

#include "strata/formats/error.h"

namespace strata {

std::string ContextProblem(const ModelConfig& c, int64_t positions) {
  if (positions <= c.max_position_embeddings) return "";
  return "the sequence would be " + std::to_string(positions) + " tokens, past the model's context of " +
         std::to_string(c.max_position_embeddings) + " (max_position_embeddings in config.json)";
}

void CheckForwardInput(const ModelConfig& c, const BackendOptions& opts, int64_t pos, const int* tokens, int64_t n) {
  if (n <= 0 || !tokens) throw Error("no tokens to run");
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab)
      throw Error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " + std::to_string(c.vocab) +
                  ")");
  if (std::string p = ContextProblem(c, pos + n); !p.empty()) throw Error(p);
  const int64_t limit = opts.max_context > 0 ? opts.max_context : c.max_position_embeddings;
  if (pos + n > limit)
    throw Error("the sequence would be " + std::to_string(pos + n) + " tokens, past the context of " +
                std::to_string(limit) + " this backend was sized for");
}

std::vector<int64_t> PrepareBatch(const ModelConfig& c, const BackendOptions& opts, KvSequences& kv,
                                  const std::vector<BatchItem>& items) {
  if (items.empty()) throw Error("an empty batch: nothing to run");
  std::vector<int> seqs;
  std::vector<int64_t> added, pos;
  for (const BatchItem& it : items) {
    kv.RequireLive(it.seq);
    const int64_t p = kv.Length(it.seq);
    CheckForwardInput(c, opts, p, it.tokens, it.n);
    if ((it.output == BatchOutput::kLastLogits || it.output == BatchOutput::kAllLogits) && !it.logits)
      throw Error("internal: a batch item asks for logits without a buffer");
    if (it.output == BatchOutput::kArgmax && !it.argmax) throw Error("internal: a batch item asks for argmax without a slot");
    seqs.push_back(it.seq);
    added.push_back(it.n);
    pos.push_back(p);
  }
  kv.Grow(seqs, added);  // throws (changing nothing) for a repeated sequence or a full cache
  return pos;
}

int Backend::DefaultSequence() {
  if (default_seq_ < 0) default_seq_ = CreateSequence();
  return default_seq_;
}

void Backend::Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) {
  BatchItem it;
  it.seq = DefaultSequence();
  it.tokens = tokens.data();
  it.n = static_cast<int64_t>(tokens.size());
  std::vector<float> all;
  if (all_logits) {
    it.output = BatchOutput::kAllLogits;
    all.resize(static_cast<size_t>(std::max<int64_t>(it.n, 0)) * static_cast<size_t>(vocab_));
    it.logits = all.data();
  } else if (last_logits) {
    it.output = BatchOutput::kLastLogits;
    it.logits = last_logits;
  } else {
    it.output = BatchOutput::kNone;
  }
  ForwardBatch({it});
  if (all_logits) {
    if (last_logits) std::copy(all.end() - vocab_, all.end(), last_logits);
    *all_logits = std::move(all);
  }
}

int Backend::ForwardArgmax(const std::vector<int>& tokens) {
  BatchItem it;
  it.seq = DefaultSequence();
  it.tokens = tokens.data();
  it.n = static_cast<int64_t>(tokens.size());
  it.output = BatchOutput::kArgmax;
  int tok = -1;
  it.argmax = &tok;
  ForwardBatch({it});
  return tok;
}

void Backend::Reset() {
  if (default_seq_ >= 0) ReleaseSequence(default_seq_);
  default_seq_ = -1;
}

}  // namespace strata
