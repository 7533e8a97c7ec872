// The CUDA backend (see strata/cuda/cuda_backend.h): CpuBackend's forward pass
// with device kernels. Activations are fp32 (the residual stream too).
//
// KV cache: one device pool of kv_stats().total_blocks blocks, block b laid
// out [computed layer slot][K | V][block_tokens][kv_heads * head_dim] bf16
// (kv_pages.h), allocated once; KvSequences holds each sequence's block table.
//
// A batch (ForwardBatch, any items but one decode token of one sequence):
// every item's tokens are concatenated into one activation matrix of M rows,
// so each GEMM reads its weight once for the whole step. GEMM inputs are
// rounded to the weight dtype for cuBLAS (bf16 in, fp32 compute and output);
// the o_proj and down_proj products accumulate straight into the residual
// stream (cuBLAS beta = 1). Per step the host uploads, in one copy, each
// token's id, position and paged-cache row, each item's rows/positions/table
// offset, the attention tiles and the concatenated block tables; RoPE uses each
// token's own position, K/V rows are stored at their paged rows, and the tiled
// attention kernel takes one (item, 64- or 16-query tile) per block and reads
// keys through that item's table. The LM head runs on the rows whose logits
// are wanted only (gathered), argmax on the device.
//
// One sequence, one token (batch-1 decode): the fused kernels of decode.cuh,
// five per executed layer, over buffers of their own that never move; the
// token, its position and the sequence's block table are copied into fixed
// device memory at the step's start, so the whole step (copy in, embedding,
// layers, final norm + LM head, argmax, copy out) is captured once as a CUDA
// graph and replayed for every token of any sequence (CudaLoadOptions::graphs;
// without, the same launches one by one).
#include "strata/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "attention_prefill.cuh"
#include "convert.cuh"
#include "cublas_loader.h"
#include "cuda_check.h"
#include "decode.cuh"
#include "device_memory.h"
#include "device_weights.h"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.h"
#include "kv_pages.h"
#include "membw.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sampling.cuh"
#include "strata/formats/error.h"

namespace strata {

// The pool behind the opaque public handle.
class CudaWeightPool {
 public:
  explicit CudaWeightPool(const Store& store) : store_(store), weights_(store) {}
  const Store& store() const { return store_; }
  cuda::DeviceWeights& weights() { return weights_; }
  const cuda::DeviceWeights& weights() const { return weights_; }

 private:
  const Store& store_;
  cuda::DeviceWeights weights_;
};

namespace cuda {
namespace {

struct Stream {
  cudaStream_t s = nullptr;
  ~Stream() {
    if (s) {
      (void)cudaStreamSynchronize(s);
      (void)cudaStreamDestroy(s);
    }
  }
};

struct CublasHandle {
  cublasHandle_t h = nullptr;
  ~CublasHandle() {
    if (h) (void)Cublas().destroy(h);
  }
};

// What the host and a decode step exchange, in pinned host memory (copied in
// at the step's start, the token copied back at its end) and on the device:
// this header, then the sequence's block table (max_blocks int32s).
struct DecodeIo {
  int64_t pos = 0;     // the token's position
  int32_t token = 0;   // the token
  int32_t argmax = 0;  // the greedy next token
};
static_assert(sizeof(DecodeIo) == 16, "the block table follows at 16 bytes");

struct Pinned {
  void* p = nullptr;
  size_t n = 0;
  Pinned() = default;
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  ~Pinned() { Free(); }
  void Free() {
    if (p) (void)cudaFreeHost(p);
    p = nullptr;
    n = 0;
  }
  void Alloc(size_t bytes) {
    Free();
    CUDA_CHECK(cudaMallocHost(&p, bytes));
    n = bytes;
  }
};

struct Graph {
  cudaGraph_t g = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec) (void)cudaGraphExecDestroy(exec);
    if (g) (void)cudaGraphDestroy(g);
  }
};

size_t Align16(size_t n) { return (n + 15) / 16 * 16; }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Byte offsets of a batch step's metadata, one upload (host pinned -> device).
struct MetaLayout {
  size_t tokens = 0, positions = 0, rows = 0, items = 0, tiles = 0, tables = 0, logit_rows = 0, bytes = 0;
  MetaLayout(int64_t M, int64_t B, int64_t n_tiles, int64_t n_table, int64_t R) {
    size_t o = 0;
    auto take = [&](size_t n) {
      const size_t at = o;
      o += Align16(n);
      return at;
    };
    tokens = take(sizeof(int32_t) * M);
    positions = take(sizeof(int64_t) * M);
    rows = take(sizeof(int64_t) * M);
    items = take(sizeof(AttentionItem) * B);
    tiles = take(sizeof(AttentionTile) * n_tiles);
    tables = take(sizeof(int32_t) * n_table);
    logit_rows = take(sizeof(int32_t) * R);
    bytes = o;
  }
};

class CudaBackendImpl final : public CudaBackend {
 public:
  CudaBackendImpl(const Model& m, const BackendOptions& opts, std::shared_ptr<CudaWeightPool> pool,
                  const CudaLoadOptions& load);
  ~CudaBackendImpl() override;
  int CreateSequence() override { return kv_->Create(); }
  void ReleaseSequence(int seq) override { kv_->Release(seq); }
  void TruncateSequence(int seq, int64_t length) override { kv_->Truncate(seq, length); }
  int64_t SequenceLength(int seq) const override { return kv_->Length(seq); }
  void ForwardBatch(const std::vector<BatchItem>& items) override;
  KvStats kv_stats() const override { return kv_->stats(); }
  int elided_layers() const override { return elided_; }
  std::string kernels() const override { return "cuda"; }
  CudaStats stats() const override;

