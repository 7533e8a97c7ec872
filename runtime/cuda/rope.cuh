// Rotary position embedding in HF's rotate-half layout (CPU: Rope), fused with
// the KV-cache write: q is rotated in place, rotated k and plain v are stored
// in the layer's bf16 cache.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace strata::cuda {

// table: (M, half, 2) floats, {cos, sin} of (pos0 + m) * inv_freq[i], the
// angle in double as on the CPU. inv_freq: half doubles on the device.
void RopeTable(int64_t pos0, int64_t M, int half, const double* inv_freq, float* table, cudaStream_t stream);
// The same at each token's own position: positions[m] (M device int64s), for a
// batch whose tokens belong to different sequences.
void RopeTableAt(const int64_t* positions, int64_t M, int half, const double* inv_freq, float* table,
                 cudaStream_t stream);

// qkv: (M, ld) fp32; row m holds q (heads*hd), then k (kv_heads*hd), then v
// (kv_heads*hd). Rotates q in place; writes rotated k and v as bf16 to row
// pos0 + m of k_cache / v_cache ((ctx, kv_heads*hd) each). hd even.
void RopeAndStoreKv(float* qkv, int64_t ld, int64_t M, int heads, int kv_heads, int hd, const float* table,
                    int64_t pos0, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t stream);
// The same, token m's K and V stored at element offset rows[m] (M device
// int64s) from k_base / v_base: the paged cache's row of its sequence's
// position (kv_pages.h), computed by the host for the step.
void RopeAndStoreKvRows(float* qkv, int64_t ld, int64_t M, int heads, int kv_heads, int hd, const float* table,
                        const int64_t* rows, uint16_t* k_base, uint16_t* v_base, cudaStream_t stream);

}  // namespace strata::cuda
