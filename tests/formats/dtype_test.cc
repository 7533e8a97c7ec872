// dtype names, sizes, safetensors ranks, and the BF16/F16 conversions checked
// against values worked out by hand from IEEE round-to-nearest-even and,
// exhaustively, against the host and device copies they replaced.
#include "strata/formats/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace strata {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

bool IsF16NaN(uint16_t v) { return (v & 0x7C00) == 0x7C00 && (v & 0x03FF) != 0; }
bool IsBF16NaN(uint16_t v) { return (v & 0x7F80) == 0x7F80 && (v & 0x007F) != 0; }

TEST(DType, NamesSizesAndParsing) {
  for (int i = 0; i <= static_cast<int>(DType::kU64); ++i) {
    auto t = static_cast<DType>(i);
    EXPECT_EQ(ParseDTypeName(DTypeName(t)), t) << DTypeName(t);
  }
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kF8_E4M3), "F8_E4M3");
  EXPECT_EQ(ParseDTypeName("bf16"), std::nullopt);
  EXPECT_EQ(ParseDTypeName("F4"), std::nullopt);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(ParseTorchDType("torch.bfloat16"), DType::kBF16);
  EXPECT_EQ(ParseTorchDType("float16"), DType::kF16);
  EXPECT_EQ(ParseTorchDType("float8"), std::nullopt);
  EXPECT_EQ(TorchDTypeName(DType::kBF16), "bfloat16");
  EXPECT_TRUE(IsComputeFloat(DType::kBF16));
  EXPECT_FALSE(IsComputeFloat(DType::kI32));
}

// The reference library's Dtype enum order, which its writer sorts by.
TEST(DType, SafetensorsRankFollowsReferenceEnumOrder) {
  const DType order[] = {DType::kBool, DType::kU8,   DType::kI8,   DType::kF8_E5M2,
                         DType::kF8_E4M3, DType::kI16, DType::kU16, DType::kF16,
                         DType::kBF16, DType::kI32,  DType::kU32,  DType::kF32,
                         DType::kF64,  DType::kI64,  DType::kU64};
  for (size_t i = 1; i < std::size(order); ++i)
    EXPECT_LT(SafetensorsDTypeRank(order[i - 1]), SafetensorsDTypeRank(order[i]))
        << DTypeName(order[i]);
}

TEST(DType, BF16Rounding) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3F80);
  EXPECT_EQ(BF16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BF16ToFloat(0x4049), 3.140625f);
  // 1 + 2^-8 lies halfway between 0x3F80 and 0x3F81: ties go to the even 0x3F80.
  EXPECT_EQ(FloatToBF16(1.00390625f), 0x3F80);
  // 1 + 3 * 2^-8 lies halfway between 0x3F81 and 0x3F82: even is 0x3F82.
  EXPECT_EQ(FloatToBF16(1.01171875f), 0x3F82);
  // Just above the first tie rounds up.
  EXPECT_EQ(FloatToBF16(std::nextafter(1.00390625f, 2.0f)), 0x3F81);
  EXPECT_EQ(FloatToBF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBF16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToBF16(kInf), 0x7F80);
  EXPECT_EQ(FloatToBF16(-kInf), 0xFF80);
  // FLT_MAX is nearer to 2^128 than to the largest bf16, so it becomes inf.
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_TRUE(IsBF16NaN(FloatToBF16(kNaN)));
  EXPECT_TRUE(IsBF16NaN(FloatToBF16(-kNaN)));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(kNaN))));
}

TEST(DType, BF16RoundTripsEveryValue) {
  for (uint32_t v = 0; v <= 0xFFFF; ++v) {
    auto b = static_cast<uint16_t>(v);
    if (IsBF16NaN(b)) continue;
    ASSERT_EQ(FloatToBF16(BF16ToFloat(b)), b) << std::hex << v;
  }
}