 private:
  // One decode step of `item` (one token) at `pos`: the graph path.
  void DecodeItem(const BatchItem& item, int64_t pos);
  void EnqueueDecode();
  void CaptureDecode();
  // Any other batch: the GEMM path.
  void RunBatch(const std::vector<BatchItem>& items, const std::vector<int64_t>& pos0);
  void Reserve(int64_t M);
  void ReserveMeta(size_t bytes);
  void Layer(size_t l, int64_t M, int64_t n_tiles);
  void Linear(const DeviceTensor& w, const float* in, int64_t M, float* y, int64_t ldy, bool accumulate);
  const void* Converted(const float* src, int64_t n, DType dt);
  void Invalidate() { conv_src_ = nullptr; }
  cudaStream_t s() const { return stream_.s; }
  uint16_t* KBase(size_t l) const { return kv_pool_.as<uint16_t>() + slot_[l] * 2 * T_ * KV_; }
  uint16_t* VBase(size_t l) const { return KBase(l) + T_ * KV_; }
  template <typename T>
  T* MetaDev(size_t off) const { return reinterpret_cast<T*>(meta_dev_.as<char>() + off); }
  template <typename T>
  T* MetaHost(size_t off) const { return reinterpret_cast<T*>(static_cast<char*>(meta_host_.p) + off); }

