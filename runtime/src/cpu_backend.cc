// The CPU backend: the forward pass of LlamaForCausalLM / MistralForCausalLM /
// Qwen2ForCausalLM over shared weight sets, batched over sequences, with a
// paged KV cache (docs/runtime.md): each logical layer has its own rows in
// every block; the weights are shared.
#include <sched.h>
#include <sys/mman.h>
#include <tbb/task_arena.h>
#include <tbb/task_scheduler_observer.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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
  ~CpuBackend() override;
  int CreateSequence() override { return kv_->Create(); }
  void ReleaseSequence(int seq) override { kv_->Release(seq); }
  void TruncateSequence(int seq, int64_t length) override { kv_->Truncate(seq, length); }
  int64_t SequenceLength(int seq) const override { return kv_->Length(seq); }
  void ForwardBatch(const std::vector<BatchItem>& items) override;
  KvStats kv_stats() const override { return kv_->stats(); }
  int elided_layers() const override { return elided_; }
  std::string kernels() const override { return std::string(CpuKernelsName()); }

 private:
  void Reserve(int64_t M);
  void Layer(size_t l, const std::vector<BatchItem>& items, const std::vector<int64_t>& pos, int64_t M);
  void Outputs(const std::vector<BatchItem>& items);
  // Where K (V: + block_tokens rows) of `slot`'s rows of block `b` start.
  float* BlockRows(int32_t b, int slot) const { return pool_ + int64_t{b} * block_floats_ + int64_t{slot} * 2 * B_ * KVs_; }

  PinWorkers pin_;
  const Model& m_;
  const ModelConfig& c_;
  BackendOptions opts_;
  std::vector<double> inv_freq_;
  int elided_ = 0;
  // KV: logical layer l's slot in a block (-1: elided, no cache).
  std::vector<int> slot_;
  int slots_ = 0, B_ = kDefaultKvBlockTokens;
  int64_t KVs_ = 0;  // floats per K (or V) row: kv_heads * head_dim
  // Floats from one block to the next: every slot's K and V rows, plus one
  // cache line so that blocks do not all fall on the same cache sets (a
  // power-of-two stride made attention over long sequences thrash them).
  int64_t block_floats_ = 0;
  float* pool_ = nullptr;
  size_t pool_bytes_ = 0;
  std::unique_ptr<KvSequences> kv_;
  // Scratch for M tokens of a step: x, xn, tmp (M, hidden); q, att (M, heads*hd);
  // k, v (M, kv*hd); g, u (M, inter); each token's position and RoPE cos/sin.
  int64_t capacity_ = 0;
  std::vector<float> x_, xn_, q_, k_, v_, att_, tmp_, g_, u_, cos_, sin_;
  std::vector<int> tok_;
  std::vector<int64_t> tpos_;
  std::vector<AttentionJob> jobs_;
  std::vector<float> head_in_, head_out_;  // rows the LM head runs on, and their logits
};

