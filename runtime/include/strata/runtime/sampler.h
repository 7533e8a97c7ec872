// Choosing the next token from logits: greedy, or temperature with top-k,
// top-p and a repetition penalty (HF's semantics), reproducible with a seed.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace strata {

struct SamplerOptions {
  double temperature = 0;   // 0: greedy (argmax)
  int top_k = 0;            // 0: off
  double top_p = 1.0;       // 1: off
  double repetition_penalty = 1.0;  // 1: off; > 1 discourages tokens already seen
  uint64_t seed = 0;
};

// "" when every option is in range, else what is wrong and the valid range,
// naming the option as the command line does ("top-p must be in (0, 1] ...").
// Valid: temperature finite >= 0, top-k >= 0, top-p in (0, 1], repetition
// penalty finite > 0.
std::string SamplerOptionsProblem(const SamplerOptions& o);

class Sampler {
 public:
  // REQUIRES: SamplerOptionsProblem(o) is empty.
  explicit Sampler(const SamplerOptions& o) : o_(o), rng_(o.seed) {}
  // Returns the next token. `seen` are the tokens so far (prompt and output),
  // for the repetition penalty. `logits` is modified in place.
  int Next(std::vector<float>& logits, const std::vector<int>& seen);

 private:
  SamplerOptions o_;
  std::mt19937_64 rng_;
};

}  // namespace strata
