// CPU kernel emulator: the half-precision conversions the kernels use.
#pragma once

#include <cstdint>

struct __half {
  uint16_t bits;
};
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
float __half2float(__half h);  // exact (tests/emu/cuda_emu.cc)