  // Handles first: destroyed last, after every buffer below. The pool next
  // (shared: freed only with its last holder, after this backend's buffers).
  Stream stream_;
  CublasHandle cublas_;
  std::shared_ptr<CudaWeightPool> pool_;
  const Model& m_;
  const ModelConfig& c_;
  BackendOptions opts_;
  int64_t H_, Q_, KV_, I_, V_;
  int hd_, half_;
  int sm_count_ = 1, elided_ = 0;
  int64_t capacity_ = 0, logits_capacity_ = 0, argmax_capacity_ = 0;
  std::unique_ptr<ModelBindings> w_;  // this model's views into pool_
  DeviceBuffer inv_freq_, logits_;
  // Batch scratch for `capacity_` tokens.
  DeviceBuffer rope_table_, x_, xn_, qkv_, att_, gu_, h_, conv_, logits_all_, argmax_;
  // The step's metadata (MetaLayout): pinned host copy and device copy.
  Pinned meta_host_;
  DeviceBuffer meta_dev_;
  MetaLayout meta_{0, 0, 0, 0, 0};
  // Paged KV cache: the pool, the slot of each logical layer (-1: elided).
  int T_ = kDefaultKvBlockTokens;
  int64_t block_stride_ = 0;  // elements per block
  int64_t max_blocks_ = 1;    // block table entries one sequence can have
  std::vector<int64_t> slot_;
  DeviceBuffer kv_pool_;
  std::unique_ptr<KvSequences> kv_;
  // Decode: buffers of its own (fixed addresses for the graph).
  bool graphs_ = true, fast_decode_ = true;
  int splits_ = 1, graph_nodes_ = 0, decode_kernels_ = 0;
  Pinned io_;
  DeviceBuffer d_io_, d_x_, d_q_, d_att_, d_h_, d_attn_ws_;
  Graph graph_;
  const float* conv_src_ = nullptr;
  DType conv_dt_ = DType::kF32;
  int64_t conv_n_ = 0;
};

CudaBackendImpl::CudaBackendImpl(const Model& m, const BackendOptions& opts, std::shared_ptr<CudaWeightPool> pool,
                                 const CudaLoadOptions& load)
    : CudaBackend(m.config), pool_(std::move(pool)), m_(m), c_(m.config), opts_(opts) {
  RequireCudaDevice();
  H_ = c_.hidden;
  Q_ = int64_t{c_.heads} * c_.head_dim;
  KV_ = int64_t{c_.kv_heads} * c_.head_dim;
  I_ = c_.intermediate;
  V_ = c_.vocab;
  hd_ = c_.head_dim;
  half_ = hd_ / 2;
  if (hd_ <= 0 || hd_ % 2 != 0 || hd_ > 256)
    throw Error("the CUDA backend supports head_dim up to 256 (even); this model has " + std::to_string(hd_) +
                "; use --device cpu");
  if (c_.kv_heads <= 0 || c_.heads % c_.kv_heads != 0)
    throw Error("num_attention_heads must be a multiple of num_key_value_heads");
  if (opts_.max_context <= 0) opts_.max_context = c_.max_position_embeddings;
  if (opts_.kv_block_tokens < 0) throw Error("the KV block size must be positive");
  T_ = opts_.kv_block_tokens > 0 ? opts_.kv_block_tokens : kDefaultKvBlockTokens;
  graphs_ = load.graphs;
  fast_decode_ = load.fast_decode;

  // The KV layout and budget first: a budget smaller than one block is an
  // error before any weight is read.
  slot_.assign(m.layers.size(), -1);
  int64_t slots = 0;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    if (opts_.elide && m.layers[l]->identity()) {
      ++elided_;
      continue;  // never computed: no cache
    }
    slot_[l] = slots++;
  }
  block_stride_ = slots * 2 * T_ * KV_;
  const uint64_t block_bytes = sizeof(uint16_t) * static_cast<uint64_t>(block_stride_);
  const int64_t total_blocks = KvBlocksForBudget(opts_.kv_budget_bytes, block_bytes, T_, opts_.max_context);
  kv_ = std::make_unique<KvSequences>(total_blocks, T_, block_bytes);
  max_blocks_ = std::max<int64_t>(1, std::min<int64_t>(total_blocks, (opts_.max_context + T_ - 1) / T_));

  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_.s, cudaStreamNonBlocking));
  const CublasApi& blas = Cublas();  // throws a clear Error when cuBLAS cannot be loaded
  CUBLAS_CHECK(blas.create(&cublas_.h));
  CUBLAS_CHECK(blas.set_stream(cublas_.h, stream_.s));

  DeviceLoadOptions dl;
  dl.on_start = load.on_start;
  dl.bytes_done = load.bytes_done;
  dl.fuse = load.fuse;
  if (load.staging_slots) dl.staging_slots = load.staging_slots;
  if (load.staging_slot_bytes) dl.staging_slot_bytes = load.staging_slot_bytes;
  w_ = std::make_unique<ModelBindings>(pool_->weights().Add(m, dl, stream_.s));

  const std::vector<double> inv = RopeInvFreq(c_);
  inv_freq_ = DeviceBuffer(sizeof(double) * inv.size(), "RoPE frequencies");
  // On our stream (plain cudaMemcpy runs on the legacy stream, which a
  // non-blocking stream does not wait for), complete before `inv` goes away.
  CUDA_CHECK(cudaMemcpyAsync(inv_freq_.get(), inv.data(), sizeof(double) * inv.size(), cudaMemcpyHostToDevice,
                             stream_.s));
  CUDA_CHECK(cudaStreamSynchronize(stream_.s));
  logits_ = DeviceBuffer(sizeof(float) * V_, "logits");

  ConfigureDecodeKernels(H_);
  splits_ = DecodeSplits(c_.heads, sm_count_);
  const size_t io_bytes = sizeof(DecodeIo) + sizeof(int32_t) * static_cast<size_t>(max_blocks_);
  io_.Alloc(io_bytes);
  std::memset(io_.p, 0, io_bytes);
  d_io_ = DeviceBuffer(io_bytes, "decode state");
  d_x_ = DeviceBuffer(sizeof(float) * H_, "decode activations");
  d_q_ = DeviceBuffer(sizeof(float) * Q_, "decode activations");
  d_att_ = DeviceBuffer(sizeof(float) * Q_, "decode activations");
  d_h_ = DeviceBuffer(sizeof(float) * I_, "decode activations");
  const uint64_t ws_bytes = DecodeAttentionWorkspaceBytes(c_.heads, hd_, splits_);
  d_attn_ws_ = DeviceBuffer(ws_bytes, "decode attention workspace");
  CUDA_CHECK(cudaMemsetAsync(d_attn_ws_.get(), 0, ws_bytes, stream_.s));  // the split counters start at 0
  CUDA_CHECK(cudaMemsetAsync(d_io_.get(), 0, io_bytes, stream_.s));
  CUDA_CHECK(cudaStreamSynchronize(stream_.s));

  if (block_bytes > 0)
    kv_pool_ = DeviceBuffer(static_cast<size_t>(block_bytes) * static_cast<size_t>(total_blocks), "the KV cache");
}

