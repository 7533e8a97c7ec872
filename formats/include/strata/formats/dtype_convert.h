// The BF16/F16 <-> float conversions, written once for the host (formats/),
// the CUDA kernels (runtime/cuda, nvcc) and the CPU kernel emulator (tests/emu,
// the .cu files built by the host compiler), so all three agree bit for bit.
#pragma once

#include <cstdint>

#ifndef STRATA_HD
#ifdef __CUDACC__
#define STRATA_HD __host__ __device__
#else
#define STRATA_HD
#endif
#endif

namespace strata {
namespace dtype_internal {

// Bit casts that compile in both passes: std::bit_cast is host-only under
// nvcc, and __float_as_uint exists only on the device (and in tests/emu).
STRATA_HD inline uint32_t FloatBits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}

STRATA_HD inline float BitsFloat(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

// a + b rounded to nearest even, never contracted or reassociated.
STRATA_HD inline float AddRn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace dtype_internal

// The conversions below are c10::BFloat16 / c10::Half's to and from float:
// round to nearest even, overflow to inf, NaN kept NaN. NaN is decided from
// the bits, not by f != f, so fast-math flags cannot drop the check.

// Exact: bf16 is float's top half.
STRATA_HD inline float BF16ToFloat(uint16_t v) {
  return dtype_internal::BitsFloat(static_cast<uint32_t>(v) << 16);
}

// c10::BFloat16(float): round to nearest even; every NaN becomes the
// canonical quiet NaN 0x7FC0 (sign dropped, as c10 does).
STRATA_HD inline uint16_t FloatToBF16(float f) {
  const uint32_t u = dtype_internal::FloatBits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  const uint32_t rounding_bias = ((u >> 16) & 1u) + 0x7FFFu;
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

// IEEE half -> float, exact; subnormal halves become normal floats.
STRATA_HD inline float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3FFu) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return dtype_internal::BitsFloat(bits);
}

// c10's fp16_ieee_from_fp32_value: round to nearest even, overflow to inf,
// NaN to the quiet NaN 0x7E00 with its sign.
STRATA_HD inline uint16_t FloatToF16(float f) {
  const uint32_t x = dtype_internal::FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x47800000u) return sign | (abs > 0x7F800000u ? 0x7E00 : 0x7C00);
  if (abs < 0x38800000u) {  // the result is subnormal or zero
    // Adding 0.5f aligns the 10 mantissa bits at the bottom; the float
    // addition rounds to nearest even for us.
    const float a = dtype_internal::AddRn(dtype_internal::BitsFloat(abs), 0.5f);
    return sign | static_cast<uint16_t>(dtype_internal::FloatBits(a) - 0x3F000000u);
  }
  const uint32_t mant_odd = (abs >> 13) & 1u;
  abs += (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFu + mant_odd;
  return sign | static_cast<uint16_t>(abs >> 13);
}

}  // namespace strata
