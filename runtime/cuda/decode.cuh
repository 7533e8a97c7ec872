// The fused batch-1 decode kernels. One decode step is, per executed layer:
//   1. QKV:     RMSNorm(x) . [Wq|Wk|Wv] (+ bias), RoPE on q and k, k and v
//               stored in bf16 at cache row *pos, q kept in fp32
//   2. attention over cache rows [lo, *pos] (split-K, the combine done by
//               the last split block of each head)
//   3. o_proj:  x += Wo . att
//   4. gate/up: h = silu(RMSNorm(x) . Wgate) * (RMSNorm(x) . Wup)
//   5. down:    x += Wdown . h
// and once: the embedding gather, RMSNorm(x) . lm_head into the logits, and
// the argmax. The position is read from device memory, so the whole step can
// be captured once in a CUDA graph and replayed for every token.
//
// The GEMVs stream each weight row once with 16-byte non-caching loads, two
// rows per warp and four chunks per row in flight (eight 16-byte loads per
// lane before the first use); the input vector comes from shared memory
// (normalized there by each block, RMSNorm fused into the GEMV) or through
// L1. Numerics are the unfused kernels': fp32 accumulation, the RMSNorm sum of
// squares in double, RoPE angles in double, K/V rounded to bf16.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kv_pages.h"
#include "strata/formats/dtype.h"

namespace strata::cuda {

// The rows of a decode GEMV: up to three weight tensors of one dtype and
// width stacked (q|k|v, gate|up, or one tensor); row r of the stack is row r
// of the first tensor, then of the second, ... Optional per-row bias per part.
struct RowStack {
  const void* w[3] = {nullptr, nullptr, nullptr};
  int64_t rows[3] = {0, 0, 0};
  const void* bias[3] = {nullptr, nullptr, nullptr};
  DType bias_dt[3] = {DType::kF32, DType::kF32, DType::kF32};
  DType dtype = DType::kBF16;
  int64_t cols = 0;
  int parts = 0;
  // Appends a (rows x cols) part; throws Error when dtype or width differ.
  void Add(const void* weights, DType dt, int64_t r, int64_t c, const void* b = nullptr, DType bdt = DType::kF32);
  int64_t total_rows() const { return rows[0] + rows[1] + rows[2]; }
};

// RMSNorm(x) with weight g: g[i] * (x[i] * (1 / sqrt(mean(x^2) + eps))).
struct NormInput {
  const float* x = nullptr;  // cols fp32 (device)
  const void* g = nullptr;
  DType g_dt = DType::kF32;
  double eps = 1e-5;
};

// Where the QKV kernel leaves its results.
struct QkvRopeOutput {
  float* q = nullptr;                 // heads*hd fp32, rotated
  uint16_t* k_cache = nullptr;        // bf16 rows of kv_heads*hd; row *pos written
  uint16_t* v_cache = nullptr;        // (both: the layer's base pointers when paged)
  KvPages pages;                      // the block table (device); default: contiguous rows
  const int64_t* pos = nullptr;       // device: the token's position
  const double* inv_freq = nullptr;   // device: hd/2 RoPE frequencies
  int heads = 0, kv_heads = 0, hd = 0;
};

// Sets the kernels' shared-memory limit for normalized inputs of up to
// `max_cols` floats (call once per process before launching with a larger
// width; not during stream capture). Throws Error when the device cannot.
void ConfigureDecodeKernels(int64_t max_cols);

// y[r] = stack row r . RMSNorm(x) (+ bias), every row of the stack.
void NormGemv(const NormInput& in, const RowStack& w, float* y, cudaStream_t stream);
// Stack = gate (I rows) | up (I rows): h[i] = silu(gate_i . n) * (up_i . n), n = RMSNorm(x).
void NormGemvSwiGlu(const NormInput& in, const RowStack& w, float* h, cudaStream_t stream);
// Stack = q (heads*hd) | k (kv_heads*hd) | v (kv_heads*hd) rows, with biases:
// rotates q and k at position *out.pos and stores them and v (see QkvRopeOutput).
void NormGemvQkvRope(const NormInput& in, const RowStack& w, const QkvRopeOutput& out, cudaStream_t stream);
// y[n] += w[n, :] . x for an (N, K) weight (the residual adds of o_proj and down_proj).
void GemvAccumulate(const void* w, DType wdt, int64_t N, int64_t K, const float* x, float* y, cudaStream_t stream);

// Split-K decode attention at a position read from device memory. The split
// count is fixed per model (a captured graph keeps its grid): DecodeSplits.
int DecodeSplits(int heads, int sm_count);
// Bytes of workspace (partials, then one counter per head) for `splits`; the
// counters must be zero before the first launch (they are left zero).
uint64_t DecodeAttentionWorkspaceBytes(int heads, int hd, int splits);
// out (heads*hd fp32) = softmax(q . K^T / sqrt(hd)) . V over cache rows
// j in [0, *pos] with *pos - j < window when window > 0; GQA by
// h / (heads / kv_heads). hd even, <= 256. With pages.table, row j is found
// through the block table (kv_pages.h), read from device memory at each
// launch (a captured graph stays valid as the sequence grows).
void AttentionDecodeAt(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, const int64_t* pos,
                       int heads, int kv_heads, int hd, int window, int splits, void* workspace, float* out,
                       cudaStream_t stream, const KvPages& pages = {});

}  // namespace strata::cuda
