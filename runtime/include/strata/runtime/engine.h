// Generation: an Engine owns a variant's assembled model, its weights and its
// backend (CPU or CUDA, chosen by name; whether CUDA was built stays behind
// this header); a Sequence is one conversation or request on it, with its KV
// blocks, its sampler and its tokens. Engine::Step advances any number of
// sequences in one batched forward pass, some in prefill and some decoding.
// docs/runtime.md has the design.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/formats/store.h"
#include "strata/runtime/backend.h"
#include "strata/runtime/model.h"
#include "strata/runtime/sampler.h"

namespace strata {

struct EngineOptions {
  std::string device = "cpu";  // cpu | cuda
  bool elide = true;           // skip layers whose o_proj and down_proj are zero
  bool verify_load = true;     // hash every blob once as the weights load
  int64_t max_context = 0;     // positions one sequence may reach (0: max_position_embeddings)
  uint64_t kv_budget_bytes = 0;  // the KV cache shared by all sequences (0: see kv_positions)
  int64_t kv_positions = 0;      // with a budget of 0: room for this many positions (0: max_context)
  int kv_block_tokens = 0;       // positions per KV block (0: kDefaultKvBlockTokens)
  bool cuda_graphs = true;       // cuda: decode as a replayed CUDA graph
  // cuda: progress of the weight upload in bytes (on_start(total), then
  // *bytes_done advances to total).
  std::function<void(uint64_t total)> on_load_start;
  std::atomic<uint64_t>* load_bytes_done = nullptr;
};

// True when this build has the CUDA backend.
bool CudaBuilt();
// Free and total memory of `device` ("cuda": the current GPU's, by
// cudaMemGetInfo; creates its context). False for "cpu" or when it fails.
bool DeviceMemory(const std::string& device, uint64_t* free_bytes, uint64_t* total_bytes);
// "" when `device` is a backend this build and machine can run, else what is
// wrong and what to do ("cpu" always runs).
std::string DeviceProblem(const std::string& device);

struct EngineInfo {
  std::string device;       // cpu | cuda
  std::string device_name;  // "cpu (avx512-bf16)", "NVIDIA H200 (sm_90, ...)"
  int layers = 0, distinct_layers = 0, elided_layers = 0;
  uint64_t weight_bytes_mapped = 0, weight_bytes_materialized = 0;  // cpu
  // cpu: quantized rows again in panels of 16 for the VNNI kernels, and the
  // mapped bytes given back because panels hold all their rows (WeightStore).
  uint64_t weight_bytes_packed = 0, weight_bytes_released = 0;
  uint64_t weight_bytes_resident() const {
    return weight_bytes_mapped - weight_bytes_released + weight_bytes_materialized + weight_bytes_packed;
  }
  uint64_t weight_bytes_device = 0;                                 // cuda
  uint64_t decode_weight_bytes_per_token = 0;
  double load_s = 0;  // assembly, verification and (cuda) upload
};

class Sequence;
class WeightStore;

// The weights of every engine opened on it: each distinct tensor node of the
// store once, however many variants use it (CPU: the mapped blobs and the
// materialized nodes; CUDA: one device buffer per node). A server opens one
// pool and every served variant on it, so a base, its DUS and its block
// expansion cost the base's weights once. Engines keep their pool alive.
// Not for concurrent Opens: engines are opened one after another.
class WeightPool {
 public:
  // `device` and `verify` as EngineOptions::device and verify_load; every
  // engine opened on this pool must ask for the same device.
  WeightPool(const Store& store, const std::string& device, bool verify);
  ~WeightPool();
  const std::string& device() const { return device_; }
  // Bytes resident for weights: CPU mapped + materialized; CUDA device bytes.
  uint64_t resident_bytes() const;

 private:
  friend class Engine;
  const Store& store_;
  std::string device_;
  std::unique_ptr<WeightStore> host_;
  std::shared_ptr<void> device_pool_;  // cuda: the CudaWeightPool
};

class Engine {
 public:
  // Loads variant `variant` of `store` for `o.device`. `store` must outlive
  // the engine. Throws Error (a device this build or machine lacks, a
  // damaged variant, a corrupt blob, memory).
  static std::unique_ptr<Engine> Open(const Store& store, const Hash& variant, const EngineOptions& o);
  // The same on a shared pool (o.device must be the pool's): tensors already
  // in the pool are not loaded again.
  static std::unique_ptr<Engine> Open(const Store& store, const Hash& variant, const EngineOptions& o,
                                      std::shared_ptr<WeightPool> pool);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Model& model() const { return *model_; }
  const ModelConfig& config() const { return model_->config; }
  Backend& backend() { return *backend_; }
  EngineInfo info() const;
  KvStats kv_stats() const { return backend_->kv_stats(); }
  // The most positions one sequence may reach (EngineOptions::max_context,
  // else max_position_embeddings).
  int64_t max_context() const { return max_context_; }
  // The backend's own figures for reports, as JSON (empty on the CPU; on
  // CUDA: device bytes, KV and scratch bytes, graph nodes, kernels per step...).
  Json DeviceStats() const;
  // The device's measured read bandwidth in bytes/s (the decode bound's
  // numerator); 0 on the CPU. Throws Error when it cannot be measured.
  double MeasureReadBandwidth() const;

