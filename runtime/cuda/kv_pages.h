// How the attention kernels find a position's K and V rows in the paged KV
// cache (docs/runtime.md, "Paged KV cache"). The backend's pool holds
// kv_stats().total_blocks blocks, each laid out as
//   [computed layer slot][K | V][block_tokens][kv_heads * head_dim] bf16,
// so a kernel gets, per layer, the K and V base pointers of that layer's slot
// in block 0, the distance between two blocks (block_stride elements) and a
// sequence's block table (block ids, device memory): position p lives at
//   base + table[p / block_tokens] * block_stride + (p % block_tokens) * kvd.
// With table == nullptr the rows are contiguous: p at base + p * kvd (one
// flat cache, as the kernel tests use).
#pragma once

#include <cstdint>

namespace strata::cuda {

struct KvPages {
  const int32_t* table = nullptr;  // device: block ids of the sequence; null: contiguous rows
  int64_t block_stride = 0;        // elements from block b to block b + 1
  int block_tokens = 1;            // positions per block
};

// One sequence's queries in a batched prefill attention launch: rows
// [row0, row0 + n) of q and out hold positions [pos0, pos0 + n); its keys are
// [0, pos0 + n), found through tables + table_off (KvPages::table is the base
// of every item's table, concatenated).
struct AttentionItem {
  int64_t row0 = 0;
  int64_t n = 0;
  int64_t pos0 = 0;
  int64_t table_off = 0;
};

// One block of a batched prefill launch: queries [q0, q0 + tile) of `item`.
struct AttentionTile {
  int32_t item = 0;
  int32_t q0 = 0;
};

}  // namespace strata::cuda