TEST(DType, F16Rounding) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3C00);
  EXPECT_EQ(F16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(FloatToF16(-2.0f), 0xC000);
  // 1 + 2^-11 is a tie between 0x3C00 and 0x3C01 -> even 0x3C00;
  // 1 + 3 * 2^-11 is a tie between 0x3C01 and 0x3C02 -> even 0x3C02.
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  // Largest half is 65504 (0x7BFF); 65520 is the tie with 2^16 and goes to
  // the even side, which is infinity; anything below stays finite.
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7C00);
  EXPECT_EQ(FloatToF16(-65520.0f), 0xFC00);
  EXPECT_EQ(FloatToF16(1e10f), 0x7C00);
  EXPECT_EQ(FloatToF16(kInf), 0x7C00);
  EXPECT_EQ(FloatToF16(-kInf), 0xFC00);
  // Subnormals: the smallest is 2^-24; 2^-25 is a tie with 0 -> 0;
  // 3 * 2^-25 is a tie between 1 and 2 units -> 2.
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(FloatToF16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToF16(3 * std::ldexp(1.0f, -25)), 0x0002);
  EXPECT_EQ(F16ToFloat(0x03FF), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(FloatToF16(-1e-10f), 0x8000);
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_TRUE(std::signbit(F16ToFloat(0x8000)));
  EXPECT_TRUE(IsF16NaN(FloatToF16(kNaN)));
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(kNaN))));
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7C00)));
}

TEST(DType, F16RoundTripsEveryValue) {
  for (uint32_t v = 0; v <= 0xFFFF; ++v) {
    auto h = static_cast<uint16_t>(v);
    if (IsF16NaN(h)) continue;
    ASSERT_EQ(FloatToF16(F16ToFloat(h)), h) << std::hex << v;
  }
}

// dtype_convert.h is the one copy of the conversions: formats/ calls it on the
// host, nvcc compiles it for the device, and the kernel emulator (tests/emu)
// compiles the .cu files, and so it, with this same host compiler. Its device
// pass differs only in the bit-cast and add intrinsics (__float_as_uint,
// __uint_as_float, __fadd_rn), which are exact. So this one exhaustive host
// test of it, together with the emulator's kernel tests (gpu_emu_test), which
// check the kernels' loads and stores against the host, is the whole check;
// there is no second implementation left to compare.
//
// The references are the two copies the header replaced, frozen: the host's
// formats/dtype.cc (std::bit_cast, std::isnan, +) and the device's
// kernel_common.cuh (NaN as f != f, __fadd_rn as the emulator spells it).
namespace frozen {

float HostBF16ToFloat(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }

uint16_t HostFloatToBF16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return 0x7FC0;
  uint32_t rounding_bias = ((u >> 16) & 1) + 0x7FFF;
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

uint16_t DeviceFloatToBF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if (f != f) return 0x7FC0;
  const uint32_t rounding_bias = ((u >> 16) & 1u) + 0x7FFFu;
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

// Host and device held the same text here, but for the bit cast.
float HostF16ToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3FF) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

// Host and device differed only in `+` versus __fadd_rn (the emulator's is `+`).
uint16_t HostFloatToF16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t abs = x & 0x7FFFFFFF;
  if (abs >= 0x47800000u) return sign | (abs > 0x7F800000u ? 0x7E00 : 0x7C00);
  if (abs < 0x38800000u) {
    float a = std::bit_cast<float>(abs) + 0.5f;
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(a) - 0x3F000000u);
  }
  uint32_t mant_odd = (abs >> 13) & 1;
  abs += (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFu + mant_odd;
  return sign | static_cast<uint16_t>(abs >> 13);
}

}  // namespace frozen

uint32_t Bits(float f) { return std::bit_cast<uint32_t>(f); }

TEST(DType, ToFloatMatchesFrozenCopiesOnEvery16BitPattern) {
  for (uint32_t v = 0; v <= 0xFFFF; ++v) {
    const auto b = static_cast<uint16_t>(v);
    ASSERT_EQ(Bits(BF16ToFloat(b)), Bits(frozen::HostBF16ToFloat(b))) << std::hex << v;
    ASSERT_EQ(Bits(F16ToFloat(b)), Bits(frozen::HostF16ToFloat(b))) << std::hex << v;
  }
}

