// Device dtype conversion and scaling (see convert.cuh).
#include "convert.cuh"
#include "cuda_check.h"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void CastKernel(DType from, const void* __restrict__ src, DType to, void* __restrict__ dst, uint64_t n) {
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    if (from == DType::kF64 && to == DType::kF64) {
      static_cast<double*>(dst)[i] = static_cast<const double*>(src)[i];
    } else {
      StoreFromFloat(dst, to, static_cast<int64_t>(i), LoadAsFloat(src, from, static_cast<int64_t>(i)));
    }
  }
}

__global__ void ScaleKernel(DType t, const void* src, void* dst, uint64_t n, float f, double fd) {
  for (uint64_t i = blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    if (t == DType::kF64) {
      static_cast<double*>(dst)[i] = MulLikeHostD(static_cast<const double*>(src)[i], fd);
    } else {
      const float v = LoadAsFloat(src, t, static_cast<int64_t>(i));
      StoreFromFloat(dst, t, static_cast<int64_t>(i), MulLikeHost(v, f));
    }
  }
}

void CheckFloat(DType t) {
  if (t != DType::kBF16 && t != DType::kF16 && t != DType::kF32 && t != DType::kF64)
    throw Error("the CUDA backend computes with BF16, F16, F32 and F64 only, not " + std::string(DTypeName(t)));
}

}  // namespace

void CastOnDevice(DType from, const void* src, DType to, void* dst, uint64_t n, cudaStream_t stream) {
  CheckFloat(from);
  CheckFloat(to);
  if (n == 0) return;
  if (from == to) {
    if (src != dst) CUDA_CHECK(cudaMemcpyAsync(dst, src, n * DTypeSize(from), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  STRATA_LAUNCH(CastKernel, GridFor(static_cast<int64_t>(n), kThreads), kThreads, 0, stream)(from, src, to, dst, n);
  CUDA_CHECK_LAUNCH("CastKernel");
}

void ScaleOnDevice(DType t, const void* src, void* dst, uint64_t n, double factor, cudaStream_t stream) {
  CheckFloat(t);
  if (n == 0) return;
  STRATA_LAUNCH(ScaleKernel, GridFor(static_cast<int64_t>(n), kThreads), kThreads, 0, stream)(t, src, dst, n,
                                                                                     static_cast<float>(factor), factor);
  CUDA_CHECK_LAUNCH("ScaleKernel");
}

}  // namespace strata::cuda
