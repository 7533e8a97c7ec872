// Device-side helpers shared by the .cu files (never included by host-only
// code): element loads and stores in the weight dtypes with PyTorch's exact
// rounding (formats/dtype_convert.h), warp reductions, launch arithmetic.
//
// Kernels launch with STRATA_LAUNCH and declare dynamic shared memory
// (128-byte aligned) with STRATA_DYNAMIC_SHARED, the two CUDA spellings plain
// C++ cannot parse, so that the CPU kernel emulator (tests/emu) runs them too.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kv_pages.h"
#include "strata/formats/dtype.h"

#ifdef STRATA_CUDA_EMU
#define STRATA_LAUNCH(kernel, grid, block, smem, stream) ::strata::emu::Launch(kernel, grid, block, smem, stream)
#define STRATA_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::strata::emu::DynamicShared())
#else
#define STRATA_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#define STRATA_DYNAMIC_SHARED(type, name) extern __shared__ __align__(128) type name[]
#endif

namespace strata::cuda {

inline constexpr int kWarp = 32;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n elements: enough to fill the device,
// never more than n needs, never 0.
inline unsigned GridFor(int64_t n, int threads, int64_t max_blocks = 65535 * 8) {
  int64_t b = CeilDiv(n, threads);
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

// BF16ToFloat, FloatToBF16, F16ToFloat and FloatToF16 are strata::'s from
// formats/dtype_convert.h (through dtype.h): one __host__ __device__ copy for
// the host, the device and the emulator. These two are the kernels' spelling.
__device__ __forceinline__ float Bf16ToFloat(uint16_t v) { return BF16ToFloat(v); }
__device__ __forceinline__ uint16_t FloatToBf16(float f) { return FloatToBF16(f); }

// NaN bits as an x86 host produces them (GPU arithmetic returns a canonical
// NaN instead), so device results match formats/dtype.cc bit for bit even
// for NaN: a NaN operand comes back quieted with its sign and payload; a NaN
// made from non-NaN operands (inf * 0) is x86's default NaN, negative.
__device__ __forceinline__ float QuietNan(float v) { return __uint_as_float(__float_as_uint(v) | 0x00400000u); }
__device__ __forceinline__ double QuietNanD(double v) {
  return __longlong_as_double(__double_as_longlong(v) | 0x0008000000000000ll);
}
__device__ __forceinline__ float MulLikeHost(float v, float f) {
  const float r = __fmul_rn(v, f);
  if (r == r) return r;
  return v != v ? QuietNan(v) : __uint_as_float(0xFFC00000u);
}
__device__ __forceinline__ double MulLikeHostD(double v, double f) {
  const double r = __dmul_rn(v, f);
  if (r == r) return r;
  return v != v ? QuietNanD(v) : __longlong_as_double(static_cast<long long>(0xFFF8000000000000ull));
}
// float <-> double as cvtss2sd / cvtsd2ss do (NaN payload kept, quieted).
__device__ __forceinline__ double FloatToDoubleLikeHost(float v) {
  if (v == v) return static_cast<double>(v);
  const uint32_t u = __float_as_uint(v);
  const uint64_t bits = (static_cast<uint64_t>(u >> 31) << 63) | 0x7FF0000000000000ull |
                        (static_cast<uint64_t>((u & 0x7FFFFFu) | 0x400000u) << 29);
  return __longlong_as_double(static_cast<long long>(bits));
}
__device__ __forceinline__ float DoubleToFloatLikeHost(double d) {
  if (d == d) return static_cast<float>(d);  // cvt.rn.f32.f64: round to nearest even, as the host
  const uint64_t b = static_cast<uint64_t>(__double_as_longlong(d));
  const uint32_t bits = (static_cast<uint32_t>(b >> 63) << 31) | 0x7FC00000u |
                        static_cast<uint32_t>((b >> 29) & 0x7FFFFFu);
  return __uint_as_float(bits);
}

// Element i of a BF16/F16/F32/F64 array as float (F64 through float, as torch).
__device__ __forceinline__ float LoadAsFloat(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16: return Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16: return F16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kF64: return DoubleToFloatLikeHost(static_cast<const double*>(p)[i]);
    default: return 0.0f;
  }
}

__device__ __forceinline__ void StoreFromFloat(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kBF16: static_cast<uint16_t*>(p)[i] = FloatToBf16(v); break;
    case DType::kF16: static_cast<uint16_t*>(p)[i] = FloatToF16(v); break;
    case DType::kF32: static_cast<float*>(p)[i] = v; break;
    case DType::kF64: static_cast<double*>(p)[i] = FloatToDoubleLikeHost(v); break;
    default: break;
  }
}

// Element offset of position p's row (K or V) from its layer's base pointer
// (kv_pages.h): through the block table, or p * kvd without one.
__device__ __forceinline__ int64_t KvRowOffset(const int32_t* table, int64_t block_stride, int block_tokens,
                                               int64_t kvd, int64_t p) {
  if (table == nullptr) return p * kvd;
  return static_cast<int64_t>(table[p / block_tokens]) * block_stride + (p % block_tokens) * kvd;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double WarpSumD(double v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace strata::cuda
