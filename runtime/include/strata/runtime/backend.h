// The interface every backend (CPU, CUDA) implements over an assembled Model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/runtime/kv_cache.h"
#include "strata/runtime/model.h"

namespace strata {

// Positions per KV block unless BackendOptions::kv_block_tokens says otherwise.
inline constexpr int kDefaultKvBlockTokens = 32;

struct BackendOptions {
  // The most positions one sequence may reach (0: max_position_embeddings).
  int64_t max_context = 0;
  bool elide = true;  // skip layers whose o_proj and down_proj are zero
  // The KV cache's budget, shared by every sequence (docs/runtime.md, "Paged
  // KV cache"): 0 gives room for max_context positions. Blocks are taken as
  // sequences grow and reused when they are released or truncated; the CPU
  // backend's memory for a block is touched only when first used.
  uint64_t kv_budget_bytes = 0;
  int64_t kv_positions = 0;  // with a budget of 0: room for this many positions (0: max_context)
  int kv_block_tokens = 0;   // 0: kDefaultKvBlockTokens
};

// What a batch item wants back from its forward pass.
enum class BatchOutput {
  kNone,        // nothing (a prefill chunk whose logits are not needed)
  kLastLogits,  // the last new position's logits: vocab floats at `logits`
  kAllLogits,   // every new position's logits: n x vocab floats at `logits`
  kArgmax,      // the last new position's greedy token at `argmax` (CUDA: taken on the device)
};

// One sequence's share of a batched forward pass: `n` new tokens at the
// sequence's next positions (a prompt, a chunk of one, or one decode token).
struct BatchItem {
  int seq = -1;
  const int* tokens = nullptr;
  int64_t n = 0;
  BatchOutput output = BatchOutput::kLastLogits;
  float* logits = nullptr;
  int* argmax = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Sequences: each has its own positions and KV blocks (kv_cache.h).
  virtual int CreateSequence() = 0;
  // Frees the sequence's KV blocks for reuse. Throws Error for an unknown id.
  virtual void ReleaseSequence(int seq) = 0;
  // Keeps the first `length` positions of the sequence and frees the rest
  // (a chat turn that shares a prefix with the history keeps that prefix).
  virtual void TruncateSequence(int seq, int64_t length) = 0;
  virtual int64_t SequenceLength(int seq) const = 0;

  // Advances every item's sequence by its tokens in one pass that reads each
  // weight once for all of them; sequences may be in prefill or decode and of
  // any lengths. Results equal running the items one at a time, within fp32
  // rounding. Throws Error, with no sequence changed, for: an unknown or
  // repeated sequence, no tokens, a token id outside the vocabulary, a
  // sequence past max_context or max_position_embeddings, a missing output
  // pointer, or a KV budget with too few free blocks (the message gives the
  // figures and the option that raises the budget).
  virtual void ForwardBatch(const std::vector<BatchItem>& items) = 0;

  virtual KvStats kv_stats() const = 0;
  // Layers skipped per forward by identity elision.
  virtual int elided_layers() const = 0;
  // The kernels in use, for reports: "avx512-bf16", "avx2", "portable", "cuda".
  virtual std::string kernels() const = 0;

  // One sequence, for callers that need no more: the backend's default
  // sequence, created on first use. Forward runs `tokens` at its next
  // positions, writing the last position's logits to `last_logits` (when not
  // null) and every new position's to `all_logits` (when not null).
  void Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits);
  // The greedy next token after `tokens` (on CUDA the argmax stays on the device).
  int ForwardArgmax(const std::vector<int>& tokens);
  int64_t position() const { return default_seq_ < 0 ? 0 : SequenceLength(default_seq_); }
  // Back to position 0: the default sequence's blocks are freed.
  void Reset();

 protected:
  explicit Backend(const ModelConfig& c) : vocab_(c.vocab) {}

 private:
  int64_t vocab_;
  int DefaultSequence();
  int default_seq_ = -1;
};

// What a backend does before a batched forward pass, the same for every
// backend: checks `items` (see ForwardBatch) against the model and the
// options, then grows each sequence's KV blocks in `kv`. Returns each item's
// first new position. Throws Error, changing nothing, when a check fails.
std::vector<int64_t> PrepareBatch(const ModelConfig& c, const BackendOptions& opts, KvSequences& kv,
                                  const std::vector<BatchItem>& items);

// "" when a sequence of `positions` tokens fits the model's context
// (max_position_embeddings), else the message saying both numbers, for a
// front end to check a request before it allocates anything for it.
std::string ContextProblem(const ModelConfig& c, int64_t positions);

// The checks of one sequence's tokens before a forward pass of `n` tokens at
// position `pos`: not empty, ids inside the vocabulary, the sequence within
// max_position_embeddings and within the context the backend was sized for.
// Throws Error saying which and by how much.
void CheckForwardInput(const ModelConfig& c, const BackendOptions& opts, int64_t pos, const int* tokens, int64_t n);

std::unique_ptr<Backend> MakeCpuBackend(const Model& model, const BackendOptions& opts);

}  // namespace strata
