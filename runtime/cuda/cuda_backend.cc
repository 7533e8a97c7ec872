// The CUDA backend (see strata/cuda/cuda_backend.h): CpuBackend's forward pass
// with device kernels. Activations are fp32 (the residual stream too).
//
// Prefill (M > 1): GEMM inputs are rounded to the weight dtype for cuBLAS
// (bf16 in, fp32 compute and output), tiled attention over the bf16 cache.
// The o_proj and down_proj products are accumulated straight into the
// residual stream (cuBLAS beta = 1): the residual add costs no extra pass.
//
// Decode (M = 1): the fused kernels of decode.cuh, five per executed layer,
// over buffers of their own that never move, the token and position read
// from device memory; so the whole step (copy in, embedding, layers, final
// norm + LM head, argmax, copy out) is captured once as a CUDA graph and
// replayed for every token (CudaLoadOptions::graphs; without, the same
// launches one by one).
#include "strata/cuda/cuda_backend.h"

#include <algorithm>
#include <string>

#include "attention_prefill.cuh"
#include "convert.cuh"
#include "cuda_check.h"
#include "decode.cuh"
#include "device_memory.h"
#include "device_weights.h"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.h"
#include "membw.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sampling.cuh"
#include "strata/formats/error.h"

namespace strata {

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

struct Cublas {
  cublasHandle_t h = nullptr;
  ~Cublas() {
    if (h) (void)cublasDestroy(h);
  }
};

// What the host and a decode step exchange: in pinned host memory (copied in
// at the step's start, the token copied back at its end) and on the device.
struct DecodeIo {
  int64_t pos = 0;     // the token's position
  int32_t token = 0;   // the token
  int32_t argmax = 0;  // the greedy next token
};

struct PinnedIo {
  DecodeIo* p = nullptr;
  ~PinnedIo() {
    if (p) (void)cudaFreeHost(p);
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

class CudaBackendImpl final : public CudaBackend {
 public:
  CudaBackendImpl(const Model& m, const BackendOptions& opts, const Store& store, const CudaLoadOptions& load);
  ~CudaBackendImpl() override;
  void Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) override;
  int ForwardArgmax(const std::vector<int>& tokens) override;
  int64_t position() const override { return pos_; }
  int elided_layers() const override { return elided_; }
  void Reset() override { pos_ = 0; }
  CudaStats stats() const override;

 private:
  void Check(const std::vector<int>& tokens) const;
  // One decode step of `token` at pos_ (advances pos_); the logits are in
  // logits_ and the argmax in io_->argmax once the stream is synchronized.
  void DecodeStep(int token);
  void EnqueueDecode();
  void CaptureDecode();
  void Reserve(int64_t M);
  void Run(const std::vector<int>& tokens);
  void Layer(size_t l, int64_t M);
  void LastLogits(int64_t M);
  void Linear(const DeviceTensor& w, const float* in, int64_t M, float* y, int64_t ldy, bool accumulate);
  const void* Converted(const float* src, int64_t n, DType dt);
  void Invalidate() { conv_src_ = nullptr; }
  cudaStream_t s() const { return stream_.s; }

  // Handles first: destroyed last, after every buffer below.
  Stream stream_;
  Cublas cublas_;
  const Model& m_;
  const ModelConfig& c_;
  BackendOptions opts_;
  int64_t H_, Q_, KV_, I_, V_;
  int hd_, half_;
  int sm_count_ = 1, elided_ = 0;
  int64_t pos_ = 0, capacity_ = 0, all_capacity_ = 0;
  std::unique_ptr<DeviceWeights> w_;
  DeviceBuffer inv_freq_, argmax_, logits_;
  // Scratch for `capacity_` tokens.
  DeviceBuffer tokens_, rope_table_, x_, xn_, qkv_, att_, gu_, h_, conv_, logits_all_;
  // KV cache of logical layer l, bf16 (max_context, kv_heads*hd); empty when elided.
  std::vector<DeviceBuffer> k_cache_, v_cache_;
  uint64_t kv_bytes_ = 0;
  // Decode: buffers of its own (fixed addresses for the graph).
  bool graphs_ = true;
  int splits_ = 1, graph_nodes_ = 0, decode_kernels_ = 0;
  PinnedIo io_;
  DeviceBuffer d_io_, d_x_, d_q_, d_att_, d_h_, d_attn_ws_;
  Graph graph_;
  const float* conv_src_ = nullptr;
  DType conv_dt_ = DType::kF32;
  int64_t conv_n_ = 0;
};

CudaBackendImpl::CudaBackendImpl(const Model& m, const BackendOptions& opts, const Store& store,
                                 const CudaLoadOptions& load)
    : m_(m), c_(m.config), opts_(opts) {
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
  graphs_ = load.graphs;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_.s, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&cublas_.h));
  CUBLAS_CHECK(cublasSetStream(cublas_.h, stream_.s));