CudaBackendImpl::~CudaBackendImpl() { (void)cudaStreamSynchronize(stream_.s); }

void CudaBackendImpl::Reserve(int64_t M) {
  if (M <= capacity_) return;
  CUDA_CHECK(cudaStreamSynchronize(s()));  // old buffers may still be in use
  Invalidate();
  const int64_t conv_cols = std::max({H_, Q_, I_});
  rope_table_ = DeviceBuffer(sizeof(float) * 2 * M * half_, "the RoPE table");
  x_ = DeviceBuffer(sizeof(float) * M * H_, "activations");
  xn_ = DeviceBuffer(sizeof(float) * M * H_, "activations");
  qkv_ = DeviceBuffer(sizeof(float) * M * (Q_ + 2 * KV_), "activations");
  att_ = DeviceBuffer(sizeof(float) * M * Q_, "activations");
  gu_ = DeviceBuffer(sizeof(float) * M * 2 * I_, "activations");
  h_ = DeviceBuffer(sizeof(float) * M * I_, "activations");
  conv_ = DeviceBuffer(sizeof(uint16_t) * M * conv_cols, "GEMM inputs");  // bf16/f16 copies (f32 needs none)
  capacity_ = M;
}

void CudaBackendImpl::ReserveMeta(size_t bytes) {
  if (bytes <= meta_host_.n) return;
  CUDA_CHECK(cudaStreamSynchronize(s()));
  const size_t n = std::max<size_t>(bytes, 4096);
  meta_host_.Alloc(n);
  meta_dev_ = DeviceBuffer(n, "batch metadata");
}

const void* CudaBackendImpl::Converted(const float* src, int64_t n, DType dt) {
  if (dt == DType::kF32) return src;
  if (conv_src_ == src && conv_dt_ == dt && conv_n_ == n) return conv_.get();
  CastOnDevice(DType::kF32, src, dt, conv_.get(), static_cast<uint64_t>(n), s());
  conv_src_ = src;
  conv_dt_ = dt;
  conv_n_ = n;
  return conv_.get();
}

void CudaBackendImpl::Linear(const DeviceTensor& w, const float* in, int64_t M, float* y, int64_t ldy,
                             bool accumulate) {
  const int64_t N = w.rows, K = w.cols;
  if (w.zero) {  // a zero weight adds nothing (CPU MatMul: exact zeros)
    if (!accumulate)
      CUDA_CHECK(cudaMemset2DAsync(y, sizeof(float) * ldy, 0, sizeof(float) * N, M, s()));
    return;
  }
  Gemm(cublas_.h, w.data, w.dtype, N, K, Converted(in, M * K, w.dtype), M, y, ldy, accumulate);
}

void CudaBackendImpl::ForwardBatch(const std::vector<BatchItem>& items) {
  // Validation and block growth, all or nothing (a refused batch changes no sequence).
  const std::vector<int64_t> pos0 = PrepareBatch(c_, opts_, *kv_, items);
  if (items.empty()) return;
  try {
    if (fast_decode_ && items.size() == 1 && items[0].n == 1) DecodeItem(items[0], pos0[0]);
    else RunBatch(items, pos0);
  } catch (...) {
    // Nothing was computed for certain: give the positions (and blocks) back.
    for (size_t i = 0; i < items.size(); ++i)
      if (kv_->Live(items[i].seq) && kv_->Length(items[i].seq) > pos0[i]) kv_->Truncate(items[i].seq, pos0[i]);
    throw;
  }
}

