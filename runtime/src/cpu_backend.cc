// The CPU backend: the forward pass of LlamaForCausalLM / MistralForCausalLM /
// Qwen2ForCausalLM over shared weight sets, with a KV cache per logical layer.
#include <sched.h>
#include <tbb/task_arena.h>
#include <tbb/task_scheduler_observer.h>

#include <algorithm>
#include <string>
#include <vector>

#include "strata/formats/error.h"
#include "strata/runtime/backend.h"
#include "strata/runtime/cpu_kernels.h"

namespace strata {

namespace {

// Pins each TBB worker to one CPU of the process's affinity mask while the
// backend lives, so a thread keeps its caches (and its NUMA node's memory)
// across the layers of a forward pass instead of migrating between cores.
class PinWorkers : public tbb::task_scheduler_observer {
 public:
  PinWorkers() {
    if (sched_getaffinity(0, sizeof(allowed_), &allowed_) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &allowed_)) cpus_.push_back(c);
    if (cpus_.size() > 1) observe(true);
  }
  ~PinWorkers() override { observe(false); }
  void on_scheduler_entry(bool) override {
    int slot = tbb::this_task_arena::current_thread_index();
    if (slot < 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpus_[slot % cpus_.size()], &one);
    sched_setaffinity(0, sizeof(one), &one);  // best effort: a refusal only costs locality
  }
  void on_scheduler_exit(bool) override { sched_setaffinity(0, sizeof(allowed_), &allowed_); }

 private:
  cpu_set_t allowed_{};
  std::vector<int> cpus_;
};

class CpuBackend : public Backend {
 public:
  CpuBackend(const Model& m, const BackendOptions& opts);
  void Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) override;
  int64_t position() const override { return pos_; }
  int elided_layers() const override { return elided_; }

 private:
  void Reserve(int64_t M);
  void GrowKv(size_t l, int64_t positions);
  void Layer(size_t l, int64_t M);
  void Logits(const float* x, int64_t M, float* out);

  PinWorkers pin_;
  const Model& m_;
  const ModelConfig& c_;
  BackendOptions opts_;
  std::vector<double> inv_freq_;
  int64_t pos_ = 0, capacity_ = 0;
  int elided_ = 0;
  // KV cache of logical layer l: (positions held, kv_heads * head_dim), fp32;
  // it belongs to the logical layer, never to the weights.
  std::vector<std::vector<float>> k_cache_, v_cache_;
  // Scratch for M tokens: x, xn (M, hidden); q, att (M, heads*hd); k, v (M, kv*hd); g, u (M, inter).
  std::vector<float> x_, xn_, q_, k_, v_, att_, tmp_, g_, u_;
};

CpuBackend::CpuBackend(const Model& m, const BackendOptions& opts)
    : m_(m), c_(m.config), opts_(opts), inv_freq_(RopeInvFreq(m.config)) {
  if (opts_.max_context <= 0) opts_.max_context = c_.max_position_embeddings;
  k_cache_.resize(m.layers.size());
  v_cache_.resize(m.layers.size());
  for (const WeightSet* ws : m.layers) elided_ += opts_.elide && ws->identity();
}

void CpuBackend::Reserve(int64_t M) {
  if (M <= capacity_) return;
  const int64_t H = c_.hidden, Q = int64_t{c_.heads} * c_.head_dim, KV = int64_t{c_.kv_heads} * c_.head_dim;
  x_.resize(M * H), xn_.resize(M * H), tmp_.resize(M * H);
  q_.resize(M * Q), att_.resize(M * Q), k_.resize(M * KV), v_.resize(M * KV);
  g_.resize(M * c_.intermediate), u_.resize(M * c_.intermediate);
  capacity_ = M;
}

// Memory follows the sequence, not the longest it may become: the cache
// doubles (at most to max_context), so a large -n costs nothing up front.
void CpuBackend::GrowKv(size_t l, int64_t positions) {
  const int64_t KV = int64_t{c_.kv_heads} * c_.head_dim;
  auto& kc = k_cache_[l];
  if (static_cast<int64_t>(kc.size()) >= positions * KV) return;
  const int64_t held = static_cast<int64_t>(kc.size()) / KV;
  const int64_t grown = std::min(opts_.max_context, std::max({positions, 2 * held, int64_t{64}}));
  kc.resize(grown * KV);
  v_cache_[l].resize(grown * KV);
}