CpuBackend::CpuBackend(const Model& m, const BackendOptions& opts)
    : Backend(m.config), m_(m), c_(m.config), opts_(opts), inv_freq_(RopeInvFreq(m.config)) {
  if (opts_.max_context <= 0) opts_.max_context = c_.max_position_embeddings;
  if (opts_.kv_block_tokens > 0) B_ = opts_.kv_block_tokens;
  KVs_ = int64_t{c_.kv_heads} * c_.head_dim;
  for (const WeightSet* ws : m.layers) {
    const bool skip = opts_.elide && ws->identity();
    elided_ += skip;
    slot_.push_back(skip ? -1 : slots_++);
  }
  block_floats_ = int64_t{slots_} * 2 * B_ * KVs_ + (slots_ > 0 ? 16 : 0);
  const uint64_t block_bytes = sizeof(float) * static_cast<uint64_t>(block_floats_);
  // No sequence passes max_position_embeddings, whatever max_context says.
  const int64_t positions =
      opts_.kv_positions > 0 ? opts_.kv_positions : std::min<int64_t>(opts_.max_context, c_.max_position_embeddings);
  const int64_t blocks = KvBlocksForBudget(opts_.kv_budget_bytes, block_bytes, B_, positions);
  kv_ = std::make_unique<KvSequences>(blocks, B_, block_bytes);
  pool_bytes_ = std::max<size_t>(1, static_cast<size_t>(blocks) * block_bytes);
  // Address space only: a page costs memory when a block is first written.
  void* p = mmap(nullptr, pool_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw Error("cannot reserve " + std::to_string(pool_bytes_ >> 20) + " MiB of address space for the KV cache (" +
                std::strerror(errno) + "); give a smaller KV budget or context");
  pool_ = static_cast<float*>(p);
}

CpuBackend::~CpuBackend() {
  if (pool_) munmap(pool_, pool_bytes_);
}

void CpuBackend::Reserve(int64_t M) {
  if (M <= capacity_) return;
  const int64_t H = c_.hidden, Q = int64_t{c_.heads} * c_.head_dim;
  x_.resize(M * H), xn_.resize(M * H), tmp_.resize(M * H);
  q_.resize(M * Q), att_.resize(M * Q), k_.resize(M * KVs_), v_.resize(M * KVs_);
  g_.resize(M * c_.intermediate), u_.resize(M * c_.intermediate);
  cos_.resize(M * (c_.head_dim / 2)), sin_.resize(M * (c_.head_dim / 2));
  capacity_ = M;
}

void CpuBackend::Layer(size_t l, const std::vector<BatchItem>& items, const std::vector<int64_t>& pos, int64_t M) {
  const WeightSet& w = *m_.layers[l];
  const int slot = slot_[l];
  const int64_t H = c_.hidden, Q = int64_t{c_.heads} * c_.head_dim, half = c_.head_dim / 2;
  // Attention block.
  RmsNorm(x_.data(), *w[Role::kAttnNorm], M, H, c_.rms_norm_eps, xn_.data());
  const MatMulOut qkv[3] = {{w[Role::kQ], q_.data(), w[Role::kQBias]},
                            {w[Role::kK], k_.data(), w[Role::kKBias]},
                            {w[Role::kV], v_.data(), w[Role::kVBias]}};
  MatMulMany(qkv, 3, xn_.data(), M);
  for (int64_t t = 0; t < M; ++t) {
    RopeApply(q_.data() + t * Q, c_.heads, c_.head_dim, cos_.data() + t * half, sin_.data() + t * half);
    RopeApply(k_.data() + t * KVs_, c_.kv_heads, c_.head_dim, cos_.data() + t * half, sin_.data() + t * half);
  }
  // K and V rows into each sequence's blocks; one attention job per item.
  jobs_.clear();
  int64_t t = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::vector<int32_t>& blocks = kv_->Blocks(items[i].seq);
    for (int64_t j = 0; j < items[i].n; ++j, ++t) {
      const int64_t p = pos[i] + j;
      float* rows = BlockRows(blocks[p / B_], slot) + (p % B_) * KVs_;
      std::copy_n(k_.data() + t * KVs_, KVs_, rows);
      std::copy_n(v_.data() + t * KVs_, KVs_, rows + B_ * KVs_);
    }
    AttentionJob job;
    job.q = q_.data() + (t - items[i].n) * Q;
    job.out = att_.data() + (t - items[i].n) * Q;
    job.M = items[i].n;
    job.pos0 = pos[i];
    job.kv.k = BlockRows(0, slot);
    job.kv.v = BlockRows(0, slot) + B_ * KVs_;
    job.kv.block_stride = block_floats_;
    job.kv.block_tokens = B_;
    job.kv.blocks = blocks.data();
    jobs_.push_back(job);
  }
  AttentionBatch(jobs_.data(), static_cast<int>(jobs_.size()), c_.heads, c_.kv_heads, c_.head_dim, c_.window[l]);
  if (!w[Role::kO]->zero) {  // a zero o_proj adds exactly nothing
    MatMul(*w[Role::kO], att_.data(), M, tmp_.data());
    for (int64_t i = 0; i < M * H; ++i) x_[i] += tmp_[i];
  }
  if (w[Role::kDown]->zero) return;  // with a zero down_proj the MLP adds exactly nothing
  // MLP block.
  RmsNorm(x_.data(), *w[Role::kFfnNorm], M, H, c_.rms_norm_eps, xn_.data());
  const MatMulOut gu[2] = {{w[Role::kGate], g_.data(), nullptr}, {w[Role::kUp], u_.data(), nullptr}};
  MatMulMany(gu, 2, xn_.data(), M);
  SwiGlu(g_.data(), u_.data(), M * c_.intermediate);
  MatMul(*w[Role::kDown], g_.data(), M, tmp_.data());
  for (int64_t i = 0; i < M * H; ++i) x_[i] += tmp_[i];
}