// Every sign, exponent and top 7 mantissa bits (so every NaN class, inf, zero,
// float subnormals and the whole f16 subnormal range), each with low 16 bits
// around the bf16 tie (0x8000) and the f16 ties (1 << k for k = 12..15; higher
// ties sit in the top half, met by low bits 0), plus random bit patterns.
std::vector<uint32_t> ConversionProbes() {
  std::vector<uint32_t> lows = {0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF};
  for (int k = 12; k <= 15; ++k)
    for (int d : {-1, 0, 1}) lows.push_back(static_cast<uint32_t>((1 << k) + d));
  std::vector<uint32_t> probes;
  for (uint32_t hi = 0; hi <= 0xFFFF; ++hi)
    for (uint32_t lo : lows) probes.push_back(hi << 16 | lo);
  uint64_t state = 0x9E3779B97F4A7C15ull;  // splitmix64: fixed, so failures repeat
  for (int i = 0; i < (1 << 22); ++i) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    probes.push_back(static_cast<uint32_t>(z ^ (z >> 31)));
  }
  return probes;
}

TEST(DType, FromFloatMatchesFrozenCopiesOnManyFloats) {
  for (uint32_t u : ConversionProbes()) {
    const float f = std::bit_cast<float>(u);
    const uint16_t bf = FloatToBF16(f);
    ASSERT_EQ(bf, frozen::HostFloatToBF16(f)) << std::hex << u;
    ASSERT_EQ(bf, frozen::DeviceFloatToBF16(f)) << std::hex << u;
    ASSERT_EQ(FloatToF16(f), frozen::HostFloatToF16(f)) << std::hex << u;
  }
}

#ifdef __FLT16_MANT_DIG__
// An independent oracle for F16: the compiler's own float -> _Float16
// (round to nearest even). It keeps NaN payloads where c10 does not, so NaN
// is left to the frozen copies above.
TEST(DType, FloatToF16MatchesCompilerFloat16) {
  for (uint32_t u : ConversionProbes()) {
    const float f = std::bit_cast<float>(u);
    if (std::isnan(f)) continue;
    const auto want = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    ASSERT_EQ(FloatToF16(f), want) << std::hex << u;
  }
}
#endif

TEST(DType, ScaleByZeroKeepsSignAndNaN) {
  std::vector<float> f = {-1.5f, 2.0f, kNaN, -0.0f};
  ScaleElements(DType::kF32, f.data(), f.data(), f.size(), 0.0);
  EXPECT_EQ(std::bit_cast<uint32_t>(f[0]), 0x80000000u);
  EXPECT_EQ(std::bit_cast<uint32_t>(f[1]), 0x00000000u);
  EXPECT_TRUE(std::isnan(f[2]));
  EXPECT_EQ(std::bit_cast<uint32_t>(f[3]), 0x80000000u);

  const uint16_t bf[] = {0xBFC0 /* -1.5 */, 0x3F80, 0x7FC0 /* NaN */};
  uint16_t bf_out[3];
  ScaleElements(DType::kBF16, bf, bf_out, 3, 0.0);
  EXPECT_EQ(bf_out[0], 0x8000);
  EXPECT_EQ(bf_out[1], 0x0000);
  EXPECT_TRUE(IsBF16NaN(bf_out[2]));

  uint16_t h[] = {0xBC00 /* -1 */, 0x7E00 /* NaN */};
  ScaleElements(DType::kF16, h, h, 2, 0.0);
  EXPECT_EQ(h[0], 0x8000);
  EXPECT_TRUE(IsF16NaN(h[1]));

  double d[] = {-1.5, 2.0};
  ScaleElements(DType::kF64, d, d, 2, 0.0);
  EXPECT_TRUE(std::signbit(d[0]));
  EXPECT_FALSE(std::signbit(d[1]));
}

TEST(DType, ScaleRoundsToTheTensorType) {
  const uint16_t in[] = {0x3F81 /* 1 + 2^-7 */, 0x4000 /* 2 */};
  uint16_t out[2];
  ScaleElements(DType::kBF16, in, out, 2, 0.5);
  EXPECT_EQ(out[0], 0x3F01);  // halving is exact: 0.5 + 2^-8
  EXPECT_EQ(out[1], 0x3F80);
  // 1 x 3.01171875: bf16 steps between 2 and 4 are 2^-6, and 0.01171875 is
  // 0.75 of a step above 3.0 (0x4040), so it rounds up to 0x4041.
  const uint16_t one[] = {0x3F80};
  ScaleElements(DType::kBF16, one, out, 1, 3.01171875);
  EXPECT_EQ(out[0], 0x4041);
  // 1 x (1 + 2^-8) is a tie between 0x3F80 and 0x3F81: even wins.
  ScaleElements(DType::kBF16, one, out, 1, 1.00390625);
  EXPECT_EQ(out[0], 0x3F80);
}