  DeviceLoadOptions dl;
  dl.on_start = load.on_start;
  dl.bytes_done = load.bytes_done;
  dl.fuse = load.fuse;
  if (load.staging_slots) dl.staging_slots = load.staging_slots;
  if (load.staging_slot_bytes) dl.staging_slot_bytes = load.staging_slot_bytes;
  w_ = std::make_unique<DeviceWeights>(store, m, dl, stream_.s);

  const std::vector<double> inv = RopeInvFreq(c_);
  inv_freq_ = DeviceBuffer(sizeof(double) * inv.size(), "RoPE frequencies");
  // On our stream (plain cudaMemcpy runs on the legacy stream, which a
  // non-blocking stream does not wait for), complete before `inv` goes away.
  CUDA_CHECK(cudaMemcpyAsync(inv_freq_.get(), inv.data(), sizeof(double) * inv.size(), cudaMemcpyHostToDevice,
                             stream_.s));
  CUDA_CHECK(cudaStreamSynchronize(stream_.s));
  argmax_ = DeviceBuffer(sizeof(int), "argmax");
  logits_ = DeviceBuffer(sizeof(float) * V_, "logits");

  ConfigureDecodeKernels(H_);
  splits_ = DecodeSplits(c_.heads, sm_count_);
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&io_.p), sizeof(DecodeIo)));
  *io_.p = DecodeIo{};
  d_io_ = DeviceBuffer(sizeof(DecodeIo), "decode state");
  d_x_ = DeviceBuffer(sizeof(float) * H_, "decode activations");
  d_q_ = DeviceBuffer(sizeof(float) * Q_, "decode activations");
  d_att_ = DeviceBuffer(sizeof(float) * Q_, "decode activations");
  d_h_ = DeviceBuffer(sizeof(float) * I_, "decode activations");
  const uint64_t ws_bytes = DecodeAttentionWorkspaceBytes(c_.heads, hd_, splits_);
  d_attn_ws_ = DeviceBuffer(ws_bytes, "decode attention workspace");
  CUDA_CHECK(cudaMemsetAsync(d_attn_ws_.get(), 0, ws_bytes, stream_.s));  // the split counters start at 0
  CUDA_CHECK(cudaStreamSynchronize(stream_.s));

  k_cache_.resize(m.layers.size());
  v_cache_.resize(m.layers.size());
  const size_t cache_bytes = sizeof(uint16_t) * static_cast<size_t>(opts_.max_context) * KV_;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    if (opts_.elide && m.layers[l]->identity()) {
      ++elided_;
      continue;  // never computed: no cache
    }
    k_cache_[l] = DeviceBuffer(cache_bytes, "the KV cache");
    v_cache_[l] = DeviceBuffer(cache_bytes, "the KV cache");
    kv_bytes_ += 2 * cache_bytes;
  }
}

CudaBackendImpl::~CudaBackendImpl() { (void)cudaStreamSynchronize(stream_.s); }

void CudaBackendImpl::Check(const std::vector<int>& tokens) const {
  CheckForwardInput(c_, opts_, pos_, tokens);
}