// The final norm and the LM head over only the rows some item wants, in one
// product (the head is read once for the whole batch).
void CpuBackend::Outputs(const std::vector<BatchItem>& items) {
  const int64_t H = c_.hidden, V = c_.vocab;
  std::vector<int64_t> rows;  // token index of each row the head runs on
  int64_t t = 0;
  for (const BatchItem& it : items) {
    if (it.output == BatchOutput::kAllLogits)
      for (int64_t j = 0; j < it.n; ++j) rows.push_back(t + j);
    else if (it.output != BatchOutput::kNone)
      rows.push_back(t + it.n - 1);
    t += it.n;
  }
  if (rows.empty()) return;
  const int64_t R = static_cast<int64_t>(rows.size());
  head_in_.resize(R * H);
  head_out_.resize(R * V);
  for (int64_t r = 0; r < R; ++r) std::copy_n(x_.data() + rows[r] * H, H, head_in_.data() + r * H);
  RmsNorm(head_in_.data(), *m_.final_norm, R, H, c_.rms_norm_eps, xn_.data());
  MatMul(*m_.lm_head, xn_.data(), R, head_out_.data());
  int64_t r = 0;
  for (const BatchItem& it : items) {
    const float* first = head_out_.data() + r * V;
    switch (it.output) {
      case BatchOutput::kNone: continue;
      case BatchOutput::kAllLogits:
        std::copy_n(first, it.n * V, it.logits);
        r += it.n;
        continue;
      case BatchOutput::kLastLogits:
        std::copy_n(first, V, it.logits);
        break;
      case BatchOutput::kArgmax:
        *it.argmax = static_cast<int>(std::max_element(first, first + V) - first);
        break;
    }
    ++r;
  }
}

void CpuBackend::ForwardBatch(const std::vector<BatchItem>& items) {
  const std::vector<int64_t> pos = PrepareBatch(c_, opts_, *kv_, items);
  int64_t M = 0;
  for (const BatchItem& it : items) M += it.n;
  Reserve(std::max<int64_t>(M, static_cast<int64_t>(items.size())));
  tok_.clear();
  tpos_.clear();
  for (size_t i = 0; i < items.size(); ++i)
    for (int64_t j = 0; j < items[i].n; ++j) {
      tok_.push_back(items[i].tokens[j]);
      tpos_.push_back(pos[i] + j);
    }
  const int half = c_.head_dim / 2;
  for (int64_t t = 0; t < M; ++t)
    RopeAngles(tpos_[t], half, inv_freq_.data(), cos_.data() + t * half, sin_.data() + t * half);
  EmbeddingGather(*m_.embed, tok_.data(), M, x_.data());
  for (size_t l = 0; l < m_.layers.size(); ++l)
    if (slot_[l] >= 0) Layer(l, items, pos, M);  // an elided layer adds exactly nothing
  Outputs(items);
}

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(const Model& model, const BackendOptions& opts) {
  return std::make_unique<CpuBackend>(model, opts);
}

}  // namespace strata