  // A new empty sequence; its KV blocks are taken as it grows and freed when
  // it is destroyed. It must not outlive the engine.
  std::unique_ptr<Sequence> NewSequence(const SamplerOptions& sampler = {});

  // One batched forward pass: every sequence in `seqs` (distinct, each with
  // pending tokens) runs its pending tokens; then each chooses its next
  // token (Sequence::next). Throws Error with no sequence changed when the
  // batch is refused (see Backend::ForwardBatch: the KV budget, the context).
  void Step(const std::vector<Sequence*>& seqs);

 private:
  friend class Sequence;
  Engine() = default;
  std::shared_ptr<WeightPool> pool_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Backend> backend_;
  EngineInfo info_;
  int64_t max_context_ = 0;
};

// Timings of Sequence::Generate.
struct GenerateStats {
  std::vector<int> tokens;      // generated, in order (the last one is not yet run)
  int64_t reused_tokens = 0;    // prompt tokens whose KV was kept from before
  int64_t prefill_tokens = 0;   // prompt tokens run
  double prefill_s = 0, decode_s = 0;
  double prefill_tokens_per_s() const { return prefill_tokens / std::max(1e-9, prefill_s); }
  // Decode counts the forward passes after the prompt's (one per token but the last).
  double decode_tokens_per_s() const {
    return tokens.size() > 1 ? static_cast<double>(tokens.size() - 1) / std::max(1e-9, decode_s) : 0.0;
  }
};

class Sequence {
 public:
  ~Sequence();
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  // Queues tokens for the next Engine::Step (a prompt, more of it, or the
  // token to continue with).
  void Append(const std::vector<int>& tokens);
  // Queues a prompt chunk whose following token is not wanted yet (chunked
  // prefill, before the last chunk): the next Step computes no logits for
  // this sequence and samples nothing (next() is -1 after it, and the
  // sampler's random state does not advance).
  void Prefill(const std::vector<int>& tokens);
  const std::vector<int>& pending() const { return pending_; }
  // Every token run so far: the KV cache holds exactly these positions.
  const std::vector<int>& tokens() const { return tokens_; }
  int64_t length() const { return static_cast<int64_t>(tokens_.size()); }
  // The token chosen after the last step (-1 before any step).
  int next() const { return next_; }
  // With keep_logits(true): the last step's logits of its last position
  // (vocab floats), as the model computed them. Otherwise unspecified (empty
  // for greedy sampling, which the backend does itself).
  const std::vector<float>& logits() const { return logits_; }
  // Keep the last position's logits after each step (eval, --logits-out),
  // or with `all` every position's (all_logits()).
  void keep_logits(bool last, bool all = false) {
    keep_last_ = last;
    keep_all_ = all;
  }
  const std::vector<float>& all_logits() const { return all_logits_; }

  // Keeps the first `n` tokens' KV (n <= length()), drops the rest and
  // anything pending, and frees the blocks past them.
  void Truncate(int64_t n);
  // For a prompt that may continue what this sequence already ran (a chat
  // history): keeps the longest prefix of tokens() that `prompt` starts
  // with, leaving at least one token of `prompt` to run, and queues the rest.
  // Returns the number of tokens kept.
  int64_t Continue(const std::vector<int>& prompt);

  // One request on this sequence alone: Continue(prompt), prefill, then up to
  // `max_new` tokens, each passed to `on_token` (false stops after it),
  // stopping after an end-of-sequence token. With `prompt_logits`, the
  // prefill's logits of every run prompt position go there. Throws Error.
  GenerateStats Generate(const std::vector<int>& prompt, int max_new, const std::function<bool(int)>& on_token = {},
                         std::vector<float>* prompt_logits = nullptr);

 private:
  friend class Engine;
  Sequence(Engine& e, const SamplerOptions& s);
  bool NeedsLogits() const;
  Engine& engine_;
  int id_ = -1;
  SamplerOptions sampler_options_;
  Sampler sampler_;
  std::vector<int> tokens_, pending_;
  std::vector<float> logits_, all_logits_;
  int next_ = -1, argmax_ = -1;
  bool keep_last_ = false, keep_all_ = false;
  bool skip_next_ = false;  // Prefill: no logits, no sampling this step
};

}  // namespace strata