void CudaBackendImpl::RunBatch(const std::vector<BatchItem>& items, const std::vector<int64_t>& pos0) {
  const int64_t B = static_cast<int64_t>(items.size());
  const int tq = AttentionPrefillTileQueries(hd_);
  int64_t M = 0, R = 0, n_tiles = 0, n_table = 0;
  for (const BatchItem& it : items) {
    M += it.n;
    R += it.output == BatchOutput::kAllLogits ? it.n : it.output == BatchOutput::kNone ? 0 : 1;
    n_tiles += CeilDiv(it.n, tq);
    n_table += static_cast<int64_t>(kv_->Blocks(it.seq).size());
  }
  if (M > INT32_MAX) throw Error("a batch of " + std::to_string(M) + " tokens is too large");
  Reserve(M);
  const MetaLayout L(M, B, n_tiles, n_table, R);
  ReserveMeta(L.bytes);
  meta_ = L;
  if (R > logits_capacity_) {
    CUDA_CHECK(cudaStreamSynchronize(s()));
    logits_all_ = DeviceBuffer(sizeof(float) * R * V_, "logits");
    logits_capacity_ = R;
  }
  if (B > argmax_capacity_) {
    CUDA_CHECK(cudaStreamSynchronize(s()));
    argmax_ = DeviceBuffer(sizeof(int32_t) * B, "argmax");
    argmax_capacity_ = B;
  }

  // The step's metadata, on the host (the previous step is complete: every
  // step ends synchronized), then one copy.
  int32_t* tokens = MetaHost<int32_t>(L.tokens);
  int64_t* positions = MetaHost<int64_t>(L.positions);
  int64_t* rows = MetaHost<int64_t>(L.rows);
  AttentionItem* ai = MetaHost<AttentionItem>(L.items);
  AttentionTile* tiles = MetaHost<AttentionTile>(L.tiles);
  int32_t* tables = MetaHost<int32_t>(L.tables);
  int32_t* logit_rows = MetaHost<int32_t>(L.logit_rows);
  std::vector<int64_t> first_logit_row(static_cast<size_t>(B), -1);
  int64_t row = 0, toff = 0, r = 0, t = 0;
  for (int64_t i = 0; i < B; ++i) {
    const BatchItem& it = items[i];
    const std::vector<int32_t>& blocks = kv_->Blocks(it.seq);
    ai[i] = AttentionItem{row, it.n, pos0[i], toff};
    for (int64_t q0 = 0; q0 < it.n; q0 += tq) tiles[t++] = AttentionTile{static_cast<int32_t>(i), static_cast<int32_t>(q0)};
    for (int64_t m = 0; m < it.n; ++m) {
      const int64_t p = pos0[i] + m;
      tokens[row + m] = it.tokens[m];
      positions[row + m] = p;
      rows[row + m] = static_cast<int64_t>(blocks[p / T_]) * block_stride_ + (p % T_) * KV_;
    }
    std::copy(blocks.begin(), blocks.end(), tables + toff);
    if (it.output == BatchOutput::kAllLogits) {
      first_logit_row[i] = r;
      for (int64_t m = 0; m < it.n; ++m) logit_rows[r++] = static_cast<int32_t>(row + m);
    } else if (it.output != BatchOutput::kNone) {
      first_logit_row[i] = r;
      logit_rows[r++] = static_cast<int32_t>(row + it.n - 1);
    }
    row += it.n;
    toff += static_cast<int64_t>(blocks.size());
  }
  CUDA_CHECK(cudaMemcpyAsync(meta_dev_.get(), meta_host_.p, L.bytes, cudaMemcpyHostToDevice, s()));

  const DeviceTensor& e = w_->embed();
  EmbeddingGather(e.data, e.dtype, H_, MetaDev<int32_t>(L.tokens), M, x_.as<float>(), s());
  RopeTableAt(MetaDev<int64_t>(L.positions), M, half_, inv_freq_.as<double>(), rope_table_.as<float>(), s());
  for (size_t l = 0; l < m_.layers.size(); ++l) {
    if (slot_[l] < 0) continue;  // an elided identity layer adds exactly nothing
    Layer(l, M, n_tiles);
  }

  if (R > 0) {
    // The LM head on the wanted rows only: gathered, normalized, one GEMM.
    const DeviceTensor& fn = w_->final_norm();
    float* xr = xn_.as<float>();
    GatherRows(x_.as<float>(), H_, MetaDev<int32_t>(L.logit_rows), R, H_, xr, s());
    RmsNorm(xr, fn.data, fn.dtype, R, H_, c_.rms_norm_eps, xr, s());
    Invalidate();
    Linear(w_->lm_head(), xr, R, logits_all_.as<float>(), V_, false);
  }
  std::vector<int32_t> argmax(static_cast<size_t>(B), -1);
  bool any_argmax = false;
  for (int64_t i = 0; i < B; ++i) {
    const BatchItem& it = items[i];
    if (it.output == BatchOutput::kNone) continue;
    const float* lg = logits_all_.as<float>() + first_logit_row[i] * V_;
    any_argmax = any_argmax || it.output == BatchOutput::kArgmax;
    switch (it.output) {
      case BatchOutput::kNone: break;
      case BatchOutput::kLastLogits:
        CUDA_CHECK(cudaMemcpyAsync(it.logits, lg, sizeof(float) * V_, cudaMemcpyDeviceToHost, s()));
        break;
      case BatchOutput::kAllLogits:
        CUDA_CHECK(cudaMemcpyAsync(it.logits, lg, sizeof(float) * V_ * it.n, cudaMemcpyDeviceToHost, s()));
        break;
      case BatchOutput::kArgmax: Argmax(lg, V_, argmax_.as<int>() + i, s()); break;
    }
  }
  if (any_argmax)
    CUDA_CHECK(cudaMemcpyAsync(argmax.data(), argmax_.get(), sizeof(int32_t) * B, cudaMemcpyDeviceToHost, s()));
  CUDA_CHECK(cudaStreamSynchronize(s()));
  for (int64_t i = 0; i < B; ++i)
    if (items[i].output == BatchOutput::kArgmax) *items[i].argmax = argmax[i];
}