TEST(DType, ConvertBF16ToF16) {
  const uint16_t bf[] = {
      0x3F80,  // 1.0
      0x3F81,  // 1 + 2^-7, exact in half
      0xC040,  // -3.0
      0x4780,  // 65536: past the largest half -> inf
      0x8000,  // -0.0
      0x3380,  // 2^-24: the smallest half subnormal
      0x3300,  // 2^-25: tie with zero -> 0
      0x3340,  // 1.5 * 2^-25: rounds up to 2^-24
      0x7FC0,  // NaN
  };
  uint16_t h[std::size(bf)];
  ConvertElements(DType::kBF16, bf, DType::kF16, h, std::size(bf));
  EXPECT_EQ(h[0], 0x3C00);
  EXPECT_EQ(h[1], 0x3C08);
  EXPECT_EQ(h[2], 0xC200);
  EXPECT_EQ(h[3], 0x7C00);
  EXPECT_EQ(h[4], 0x8000);
  EXPECT_EQ(h[5], 0x0001);
  EXPECT_EQ(h[6], 0x0000);
  EXPECT_EQ(h[7], 0x0001);
  EXPECT_TRUE(IsF16NaN(h[8]));
}

TEST(DType, ConvertWidensInPlace) {
  // Four BF16 values at the front of a buffer big enough for four floats.
  float buf[4];
  const uint16_t bf[] = {0x3F80, 0xC000, 0x4049, 0x0000};
  std::memcpy(buf, bf, sizeof bf);
  ConvertElements(DType::kBF16, buf, DType::kF32, buf, 4);
  EXPECT_EQ(buf[0], 1.0f);
  EXPECT_EQ(buf[1], -2.0f);
  EXPECT_EQ(buf[2], 3.140625f);
  EXPECT_EQ(buf[3], 0.0f);
  // And back down in place.
  ConvertElements(DType::kF32, buf, DType::kBF16, buf, 4);
  uint16_t back[4];
  std::memcpy(back, buf, sizeof back);
  EXPECT_EQ(std::vector<uint16_t>(back, back + 4), std::vector<uint16_t>(bf, bf + 4));
}

uint32_t FloatBitsOf(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

// The vectorized conversions of whole buffers give the scalar functions' bits
// for every 16-bit pattern and for floats around every rounding boundary.
TEST(DType, BufferConversionsMatchTheScalarOnes) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> f(all.size());
  ConvertElements(DType::kBF16, all.data(), DType::kF32, f.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(FloatBitsOf(f[i]), FloatBitsOf(BF16ToFloat(all[i]))) << i;
  ConvertElements(DType::kF16, all.data(), DType::kF32, f.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(FloatBitsOf(f[i]), FloatBitsOf(F16ToFloat(all[i]))) << i;
  // Floats: every bf16 and f16 value, and the values just around and halfway
  // between neighbours (ties), NaNs and infinities among them.
  std::vector<float> x;
  for (uint32_t i = 0; i < 65536; ++i)
    for (uint32_t lo : {0u, 1u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) {
      const uint32_t u = (i << 16) | lo;
      float v;
      std::memcpy(&v, &u, 4);
      x.push_back(v);
    }
  for (uint32_t i = 0; i < 65536; ++i) x.push_back(F16ToFloat(static_cast<uint16_t>(i)) * 1.0001f);
  std::vector<uint16_t> out(x.size());
  ConvertElements(DType::kF32, x.data(), DType::kBF16, out.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[i], FloatToBF16(x[i])) << i;
  ConvertElements(DType::kF32, x.data(), DType::kF16, out.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[i], FloatToF16(x[i])) << i;
}

}  // namespace
}  // namespace strata