void CpuBackend::Layer(size_t l, int64_t M) {
  const WeightSet& w = *m_.layers[l];
  const int64_t H = c_.hidden, KV = int64_t{c_.kv_heads} * c_.head_dim;
  auto& kc = k_cache_[l];
  auto& vc = v_cache_[l];
  GrowKv(l, pos_ + M);
  // Attention block.
  RmsNorm(x_.data(), *w.attn_norm, M, H, c_.rms_norm_eps, xn_.data());
  MatMul(*w.q, xn_.data(), M, q_.data(), w.q_bias);
  MatMul(*w.k, xn_.data(), M, k_.data(), w.k_bias);
  MatMul(*w.v, xn_.data(), M, v_.data(), w.v_bias);
  for (int64_t m = 0; m < M; ++m) {
    Rope(q_.data() + m * c_.heads * c_.head_dim, c_.heads, c_.head_dim, pos_ + m, inv_freq_.data());
    Rope(k_.data() + m * KV, c_.kv_heads, c_.head_dim, pos_ + m, inv_freq_.data());
  }
  std::copy(k_.begin(), k_.begin() + M * KV, kc.begin() + pos_ * KV);
  std::copy(v_.begin(), v_.begin() + M * KV, vc.begin() + pos_ * KV);
  Attention(q_.data(), kc.data(), vc.data(), M, pos_, c_.heads, c_.kv_heads, c_.head_dim, c_.window[l], att_.data());
  MatMul(*w.o, att_.data(), M, tmp_.data());
  for (int64_t i = 0; i < M * H; ++i) x_[i] += tmp_[i];
  // MLP block.
  RmsNorm(x_.data(), *w.ffn_norm, M, H, c_.rms_norm_eps, xn_.data());
  MatMul(*w.gate, xn_.data(), M, g_.data());
  MatMul(*w.up, xn_.data(), M, u_.data());
  SwiGlu(g_.data(), u_.data(), M * c_.intermediate);
  MatMul(*w.down, g_.data(), M, tmp_.data());
  for (int64_t i = 0; i < M * H; ++i) x_[i] += tmp_[i];
}

void CpuBackend::Logits(const float* x, int64_t M, float* out) {
  RmsNorm(x, *m_.final_norm, M, c_.hidden, c_.rms_norm_eps, xn_.data());
  MatMul(*m_.lm_head, xn_.data(), M, out);
}

void CpuBackend::Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) {
  CheckForwardInput(c_, opts_, pos_, tokens);
  const int64_t M = static_cast<int64_t>(tokens.size());
  Reserve(M);
  EmbeddingGather(*m_.embed, tokens.data(), M, x_.data());
  for (size_t l = 0; l < m_.layers.size(); ++l) {
    if (opts_.elide && m_.layers[l]->identity()) continue;  // adds exactly nothing
    Layer(l, M);
  }
  pos_ += M;
  const int64_t H = c_.hidden;
  if (all_logits) {
    all_logits->resize(M * c_.vocab);
    Logits(x_.data(), M, all_logits->data());
    if (last_logits) std::copy(all_logits->end() - c_.vocab, all_logits->end(), last_logits);
  } else if (last_logits) {
    Logits(x_.data() + (M - 1) * H, 1, last_logits);
  }
}

}  // namespace

std::string ContextProblem(const ModelConfig& c, int64_t positions) {
  if (positions <= c.max_position_embeddings) return "";
  return "the sequence would be " + std::to_string(positions) + " tokens, past the model's context of " +
         std::to_string(c.max_position_embeddings) + " (max_position_embeddings in config.json)";
}

void CheckForwardInput(const ModelConfig& c, const BackendOptions& opts, int64_t pos, const std::vector<int>& tokens) {
  const int64_t M = static_cast<int64_t>(tokens.size());
  if (M == 0) throw Error("no tokens to run");
  for (int t : tokens)
    if (t < 0 || t >= c.vocab)
      throw Error("token id " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");
  if (std::string p = ContextProblem(c, pos + M); !p.empty()) throw Error(p);
  if (pos + M > opts.max_context)
    throw Error("the sequence would be " + std::to_string(pos + M) + " tokens, past the context of " +
                std::to_string(opts.max_context) + " this backend was sized for");
}

std::unique_ptr<Backend> MakeCpuBackend(const Model& model, const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(model, opts);
}

}  // namespace strata