void CudaBackendImpl::Layer(size_t l, int64_t M, int64_t n_tiles) {
  const DeviceLayer& w = w_->Layer(m_.layers[l]);
  const int64_t ld = Q_ + 2 * KV_;
  float* x = x_.as<float>();
  float* xn = xn_.as<float>();
  float* qkv = qkv_.as<float>();
  float* att = att_.as<float>();
  uint16_t* kc = KBase(l);
  uint16_t* vc = VBase(l);
  const double eps = c_.rms_norm_eps;

  // Attention block.
  RmsNorm(x, w.attn_norm.data, w.attn_norm.dtype, M, H_, eps, xn, s());
  Invalidate();
  if (w.qkv) {
    Linear(w.qkv, xn, M, qkv, ld, false);
  } else {
    Linear(w.q, xn, M, qkv, ld, false);
    Linear(w.k, xn, M, qkv + Q_, ld, false);
    Linear(w.v, xn, M, qkv + Q_ + KV_, ld, false);
  }
  if (w.q_bias) AddBias(qkv, ld, M, Q_, w.q_bias.data, w.q_bias.dtype, s());
  if (w.k_bias) AddBias(qkv + Q_, ld, M, KV_, w.k_bias.data, w.k_bias.dtype, s());
  if (w.v_bias) AddBias(qkv + Q_ + KV_, ld, M, KV_, w.v_bias.data, w.v_bias.dtype, s());
  RopeAndStoreKvRows(qkv, ld, M, c_.heads, c_.kv_heads, hd_, rope_table_.as<float>(), MetaDev<int64_t>(meta_.rows),
                     kc, vc, s());
  KvPages pages;
  pages.table = MetaDev<int32_t>(meta_.tables);
  pages.block_stride = block_stride_;
  pages.block_tokens = T_;
  AttentionPrefillBatch(qkv, ld, kc, vc, pages, MetaDev<AttentionItem>(meta_.items), MetaDev<AttentionTile>(meta_.tiles),
                        n_tiles, c_.heads, c_.kv_heads, hd_, c_.window[l], att, Q_, s());
  Invalidate();  // att_ holds new values
  Linear(w.o, att, M, x, H_, /*accumulate=*/true);

  // MLP block.
  RmsNorm(x, w.ffn_norm.data, w.ffn_norm.dtype, M, H_, eps, xn, s());
  Invalidate();
  float* gu = gu_.as<float>();
  if (w.gate_up) {
    Linear(w.gate_up, xn, M, gu, 2 * I_, false);
  } else {
    Linear(w.gate, xn, M, gu, 2 * I_, false);
    Linear(w.up, xn, M, gu + I_, 2 * I_, false);
  }
  SwiGlu(gu, 2 * I_, M, I_, h_.as<float>(), s());
  Invalidate();
  Linear(w.down, h_.as<float>(), M, x, H_, /*accumulate=*/true);
}

