// RMSNorm (see rmsnorm.cuh). One block per row; the sum of squares in double
// as on the CPU, so the scale is the CPU's to within float rounding.
#include "cuda_check.h"
#include "kernel_common.cuh"
#include "rmsnorm.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void RmsNormKernel(const float* x, const void* __restrict__ w, DType wdt, int64_t D, double eps,
                              float* out) {
  __shared__ double partial[kThreads / kWarp];
  __shared__ float inv_s;
  const float* xm = x + blockIdx.x * D;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += static_cast<double>(xm[i]) * xm[i];
  ss = WarpSumD(ss);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) partial[warp] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int i = 0; i < kThreads / kWarp; ++i) t += partial[i];
    inv_s = static_cast<float>(1.0 / sqrt(t / static_cast<double>(D) + eps));
  }
  __syncthreads();
  const float inv = inv_s;
  float* om = out + blockIdx.x * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) om[i] = LoadAsFloat(w, wdt, i) * (xm[i] * inv);
}

}  // namespace

void RmsNorm(const float* x, const void* w, DType wdt, int64_t M, int64_t D, double eps, float* out,
             cudaStream_t stream) {
  if (M <= 0) return;
  STRATA_LAUNCH(RmsNormKernel, static_cast<unsigned>(M), kThreads, 0, stream)(x, w, wdt, D, eps, out);
  CUDA_CHECK_LAUNCH("RmsNormKernel");
}

}  // namespace strata::cuda
