// The CUDA backend (see strata/cuda/cuda_backend.h): CpuBackend's forward pass
// with device kernels. Activations are fp32 (the residual stream too); GEMM
// inputs are rounded to the weight dtype for cuBLAS (bf16 in, fp32 compute
// and output); decode reads weights directly with the GEMV kernel. The o_proj
// and down_proj products are accumulated straight into the residual stream
// (cuBLAS beta = 1, GEMV accumulate): the residual add costs no extra pass.
#include "strata/cuda/cuda_backend.h"

#include <algorithm>
#include <string>

#include "attention_decode.cuh"
#include "attention_prefill.cuh"
#include "convert.cuh"
#include "cuda_check.h"
#include "device_memory.h"
#include "device_weights.h"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.h"
#include "gemv.cuh"
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
  DeviceBuffer inv_freq_, decode_ws_, argmax_, logits_;
  // Scratch for `capacity_` tokens.
  DeviceBuffer tokens_, rope_table_, x_, xn_, qkv_, att_, gu_, h_, conv_, logits_all_;
  // KV cache of logical layer l, bf16 (max_context, kv_heads*hd); empty when elided.
  std::vector<DeviceBuffer> k_cache_, v_cache_;
  uint64_t kv_bytes_ = 0;
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
  decode_ws_ = DeviceBuffer(sizeof(float) * AttentionDecodeWorkspaceFloats(c_.heads, hd_), "decode attention workspace");
  argmax_ = DeviceBuffer(sizeof(int), "argmax");
  logits_ = DeviceBuffer(sizeof(float) * V_, "logits");

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
  if (M == 1) {
    Gemv(w.data, w.dtype, N, K, in, y, accumulate, nullptr, DType::kF32, s());
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
  if (M == 1)
    AttentionDecode(qkv, kc, vc, pos_, c_.heads, c_.kv_heads, hd_, c_.window[l], sm_count_, decode_ws_.as<float>(),
                    att, s());
  else
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
  RmsNorm(x_.as<float>() + (M - 1) * H_, fn.data, fn.dtype, 1, H_, c_.rms_norm_eps, xn_.as<float>(), s());
  Invalidate();
  Linear(w_->lm_head(), xn_.as<float>(), 1, logits_.as<float>(), V_, false);
}

void CudaBackendImpl::Forward(const std::vector<int>& tokens, float* last_logits, std::vector<float>* all_logits) {
  Check(tokens);
  const int64_t M = static_cast<int64_t>(tokens.size());
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
                                &inv_freq_, &decode_ws_, &argmax_, &logits_})
    st.scratch_bytes += b->size();
  st.device_bytes = DeviceBytesInUse();
  st.device_bytes_peak = DeviceBytesPeak();
  st.staging_bytes = ws.pinned_bytes;
  st.distinct_tensors = ws.distinct_tensors;
  st.fused_qkv = ws.fused_qkv;
  st.fused_gate_up = ws.fused_gate_up;
  st.load_s = ws.seconds;
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

std::unique_ptr<CudaBackend> MakeCudaBackend(const Model& model, const BackendOptions& opts, const Store& store,
                                             const CudaLoadOptions& load) {
  return std::make_unique<cuda::CudaBackendImpl>(model, opts, store, load);
}

}  // namespace strata
