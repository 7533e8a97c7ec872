// Causal attention for prefill (CPU: Attention), flash-style: each block holds
// a tile of queries of one head and streams the bf16 KV cache through shared
// memory with an online softmax, so no score matrix is stored. Head dims that
// are multiples of 16 up to 128 run on tensor cores (bf16 Q and P, fp32
// accumulation); other head dims on an fp32 kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace strata::cuda {

// M queries at positions [pos0, pos0 + M) over cache rows [0, pos0 + M).
// q: (M, q_ld) fp32 with head h at columns [h*hd, (h+1)*hd); k_cache, v_cache:
// (ctx, kv_heads*hd) bf16; out: (M, out_ld) fp32, head h at [h*hd, (h+1)*hd).
// GQA: query head h reads kv head h / (heads / kv_heads). window > 0: a query
// at p sees keys j with p - j < window. hd even and <= 256.
void AttentionPrefill(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache, int64_t M,
                      int64_t pos0, int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld,
                      cudaStream_t stream);

}  // namespace strata::cuda
