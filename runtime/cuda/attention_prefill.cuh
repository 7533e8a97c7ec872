// Causal attention for prefill (CPU: Attention), flash-style: each block holds
// a tile of queries of one head and streams the bf16 KV cache through shared
// memory with an online softmax, so no score matrix is stored. Head dims that
// are multiples of 16 up to 128 run on tensor cores (bf16 Q and P, fp32
// accumulation); other head dims on an fp32 kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kv_pages.h"

namespace strata::cuda {

// M queries at positions [pos0, pos0 + M) over cache rows [0, pos0 + M).
// q: (M, q_ld) fp32 with head h at columns [h*hd, (h+1)*hd); k_cache, v_cache:
// (ctx, kv_heads*hd) bf16; out: (M, out_ld) fp32, head h at [h*hd, (h+1)*hd).
// GQA: query head h reads kv head h / (heads / kv_heads). window > 0: a query
// at p sees keys j with p - j < window. hd even and <= 256.
void AttentionPrefill(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache, int64_t M,
                      int64_t pos0, int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld,
                      cudaStream_t stream);

// Queries per block of the kernel AttentionPrefill picks for `hd` on the
// current device (64 on tensor cores, 16 on the fp32 kernel): the tile size of
// a batched launch.
int AttentionPrefillTileQueries(int hd);

// Several sequences in one launch (a batched forward pass): item i's queries
// are rows [row0, row0 + n) of q and out at positions [pos0, pos0 + n), over
// its keys [0, pos0 + n) in the paged cache (kv_pages.h: k_base / v_base are
// the layer's K and V pointers in block 0, pages.table the concatenated block
// tables, each item's at table_off). One block per (tile, head): `tiles`
// (n_tiles of them, device) says which item and first query each block takes,
// in AttentionPrefillTileQueries(hd) queries. items and tiles are device arrays.
void AttentionPrefillBatch(const float* q, int64_t q_ld, const uint16_t* k_base, const uint16_t* v_base,
                           const KvPages& pages, const AttentionItem* items, const AttentionTile* tiles,
                           int64_t n_tiles, int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld,
                           cudaStream_t stream);

}  // namespace strata::cuda
