// Decode attention, split-K ("flash decoding"): one query token over the bf16
// KV cache, the keys split into chunks processed by separate blocks, each
// leaving (max, sum, unnormalized output); a second kernel combines them.
// GQA and sliding window as in attention_prefill.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace strata::cuda {

inline constexpr int kDecodeMaxSplits = 32;

// Floats of workspace AttentionDecode needs for `heads` heads of `hd` dims.
inline int64_t AttentionDecodeWorkspaceFloats(int heads, int hd) {
  return static_cast<int64_t>(heads) * kDecodeMaxSplits * (hd + 2);
}

// The query at position `pos` over cache rows [0, pos] (window > 0: rows with
// pos - j < window). q: heads*hd fp32; out: heads*hd fp32; workspace: see
// AttentionDecodeWorkspaceFloats. `sm_count` (the device's multiprocessors)
// picks the split count. hd even and <= 256.
void AttentionDecode(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t pos, int heads,
                     int kv_heads, int hd, int window, int sm_count, float* workspace, float* out,
                     cudaStream_t stream);

}  // namespace strata::cuda
