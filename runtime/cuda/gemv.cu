// Decode GEMV (see gemv.cuh): one warp per output row; each lane streams
// 16-byte chunks of the row (8 BF16/F16 or 4 F32 elements), four loads in
// flight, and the warp reduces with shuffles.
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "gemv.cuh"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

enum Kind { kBf16 = 0, kF16 = 1, kF32 = 2 };

template <int kKind>
__device__ __forceinline__ float DotChunk(const uint4& w, const float* x) {
  if constexpr (kKind == kF32) {
    const float4 a = *reinterpret_cast<const float4*>(x);
    return __uint_as_float(w.x) * a.x + __uint_as_float(w.y) * a.y + __uint_as_float(w.z) * a.z +
           __uint_as_float(w.w) * a.w;
  } else {
    const float4 a = *reinterpret_cast<const float4*>(x);
    const float4 b = *reinterpret_cast<const float4*>(x + 4);
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
    float f[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if constexpr (kKind == kBf16) {
        f[2 * j] = __uint_as_float(u[j] << 16);
        f[2 * j + 1] = __uint_as_float(u[j] & 0xFFFF0000u);
      } else {
        f[2 * j] = __half2float(__ushort_as_half(static_cast<unsigned short>(u[j] & 0xFFFFu)));
        f[2 * j + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(u[j] >> 16)));
      }
    }
    return f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w + f[4] * b.x + f[5] * b.y + f[6] * b.z + f[7] * b.w;
  }
}

template <int kKind>
__global__ void __launch_bounds__(kThreads) GemvVecKernel(const void* __restrict__ w, int64_t N, int64_t K,
                                                          const float* __restrict__ x, float* __restrict__ y,
                                                          bool accumulate, const void* __restrict__ bias, DType bdt) {
  constexpr int kElems = kKind == kF32 ? 4 : 8;  // elements per 16-byte chunk
  constexpr int kBytes = kKind == kF32 ? 4 : 2;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
  if (n >= N) return;  // whole warps leave together: no block-wide sync below
  const uint4* row = reinterpret_cast<const uint4*>(static_cast<const char*>(w) + n * K * kBytes);
  const int64_t chunks = K / kElems;
  float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
  int64_t c = lane;
  for (; c + 3 * kWarp < chunks; c += 4 * kWarp) {
    const uint4 w0 = __ldg(row + c), w1 = __ldg(row + c + kWarp), w2 = __ldg(row + c + 2 * kWarp),
                w3 = __ldg(row + c + 3 * kWarp);
    acc0 += DotChunk<kKind>(w0, x + c * kElems);
    acc1 += DotChunk<kKind>(w1, x + (c + kWarp) * kElems);
    acc2 += DotChunk<kKind>(w2, x + (c + 2 * kWarp) * kElems);
    acc3 += DotChunk<kKind>(w3, x + (c + 3 * kWarp) * kElems);
  }
  for (; c < chunks; c += kWarp) acc0 += DotChunk<kKind>(__ldg(row + c), x + c * kElems);
  float acc = WarpSum((acc0 + acc1) + (acc2 + acc3));
  if (lane == 0) {
    if (bias) acc += LoadAsFloat(bias, bdt, n);
    y[n] = accumulate ? y[n] + acc : acc;
  }
}

__global__ void __launch_bounds__(kThreads) GemvScalarKernel(const void* __restrict__ w, DType wdt, int64_t N,
                                                             int64_t K, const float* __restrict__ x,
                                                             float* __restrict__ y, bool accumulate,
                                                             const void* __restrict__ bias, DType bdt) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
  if (n >= N) return;
  float acc = 0;
  for (int64_t k = lane; k < K; k += kWarp) acc += LoadAsFloat(w, wdt, n * K + k) * x[k];
  acc = WarpSum(acc);
  if (lane == 0) {
    if (bias) acc += LoadAsFloat(bias, bdt, n);
    y[n] = accumulate ? y[n] + acc : acc;
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void Gemv(const void* w, DType wdt, int64_t N, int64_t K, const float* x, float* y, bool accumulate,
          const void* bias, DType bdt, cudaStream_t stream) {
  if (N <= 0) return;
  if (wdt != DType::kBF16 && wdt != DType::kF16 && wdt != DType::kF32)
    throw Error("GEMV reads BF16, F16 or F32 weights, not " + std::string(DTypeName(wdt)));
  const unsigned blocks = static_cast<unsigned>(CeilDiv(N, kRowsPerBlock));
  const int elems = wdt == DType::kF32 ? 4 : 8;
  if (K % elems == 0 && Aligned16(w) && Aligned16(x)) {
    switch (wdt) {
      case DType::kBF16:
        GemvVecKernel<kBf16><<<blocks, kThreads, 0, stream>>>(w, N, K, x, y, accumulate, bias, bdt);
        break;
      case DType::kF16:
        GemvVecKernel<kF16><<<blocks, kThreads, 0, stream>>>(w, N, K, x, y, accumulate, bias, bdt);
        break;
      default:
        GemvVecKernel<kF32><<<blocks, kThreads, 0, stream>>>(w, N, K, x, y, accumulate, bias, bdt);
        break;
    }
    CUDA_CHECK_LAUNCH("GemvVecKernel");
  } else {
    GemvScalarKernel<<<blocks, kThreads, 0, stream>>>(w, wdt, N, K, x, y, accumulate, bias, bdt);
    CUDA_CHECK_LAUNCH("GemvScalarKernel");
  }
}

}  // namespace strata::cuda
