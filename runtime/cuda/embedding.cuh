// Embedding gather: out[m] = table[tokens[m]] as fp32 (CPU: EmbeddingGather).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "strata/formats/dtype.h"

namespace strata::cuda {

// table: (vocab, D) device array of `dt` (BF16/F16/F32); tokens: M device ints,
// each already checked to be in [0, vocab); out: (M, D) fp32.
void EmbeddingGather(const void* table, DType dt, int64_t D, const int* tokens, int64_t M, float* out,
                     cudaStream_t stream);

}  // namespace strata::cuda
