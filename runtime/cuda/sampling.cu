// Device argmax (see sampling.cuh): one block of 1024 threads; each thread
// scans a strided slice, then a shared-memory tree keeps (max, lowest index).
#include <cmath>

#include "cuda_check.h"
#include "kernel_common.cuh"
#include "sampling.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 1024;

// (v, i) beats (bv, bi): larger value, or equal value at a lower index. NaN
// never beats anything (std::max_element compares with <, which NaN fails).
__device__ __forceinline__ bool Better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads) ArgmaxKernel(const float* __restrict__ logits, int64_t n, int* out) {
  __shared__ float sv[kThreads];
  __shared__ int64_t si[kThreads];
  float bv = -INFINITY;
  int64_t bi = n;  // "none"
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const float v = logits[i];
    if (bi == n ? !(v != v) : Better(v, i, bv, bi)) {
      bv = v;
      bi = i;
    }
  }
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float v = sv[threadIdx.x + s];
      const int64_t i = si[threadIdx.x + s];
      if (i != n && (si[threadIdx.x] == n || Better(v, i, sv[threadIdx.x], si[threadIdx.x]))) {
        sv[threadIdx.x] = v;
        si[threadIdx.x] = i;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = si[0] == n ? 0 : static_cast<int>(si[0]);
}

}  // namespace

void Argmax(const float* logits, int64_t n, int* out, cudaStream_t stream) {
  if (n <= 0) throw Error("argmax over no logits");
  STRATA_LAUNCH(ArgmaxKernel, 1, kThreads, 0, stream)(logits, n, out);
  CUDA_CHECK_LAUNCH("ArgmaxKernel");
}

}  // namespace strata::cuda
