// Device sampling: greedy argmax over the logits (the same token as the host
// Sampler at temperature 0: the first index holding the maximum).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace strata::cuda {

// *out (device int) = the smallest i with logits[i] == max(logits[0, n)).
void Argmax(const float* logits, int64_t n, int* out, cudaStream_t stream);

}  // namespace strata::cuda
