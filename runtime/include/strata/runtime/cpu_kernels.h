// CPU kernels of the forward pass: fp32 activations, weights in BF16/F16/F32
// read in place. MatMul has five tiers, chosen once at start-up (the best the
// CPU has; STRATA_CPU_KERNELS=portable|avx2|avx512|avx512-bf16|amx-bf16 asks
// for a lower one): amx-bf16 (AMX tiles, tdpbf16ps: BF16 weights as loaded as
// the A operand, activations rounded to bf16 and packed per call, fp32
// accumulation; for every M, including decode, on shapes with K % 32 == 0 and
// N % 16 == 0, other shapes and dtypes as avx512-bf16), avx512-bf16
// (vdpbf16ps, activations rounded to bf16; F32/F16 weights as avx512), avx512
// and avx2 (weights converted to fp32 in registers, fp32 FMA), portable.
// Parallel with TBB; within a tier each output element is computed by one
// thread with the same instructions in the same order whatever M, its place
// in the batch and the thread count, so results are bit-identical across those.
// docs/runtime.md, "CPU kernels", has the tiling and the numerics.
#pragma once

#include <cstdint>
#include <string_view>

#include "strata/runtime/weights.h"

namespace strata {

// True when the kernels in use need AVX2/FMA/F16C (tier avx2 or higher).
bool CpuHasAvx2();
// The kernels in use, for reports: "amx-bf16", "avx512-bf16", "avx512", "avx2", "portable".
std::string_view CpuKernelsName();
// The best tier this CPU has (what runs unless STRATA_CPU_KERNELS asks lower).
std::string_view CpuKernelsBest();
// Tests and benchmarks: switches every kernel to tier `name` (clamped to
// CpuKernelsBest(); "" = the best; an unknown name changes nothing) and
// returns the tier now in use. Not to be called while kernels are running.
std::string_view SetCpuKernelsForTesting(std::string_view name);

// Batch invariance: whether output (m, n) of a product has the same bits
// whatever M. Every tier has it, except that on amx-bf16 a product of one
// token (a lone sequence's decode step) runs the avx512-bf16 dot products,
// which stream weights faster than AMX's tile loads; products of two or more
// tokens are bitwise independent of M there too. SetBatchInvariant(true), or
// STRATA_BATCH_INVARIANT=1 in the environment, makes one token use AMX as
// well (docs/runtime.md, "CPU kernels", has the cost).
void SetBatchInvariant(bool on);
bool BatchInvariant();

// y[m, n] = sum_k w[n, k] * x[m, k] (+ bias[n]) for m < M.
// w: (N, K) row-major of any compute float dtype; x: (M, K); y: (M, N).
// bias: null or (N) tensor.
void MatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias = nullptr);

// Several products of the same input x (M, K) in one parallel region (no
// barrier between them): q/k/v, gate/up. Each as MatMul(*w, x, M, y, bias).
struct MatMulOut {
  const HostTensor* w = nullptr;
  float* y = nullptr;
  const HostTensor* bias = nullptr;
};
void MatMulMany(const MatMulOut* outs, int count, const float* x, int64_t M);

// Rows of x: out[m] = x[m] / sqrt(mean(x[m]^2) + eps) * weight. x, out: (M, D).
void RmsNorm(const float* x, const HostTensor& weight, int64_t M, int64_t D, double eps, float* out);

// Rotary embedding in HF's rotate-half layout, in place: x (n_heads, head_dim)
// for one token at `pos`; inv_freq has head_dim/2 entries. The same as
// RopeAngles then RopeApply.
void Rope(float* x, int n_heads, int head_dim, int64_t pos, const double* inv_freq);
// The cos and sin of position `pos`'s RoPE angles (pos * inv_freq[i] in
// double, rounded to float) for i < half: once per token, for all its heads.
void RopeAngles(int64_t pos, int half, const double* inv_freq, float* cs, float* sn);
// Rope of one token's heads with its angles from RopeAngles.
void RopeApply(float* x, int n_heads, int head_dim, const float* cs, const float* sn);

// a[i] = silu(a[i]) * b[i].
void SwiGlu(float* a, const float* b, int64_t n);

// Embedding rows to fp32: out[m] = table[tokens[m]]. table: (vocab, D).
void EmbeddingGather(const HostTensor& table, const int* tokens, int64_t M, float* out);

// One sequence's KV rows of one layer in the paged cache: position j is row
// j % block_tokens of block blocks[j / block_tokens], whose K rows start at
// k + blocks[...] * block_stride (V likewise at v); a row is kv_heads*hd floats.
struct PagedKv {
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t block_stride = 0;
  int block_tokens = 0;
  const int32_t* blocks = nullptr;
};

// Attention of one sequence's M new queries at positions [pos0, pos0+M)
// over its paged KV rows [0, pos0+M), as Attention below.
struct AttentionJob {
  const float* q = nullptr;  // (M, heads*hd)
  PagedKv kv;
  int64_t M = 0, pos0 = 0;
  float* out = nullptr;      // (M, heads*hd)
};
// Every job in one parallel region.
void AttentionBatch(const AttentionJob* jobs, int count, int heads, int kv_heads, int hd, int window);

// Causal attention of M new queries at positions [pos0, pos0+M) over the KV
// cache rows [0, pos0+M). q: (M, heads*hd); k_cache, v_cache: (ctx, kv_heads*hd);
// out: (M, heads*hd). window > 0 limits each query at p to keys j with p - j < window.
void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t M, int64_t pos0, int heads,
               int kv_heads, int hd, int window, float* out);

}  // namespace strata
