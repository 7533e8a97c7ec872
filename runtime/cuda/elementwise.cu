// SwiGLU, residual and bias adds, row gather (see elementwise.cuh).
#include "cuda_check.h"
#include "elementwise.cuh"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void SwiGluKernel(const float* __restrict__ gu, int64_t ld, int64_t M, int64_t I, float* __restrict__ out) {
  const int64_t n = M * I;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = t / I, i = t % I;
    const float a = gu[m * ld + i], b = gu[m * ld + I + i];
    out[t] = a / (1.0f + expf(-a)) * b;
  }
}

__global__ void AddKernel(float* __restrict__ x, const float* __restrict__ y, int64_t n) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[t] += y[t];
}

__global__ void BiasKernel(float* __restrict__ y, int64_t ld, int64_t M, int64_t N, const void* __restrict__ bias,
                           DType bdt) {
  const int64_t n = M * N;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = t / N, j = t % N;
    y[m * ld + j] += LoadAsFloat(bias, bdt, j);
  }
}

__global__ void GatherRowsKernel(const float* __restrict__ src, int64_t ld, const int32_t* __restrict__ rows,
                                 int64_t R, int64_t D, float* __restrict__ out) {
  const int64_t n = R * D;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = t / D, j = t % D;
    out[t] = src[static_cast<int64_t>(rows[r]) * ld + j];
  }
}

}  // namespace

void GatherRows(const float* src, int64_t ld, const int32_t* rows, int64_t R, int64_t D, float* out,
                cudaStream_t stream) {
  if (R * D <= 0) return;
  STRATA_LAUNCH(GatherRowsKernel, GridFor(R * D, kThreads), kThreads, 0, stream)(src, ld, rows, R, D, out);
  CUDA_CHECK_LAUNCH("GatherRowsKernel");
}

void SwiGlu(const float* gu, int64_t ld, int64_t M, int64_t I, float* out, cudaStream_t stream) {
  if (M * I <= 0) return;
  STRATA_LAUNCH(SwiGluKernel, GridFor(M * I, kThreads), kThreads, 0, stream)(gu, ld, M, I, out);
  CUDA_CHECK_LAUNCH("SwiGluKernel");
}

void ResidualAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  STRATA_LAUNCH(AddKernel, GridFor(n, kThreads), kThreads, 0, stream)(x, y, n);
  CUDA_CHECK_LAUNCH("AddKernel");
}

void AddBias(float* y, int64_t ld, int64_t M, int64_t N, const void* bias, DType bdt, cudaStream_t stream) {
  if (M * N <= 0) return;
  STRATA_LAUNCH(BiasKernel, GridFor(M * N, kThreads), kThreads, 0, stream)(y, ld, M, N, bias, bdt);
  CUDA_CHECK_LAUNCH("BiasKernel");
}

}  // namespace strata::cuda