void CudaBackendImpl::EnqueueDecode() {
  DecodeIo* dio = d_io_.as<DecodeIo>();
  const int64_t* pos = &dio->pos;
  KvPages pages;
  pages.table = reinterpret_cast<const int32_t*>(d_io_.as<char>() + sizeof(DecodeIo));
  pages.block_stride = block_stride_;
  pages.block_tokens = T_;
  int kernels = 0;
  CUDA_CHECK(cudaMemcpyAsync(dio, io_.p, io_.n, cudaMemcpyHostToDevice, s()));
  const DeviceTensor& e = w_->embed();
  float* x = d_x_.as<float>();
  EmbeddingGather(e.data, e.dtype, H_, &dio->token, 1, x, s());
  ++kernels;
  const double eps = c_.rms_norm_eps;
  for (size_t l = 0; l < m_.layers.size(); ++l) {
    if (slot_[l] < 0) continue;  // an elided identity layer adds exactly nothing
    const DeviceLayer& w = w_->Layer(m_.layers[l]);
    RowStack qkv;
    qkv.Add(w.q.data, w.q.dtype, w.q.rows, w.q.cols, w.q_bias.data, w.q_bias.dtype);
    qkv.Add(w.k.data, w.k.dtype, w.k.rows, w.k.cols, w.k_bias.data, w.k_bias.dtype);
    qkv.Add(w.v.data, w.v.dtype, w.v.rows, w.v.cols, w.v_bias.data, w.v_bias.dtype);
    QkvRopeOutput qo;
    qo.q = d_q_.as<float>();
    qo.k_cache = KBase(l);
    qo.v_cache = VBase(l);
    qo.pages = pages;
    qo.pos = pos;
    qo.inv_freq = inv_freq_.as<double>();
    qo.heads = c_.heads;
    qo.kv_heads = c_.kv_heads;
    qo.hd = hd_;
    NormGemvQkvRope({x, w.attn_norm.data, w.attn_norm.dtype, eps}, qkv, qo, s());
    AttentionDecodeAt(d_q_.as<float>(), qo.k_cache, qo.v_cache, pos, c_.heads, c_.kv_heads, hd_, c_.window[l],
                      splits_, d_attn_ws_.get(), d_att_.as<float>(), s(), pages);
    kernels += 2;
    if (!w.o.zero) {  // a zero o_proj adds nothing (as Linear: exact)
      GemvAccumulate(w.o.data, w.o.dtype, w.o.rows, w.o.cols, d_att_.as<float>(), x, s());
      ++kernels;
    }
    RowStack gu;
    gu.Add(w.gate.data, w.gate.dtype, w.gate.rows, w.gate.cols);
    gu.Add(w.up.data, w.up.dtype, w.up.rows, w.up.cols);
    if (!w.down.zero) {  // with a zero down_proj the MLP adds nothing: skip it whole
      NormGemvSwiGlu({x, w.ffn_norm.data, w.ffn_norm.dtype, eps}, gu, d_h_.as<float>(), s());
      GemvAccumulate(w.down.data, w.down.dtype, w.down.rows, w.down.cols, d_h_.as<float>(), x, s());
      kernels += 2;
    }
  }
  const DeviceTensor& fn = w_->final_norm();
  const DeviceTensor& lm = w_->lm_head();
  RowStack head;
  head.Add(lm.data, lm.dtype, lm.rows, lm.cols);
  NormGemv({x, fn.data, fn.dtype, eps}, head, logits_.as<float>(), s());
  Argmax(logits_.as<float>(), V_, &dio->argmax, s());
  kernels += 2;
  CUDA_CHECK(cudaMemcpyAsync(&static_cast<DecodeIo*>(io_.p)->argmax, &dio->argmax, sizeof(int32_t),
                             cudaMemcpyDeviceToHost, s()));
  decode_kernels_ = kernels;
}

void CudaBackendImpl::CaptureDecode() {
  CUDA_CHECK(cudaStreamBeginCapture(s(), cudaStreamCaptureModeThreadLocal));
  try {
    EnqueueDecode();
  } catch (...) {
    cudaGraph_t g = nullptr;
    (void)cudaStreamEndCapture(s(), &g);  // leaves the stream usable
    if (g) (void)cudaGraphDestroy(g);
    (void)cudaGetLastError();
    throw;
  }
  CUDA_CHECK(cudaStreamEndCapture(s(), &graph_.g));
  CUDA_CHECK(cudaGraphInstantiate(&graph_.exec, graph_.g, 0));
  size_t nodes = 0;
  CUDA_CHECK(cudaGraphGetNodes(graph_.g, nullptr, &nodes));
  graph_nodes_ = static_cast<int>(nodes);
}

