// The interface every backend (CPU, CUDA) implements over an assembled Model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/runtime/model.h"

namespace strata {

struct BackendOptions {
  // The most positions a sequence may reach (0: max_position_embeddings). The
  // CPU backend's KV cache grows up to it as the sequence does; CUDA's is
  // allocated at this size.
  int64_t max_context = 0;
  bool elide = true;        // skip layers whose o_proj and down_proj are zero
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs `tokens` at the next positions of the sequence (a whole prompt, or one
  // decode token), appending to every logical layer's KV cache. Writes the
  // last position's logits (vocab floats) to `last_logits` and, when
  // `all_logits` is not null, every new position's (M x vocab). Throws Error
  // for a token id outside the vocabulary or a sequence past max_context.
  virtual void Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) = 0;
  virtual int64_t position() const = 0;
  // Layers skipped per forward by identity elision.
  virtual int elided_layers() const = 0;
};

// "" when a sequence of `positions` tokens fits the model's context
// (max_position_embeddings), else the message saying both numbers, for a
// front end to check a request before it allocates anything for it.
std::string ContextProblem(const ModelConfig& c, int64_t positions);

// The checks every backend makes before a forward pass of `tokens` at
// position `pos`: not empty, ids inside the vocabulary, the sequence within
// max_position_embeddings and within the context the backend was sized for.
// Throws Error saying which and by how much.
void CheckForwardInput(const ModelConfig& c, const BackendOptions& opts, int64_t pos, const std::vector<int>& tokens);

std::unique_ptr<Backend> MakeCpuBackend(const Model& model, const BackendOptions& opts);

}  // namespace strata
