// Embedding gather (see embedding.cuh).
#include "cuda_check.h"
#include "embedding.cuh"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 256;

// One block per token row.
__global__ void EmbeddingKernel(const void* __restrict__ table, DType dt, int64_t D, const int* __restrict__ tokens,
                                float* __restrict__ out) {
  const int64_t m = blockIdx.x;
  const int64_t row = tokens[m];
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[m * D + d] = LoadAsFloat(table, dt, row * D + d);
}

}  // namespace

void EmbeddingGather(const void* table, DType dt, int64_t D, const int* tokens, int64_t M, float* out,
                     cudaStream_t stream) {
  if (M <= 0) return;
  STRATA_LAUNCH(EmbeddingKernel, static_cast<unsigned>(M), kThreads, 0, stream)(table, dt, D, tokens, out);
  CUDA_CHECK_LAUNCH("EmbeddingKernel");
}

}  // namespace strata::cuda