void CudaBackendImpl::Reserve(int64_t M) {
  if (M <= capacity_) return;
  CUDA_CHECK(cudaStreamSynchronize(s()));  // old buffers may still be in use
  Invalidate();
  const int64_t conv_cols = std::max({H_, Q_, I_});
  tokens_ = DeviceBuffer(sizeof(int) * M, "token ids");
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

void CudaBackendImpl::Run(const std::vector<int>& tokens) {
  const int64_t M = static_cast<int64_t>(tokens.size());
  CUDA_CHECK(cudaMemcpyAsync(tokens_.get(), tokens.data(), sizeof(int) * M, cudaMemcpyHostToDevice, s()));
  const DeviceTensor& e = w_->embed();
  EmbeddingGather(e.data, e.dtype, H_, tokens_.as<int>(), M, x_.as<float>(), s());
  RopeTable(pos_, M, half_, inv_freq_.as<double>(), rope_table_.as<float>(), s());
  for (size_t l = 0; l < m_.layers.size(); ++l) {
    if (opts_.elide && m_.layers[l]->identity()) continue;  // adds exactly nothing
    Layer(l, M);
  }
  pos_ += M;
}

void CudaBackendImpl::Layer(size_t l, int64_t M) {
  const DeviceLayer& w = w_->Layer(m_.layers[l]);
  const int64_t ld = Q_ + 2 * KV_;
  float* x = x_.as<float>();
  float* xn = xn_.as<float>();
  float* qkv = qkv_.as<float>();
  float* att = att_.as<float>();
  uint16_t* kc = k_cache_[l].as<uint16_t>();
  uint16_t* vc = v_cache_[l].as<uint16_t>();
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
  RopeAndStoreKv(qkv, ld, M, c_.heads, c_.kv_heads, hd_, rope_table_.as<float>(), pos_, kc, vc, s());
  AttentionPrefill(qkv, ld, kc, vc, M, pos_, c_.heads, c_.kv_heads, hd_, c_.window[l], att, Q_, s());
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

void CudaBackendImpl::LastLogits(int64_t M) {
  const DeviceTensor& fn = w_->final_norm();
  const DeviceTensor& lm = w_->lm_head();
  RowStack head;
  head.Add(lm.data, lm.dtype, lm.rows, lm.cols);
  NormGemv({x_.as<float>() + (M - 1) * H_, fn.data, fn.dtype, c_.rms_norm_eps}, head, logits_.as<float>(), s());
}

void CudaBackendImpl::EnqueueDecode() {
  DecodeIo* dio = d_io_.as<DecodeIo>();
  const int64_t* pos = &dio->pos;
  int kernels = 0;
  CUDA_CHECK(cudaMemcpyAsync(dio, io_.p, sizeof(DecodeIo), cudaMemcpyHostToDevice, s()));
  const DeviceTensor& e = w_->embed();
  float* x = d_x_.as<float>();
  EmbeddingGather(e.data, e.dtype, H_, &dio->token, 1, x, s());
  ++kernels;
  const double eps = c_.rms_norm_eps;
  for (size_t l = 0; l < m_.layers.size(); ++l) {
    if (opts_.elide && m_.layers[l]->identity()) continue;  // adds exactly nothing
    const DeviceLayer& w = w_->Layer(m_.layers[l]);
    RowStack qkv;
    qkv.Add(w.q.data, w.q.dtype, w.q.rows, w.q.cols, w.q_bias.data, w.q_bias.dtype);
    qkv.Add(w.k.data, w.k.dtype, w.k.rows, w.k.cols, w.k_bias.data, w.k_bias.dtype);
    qkv.Add(w.v.data, w.v.dtype, w.v.rows, w.v.cols, w.v_bias.data, w.v_bias.dtype);
    QkvRopeOutput qo;
    qo.q = d_q_.as<float>();
    qo.k_cache = k_cache_[l].as<uint16_t>();
    qo.v_cache = v_cache_[l].as<uint16_t>();
    qo.pos = pos;
    qo.inv_freq = inv_freq_.as<double>();
    qo.heads = c_.heads;
    qo.kv_heads = c_.kv_heads;
    qo.hd = hd_;
    NormGemvQkvRope({x, w.attn_norm.data, w.attn_norm.dtype, eps}, qkv, qo, s());
    AttentionDecodeAt(d_q_.as<float>(), qo.k_cache, qo.v_cache, pos, c_.heads, c_.kv_heads, hd_, c_.window[l],
                      splits_, d_attn_ws_.get(), d_att_.as<float>(), s());
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
  CUDA_CHECK(cudaMemcpyAsync(&io_.p->argmax, &dio->argmax, sizeof(int32_t), cudaMemcpyDeviceToHost, s()));
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

void CudaBackendImpl::DecodeStep(int token) {
  io_.p->pos = pos_;  // the previous step is complete: every caller synchronizes
  io_.p->token = token;
  if (graphs_) {
    if (!graph_.exec) CaptureDecode();
    CUDA_CHECK(cudaGraphLaunch(graph_.exec, s()));
  } else {
    EnqueueDecode();
  }
  pos_ += 1;
}

void CudaBackendImpl::Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) {
  Check(tokens);
  const int64_t M = static_cast<int64_t>(tokens.size());
  if (M == 1) {
    DecodeStep(tokens[0]);
    if (all_logits) all_logits->resize(static_cast<size_t>(V_));
    float* dst = last_logits ? last_logits : all_logits ? all_logits->data() : nullptr;
    if (dst) CUDA_CHECK(cudaMemcpyAsync(dst, logits_.get(), sizeof(float) * V_, cudaMemcpyDeviceToHost, s()));
    CUDA_CHECK(cudaStreamSynchronize(s()));
    if (last_logits && all_logits) std::copy(last_logits, last_logits + V_, all_logits->begin());
    return;
  }
  Reserve(M);
  Run(tokens);
  if (all_logits) {
    if (M > all_capacity_) {
      CUDA_CHECK(cudaStreamSynchronize(s()));
      logits_all_ = DeviceBuffer(sizeof(float) * M * V_, "logits");
      all_capacity_ = M;
    }
    const DeviceTensor& fn = w_->final_norm();
    RmsNorm(x_.as<float>(), fn.data, fn.dtype, M, H_, c_.rms_norm_eps, xn_.as<float>(), s());
    Invalidate();
    Linear(w_->lm_head(), xn_.as<float>(), M, logits_all_.as<float>(), V_, false);
    all_logits->resize(static_cast<size_t>(M * V_));
    CUDA_CHECK(cudaMemcpyAsync(all_logits->data(), logits_all_.get(), sizeof(float) * M * V_, cudaMemcpyDeviceToHost,
                               s()));
    CUDA_CHECK(cudaStreamSynchronize(s()));
    if (last_logits) std::copy(all_logits->end() - V_, all_logits->end(), last_logits);
    return;
  }
  if (last_logits) {
    LastLogits(M);
    CUDA_CHECK(cudaMemcpyAsync(last_logits, logits_.get(), sizeof(float) * V_, cudaMemcpyDeviceToHost, s()));
  }
  CUDA_CHECK(cudaStreamSynchronize(s()));
}

int CudaBackendImpl::ForwardArgmax(const std::vector<int>& tokens) {
  Check(tokens);
  const int64_t M = static_cast<int64_t>(tokens.size());
  if (M == 1) {
    DecodeStep(tokens[0]);
    CUDA_CHECK(cudaStreamSynchronize(s()));
    return io_.p->argmax;
  }
  Reserve(M);
  Run(tokens);
  LastLogits(M);
  Argmax(logits_.as<float>(), V_, argmax_.as<int>(), s());
  int tok = 0;
  CUDA_CHECK(cudaMemcpyAsync(&tok, argmax_.get(), sizeof(int), cudaMemcpyDeviceToHost, s()));
  CUDA_CHECK(cudaStreamSynchronize(s()));
  return tok;
}

CudaStats CudaBackendImpl::stats() const {
  CudaStats st;
  const DeviceWeightStats& ws = w_->stats();
  st.weight_bytes = ws.tensor_bytes;
  st.weight_bytes_read = ws.blob_bytes_read;
  st.kv_cache_bytes = kv_bytes_;
  for (const DeviceBuffer* b : {&tokens_, &rope_table_, &x_, &xn_, &qkv_, &att_, &gu_, &h_, &conv_, &logits_all_,
                                &inv_freq_, &argmax_, &logits_, &d_io_, &d_x_, &d_q_, &d_att_, &d_h_, &d_attn_ws_})
    st.scratch_bytes += b->size();
  st.device_bytes = DeviceBytesInUse();
  st.device_bytes_peak = DeviceBytesPeak();
  st.staging_bytes = ws.pinned_bytes;
  st.distinct_tensors = ws.distinct_tensors;
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

std::unique_ptr<CudaBackend> MakeCudaBackend(const Model& model, const BackendOptions& opts, const Store& store,
                                             const CudaLoadOptions& load) {
  return std::make_unique<cuda::CudaBackendImpl>(model, opts, store, load);
}

}  // namespace strata