void CudaBackendImpl::DecodeItem(const BatchItem& item, int64_t pos) {
  // The previous step is complete (every step ends synchronized): the pinned
  // state can be rewritten. The table holds the blocks up to `pos` (grown).
  DecodeIo* io = static_cast<DecodeIo*>(io_.p);
  io->pos = pos;
  io->token = item.tokens[0];
  const std::vector<int32_t>& blocks = kv_->Blocks(item.seq);
  if (static_cast<int64_t>(blocks.size()) > max_blocks_)
    throw Error("internal: a block table longer than the decode buffer");
  std::copy(blocks.begin(), blocks.end(), reinterpret_cast<int32_t*>(static_cast<char*>(io_.p) + sizeof(DecodeIo)));
  if (graphs_) {
    if (!graph_.exec) CaptureDecode();
    CUDA_CHECK(cudaGraphLaunch(graph_.exec, s()));
  } else {
    EnqueueDecode();
  }
  if ((item.output == BatchOutput::kLastLogits || item.output == BatchOutput::kAllLogits))
    CUDA_CHECK(cudaMemcpyAsync(item.logits, logits_.get(), sizeof(float) * V_, cudaMemcpyDeviceToHost, s()));
  CUDA_CHECK(cudaStreamSynchronize(s()));
  if (item.output == BatchOutput::kArgmax) *item.argmax = io->argmax;
}

CudaStats CudaBackendImpl::stats() const {
  CudaStats st;
  const DeviceWeightStats& ws = w_->stats();
  st.weight_bytes = ws.tensor_bytes;
  st.weight_bytes_uploaded = ws.uploaded_bytes;
  st.weight_bytes_read = ws.blob_bytes_read;
  st.kv_cache_bytes = kv_pool_.size();
  for (const DeviceBuffer* b : {&rope_table_, &x_, &xn_, &qkv_, &att_, &gu_, &h_, &conv_, &logits_all_, &argmax_,
                                &meta_dev_, &inv_freq_, &logits_, &d_io_, &d_x_, &d_q_, &d_att_, &d_h_, &d_attn_ws_})
    st.scratch_bytes += b->size();
  st.device_bytes = DeviceBytesInUse();
  st.device_bytes_peak = DeviceBytesPeak();
  st.staging_bytes = ws.pinned_bytes;
  st.distinct_tensors = ws.distinct_tensors;
  st.tensors_uploaded = ws.uploaded_tensors;
  st.fused_qkv = ws.fused_qkv;
  st.fused_gate_up = ws.fused_gate_up;
  st.load_s = ws.seconds;
  st.decode_graph = graphs_;
  st.decode_graph_nodes = graph_nodes_;
  st.decode_kernels_per_step = decode_kernels_;
  return st;
}

}  // namespace
}  // namespace cuda

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

void RequireCudaDevice() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(std::string("no CUDA device: cudaGetDeviceCount failed with ") + cudaGetErrorName(err) + " (" +
                cudaGetErrorString(err) + "; is there an NVIDIA GPU and driver on this machine?); run with --device cpu");
  }
  if (n == 0) throw Error("no CUDA device: cudaGetDeviceCount reports 0 devices; run with --device cpu");
}

bool CudaMemInfo(uint64_t* free_bytes, uint64_t* total_bytes) {
  size_t f = 0, t = 0;
  if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  *free_bytes = f;
  *total_bytes = t;
  return true;
}

std::string CudaDeviceSummary() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no CUDA device (") + cudaGetErrorString(err) + ")";
  }
  if (n == 0) return "no CUDA device";
  int dev = 0;
  cudaDeviceProp p{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return "CUDA device (properties unavailable)";
  }
  char gib[32];
  snprintf(gib, sizeof gib, "%.1f", static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024 * 1024));
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.multiProcessorCount) + " SMs, " + gib + " GiB)";
}

double MeasureDeviceReadBandwidth(uint64_t bytes, int reps) {
  RequireCudaDevice();
  return cuda::ReadBandwidth(bytes, reps);
}

std::shared_ptr<CudaWeightPool> MakeCudaWeightPool(const Store& store) {
  RequireCudaDevice();
  return std::make_shared<CudaWeightPool>(store);
}

uint64_t CudaWeightPoolBytes(const CudaWeightPool& pool) { return pool.weights().bytes(); }

int CudaWeightPoolTensors(const CudaWeightPool& pool) { return pool.weights().tensors(); }

std::unique_ptr<CudaBackend> MakeCudaBackend(const Model& model, const BackendOptions& opts, const Store& store,
                                             const CudaLoadOptions& load, std::shared_ptr<CudaWeightPool> pool) {
  if (!pool) {
    pool = MakeCudaWeightPool(store);
  } else if (&pool->store() != &store) {
    throw Error("internal: a CUDA weight pool serves the backends of one store; this one was made for " +
                pool->store().root() + ", not " + store.root());
  }
  return std::make_unique<cuda::CudaBackendImpl>(model, opts, std::move(pool), load);
}

}  // namespace strata
