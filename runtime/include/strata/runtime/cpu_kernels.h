// CPU kernels of the forward pass: fp32 activations, weights in BF16/F16/F32
// converted to fp32 in registers (AVX2+FMA+F16C when the CPU has them, a
// portable path otherwise), fp32 accumulation. Parallel with TBB; each output
// element is computed by one thread in a fixed order, so results do not
// depend on the thread count.
#pragma once

#include <cstdint>

#include "strata/runtime/weights.h"

namespace strata {

// True when the AVX2/FMA/F16C path is in use.
bool CpuHasAvx2();

// y[m, n] = sum_k w[n, k] * x[m, k] (+ bias[n]) for m < M.
// w: (N, K) row-major of any compute float dtype; x: (M, K); y: (M, N).
// bias: null or (N) tensor.
void MatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias = nullptr);

// Rows of x: out[m] = x[m] / sqrt(mean(x[m]^2) + eps) * weight. x, out: (M, D).
void RmsNorm(const float* x, const HostTensor& weight, int64_t M, int64_t D, double eps, float* out);

// Rotary embedding in HF's rotate-half layout, in place: x (n_heads, head_dim)
// for one token at `pos`; inv_freq has head_dim/2 entries.
void Rope(float* x, int n_heads, int head_dim, int64_t pos, const double* inv_freq);

// a[i] = silu(a[i]) * b[i].
void SwiGlu(float* a, const float* b, int64_t n);

// Embedding rows to fp32: out[m] = table[tokens[m]]. table: (vocab, D).
void EmbeddingGather(const HostTensor& table, const int* tokens, int64_t M, float* out);

// Causal attention of M new queries at positions [pos0, pos0+M) over the KV
// cache rows [0, pos0+M). q: (M, heads*hd); k_cache, v_cache: (ctx, kv_heads*hd);
// out: (M, heads*hd). window > 0 limits each query at p to keys j with p - j < window.
void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t M, int64_t pos0, int heads,
               int kv_heads, int hd, int window, float* out);

}  // namespace strata
