// Quantized weights on the CPU: integer dot products of GGML blocks with
// 8-bit activations (AVX-512 VNNI, 256-bit vectors), a dequantizing fp32
// fallback, and bf16 dequantization in row blocks for many-token products.
#include "cpu_quant.h"

#include <immintrin.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

#include "strata/formats/dtype.h"
#include "strata/formats/quant.h"
#include "strata/runtime/cpu_kernels.h"

#define STRATA_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace strata {
namespace {

constexpr int64_t kFewTokens = 16;  // up to this many tokens a product runs on quantized rows

bool CpuHasVnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
const bool kHasVnni = CpuHasVnni();


bool HasIntegerKernel(QuantType t) {
  return t == QuantType::kQ8_0 || t == QuantType::kQ4_0 || t == QuantType::kQ4_K || t == QuantType::kQ5_K ||
         t == QuantType::kQ6_K;
}

// One token's activations quantized to int8 in blocks of 32 (legacy types)
// or 256 (K types): x ~= d[b] * q[i].
struct ActQ8 {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int16_t> bsums;  // 256 blocks: sums of q over each 16
  std::vector<int16_t> gsums;  // 256 blocks: sums of q over each 32 (|sum| <= 4064)
};

void QuantizeActivations(const float* x, int64_t K, int block, ActQ8& a) {
  a.q.resize(K);
  a.d.resize(K / block);
  a.bsums.assign(K / 16, 0);
  for (int64_t b = 0; b < K / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0;
    for (int i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
    a.d[b] = d;
    for (int i = 0; i < block; ++i) {
      const int v = static_cast<int>(std::nearbyint(xb[i] * id));
      a.q[b * block + i] = static_cast<int8_t>(std::clamp(v, -127, 127));
    }
  }
  for (int64_t g = 0; g < K / 16; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += a.q[g * 16 + i];
    a.bsums[g] = static_cast<int16_t>(s);
  }
  a.gsums.resize(K / 32);
  for (int64_t g = 0; g < K / 32; ++g) a.gsums[g] = static_cast<int16_t>(a.bsums[2 * g] + a.bsums[2 * g + 1]);
}

STRATA_VNNI inline float HSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

STRATA_VNNI inline int HSumI(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

STRATA_VNNI inline float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

STRATA_VNNI inline __m256i Load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// Each kernel computes out[m] = row . token m for M tokens (M <= kFewTokens),
// unpacking each weight block once for all of them. Integer sums stay exact;
// block scales are applied in float, in block order, per token.

STRATA_VNNI void DotQ8_0(const uint8_t* w, int64_t K, const ActQ8* a, int M, float* out) {
  __m256 acc[kFewTokens];
  for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t b = 0; b < K / 32; ++b, w += 34) {
    const __m256i q = Load(w + 2), aq = _mm256_sign_epi8(q, q);
    const float d = Half(w);
    for (int m = 0; m < M; ++m) {
      const __m256i x = Load(a[m].q.data() + b * 32);
      const __m256i p = _mm256_dpbusd_epi32(zero, aq, _mm256_sign_epi8(x, q));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a[m].d[b]), acc[m]);
    }
  }
  for (int m = 0; m < M; ++m) out[m] = HSum(acc[m]);
}

STRATA_VNNI void DotQ4_0(const uint8_t* w, int64_t K, const ActQ8* a, int M, float* out) {
  __m256 acc[kFewTokens];
  for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
  const __m256i zero = _mm256_setzero_si256(), m4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (int64_t b = 0; b < K / 32; ++b, w += 18) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2));
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
    const float d = Half(w);
    for (int m = 0; m < M; ++m) {
      const __m256i x = Load(a[m].q.data() + b * 32);
      const __m256i p = _mm256_sub_epi32(_mm256_dpbusd_epi32(zero, q, x), _mm256_dpbusd_epi32(zero, eight, x));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a[m].d[b]), acc[m]);
    }
  }
  for (int m = 0; m < M; ++m) out[m] = HSum(acc[m]);
}

// pshufb masks that broadcast 16-bit word g of a 128-bit lane to all its words.
alignas(32) const uint8_t kWordBroadcast[8][32] = {
#define STRATA_W(g) {2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, \
                     2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, \
                     2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1}
    STRATA_W(0), STRATA_W(1), STRATA_W(2), STRATA_W(3), STRATA_W(4), STRATA_W(5), STRATA_W(6), STRATA_W(7),
#undef STRATA_W
};

// Word 2k of a 128-bit lane to every word of the lower lane, word 2k+1 to the upper.
alignas(32) const uint8_t kPairBroadcast[4][32] = {
#define STRATA_P(k) {4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, \
                     4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, \
                     4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,   \
                     4 * k + 2, 4 * k + 3}
    STRATA_P(0), STRATA_P(1), STRATA_P(2), STRATA_P(3),
#undef STRATA_P
};

// Q4_K and Q5_K: per group of 32, maddubs (level x activation, pairs in int16)
// then vpdpwssd with the group's scale; the mins come off through the
// activations' sums per 16.
template <bool kFive>
STRATA_VNNI void DotQ45_K(const uint8_t* w, int64_t K, const ActQ8* a, int M, float* out) {
  constexpr int kBytes = kFive ? 176 : 144;
  __m256 acc[kFewTokens];
  float mins[kFewTokens];
  for (int m = 0; m < M; ++m) {
    acc[m] = _mm256_setzero_ps();
    mins[m] = 0;
  }
  const __m256i zero = _mm256_setzero_si256(), m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < K / 256; ++b, w += kBytes) {
    // The 12 scale bytes to eight 6-bit scales and eight mins, as int16, in
    // a few 32-bit operations (bytes 0-3 scales 0-3, 4-7 mins 0-3, 8-11 the
    // low nibbles of scales and mins 4-7, their top bits in bytes 0-7).
    uint32_t u[4];
    std::memcpy(u, w + 4, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    const uint32_t mins03 = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = mins03;
    u[0] &= 0x3f3f3f3fu;
    const __m128i sc16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, static_cast<int>(u[1]), static_cast<int>(u[0])));
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, static_cast<int>(u[3]), static_cast<int>(u[2])));
    const __m256i scb = _mm256_broadcastsi128_si256(sc16);
    const uint8_t* qs = w + (kFive ? 48 : 16);
    __m256i q[8], s16[8];
    const __m256i hv = kFive ? Load(w + 16) : zero;
    for (int j = 0; j < 4; ++j) {
      const __m256i raw = Load(qs + 32 * j);
      q[2 * j] = _mm256_and_si256(raw, m4);
      q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
      if constexpr (kFive) {
        q[2 * j] = _mm256_or_si256(q[2 * j], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hv, 2 * j), one), 4));
        q[2 * j + 1] =
            _mm256_or_si256(q[2 * j + 1], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hv, 2 * j + 1), one), 4));
      }
      s16[2 * j] = _mm256_shuffle_epi8(scb, Load(kWordBroadcast[2 * j]));
      s16[2 * j + 1] = _mm256_shuffle_epi8(scb, Load(kWordBroadcast[2 * j + 1]));
    }
    const float d = Half(w), dmin = Half(w + 2);
    for (int m = 0; m < M; ++m) {
      const int8_t* xq = a[m].q.data() + b * 256;
      __m256i sum = zero;
      for (int g = 0; g < 8; ++g)
        sum = _mm256_dpwssd_epi32(sum, _mm256_maddubs_epi16(q[g], Load(xq + 32 * g)), s16[g]);
      // Sum over groups of min x (the group's activation sum): one madd.
      const __m128i mm = _mm_madd_epi16(mn16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[m].gsums.data() + b * 8)));
      const __m128i m2 = _mm_add_epi32(mm, _mm_shuffle_epi32(mm, 0x4E));
      const int summ = _mm_cvtsi128_si32(_mm_add_epi32(m2, _mm_shuffle_epi32(m2, 0xB1)));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(d * a[m].d[b]), acc[m]);
      mins[m] += dmin * a[m].d[b] * static_cast<float>(summ);
    }
  }
  for (int m = 0; m < M; ++m) out[m] = HSum(acc[m]) - mins[m];
}

STRATA_VNNI void DotQ6_K(const uint8_t* w, int64_t K, const ActQ8* a, int M, float* out) {
  __m256 acc[kFewTokens];
  float bias[kFewTokens];
  for (int m = 0; m < M; ++m) {
    acc[m] = _mm256_setzero_ps();
    bias[m] = 0;
  }
  const __m256i zero = _mm256_setzero_si256(), m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
  for (int64_t b = 0; b < K / 256; ++b, w += 210) {
    const int8_t* sc = reinterpret_cast<const int8_t*>(w + 192);
    __m256i q[8], s16[8];
    for (int c = 0; c < 2; ++c) {
      const __m256i la = Load(w + 64 * c), lb = Load(w + 64 * c + 32), h = Load(w + 128 + 32 * c);
      q[4 * c] = _mm256_or_si256(_mm256_and_si256(la, m4), _mm256_slli_epi16(_mm256_and_si256(h, m2), 4));
      q[4 * c + 1] = _mm256_or_si256(_mm256_and_si256(lb, m4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4));
      q[4 * c + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4));
      q[4 * c + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4));
    }
    // The two 16-element groups of elements 32i..32i+31: scale 2i in the
    // lower lane, 2i+1 in the upper.
    const __m256i s_lo = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc))));
    const __m256i s_hi =
        _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8))));
    for (int i = 0; i < 8; ++i) s16[i] = _mm256_shuffle_epi8(i < 4 ? s_lo : s_hi, Load(kPairBroadcast[i % 4]));
    const float dw = Half(w + 208);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    for (int m = 0; m < M; ++m) {
      const int8_t* xq = a[m].q.data() + b * 256;
      const int16_t* bs = a[m].bsums.data() + b * 16;
      __m256i sum = zero;
      for (int i = 0; i < 8; ++i)
        sum = _mm256_dpwssd_epi32(sum, _mm256_maddubs_epi16(q[i], Load(xq + 32 * i)), s16[i]);
      const int off = HSumI(_mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bs)), sc16));
      const float dd = dw * a[m].d[b];
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dd), acc[m]);
      bias[m] += dd * static_cast<float>(32 * off);
    }
  }
  for (int m = 0; m < M; ++m) out[m] = HSum(acc[m]) - bias[m];
}

using DotFn = void (*)(const uint8_t*, int64_t, const ActQ8*, int, float*);

DotFn DotFor(QuantType t) {
  switch (t) {
    case QuantType::kQ8_0: return DotQ8_0;
    case QuantType::kQ4_0: return DotQ4_0;
    case QuantType::kQ4_K: return DotQ45_K<false>;
    case QuantType::kQ5_K: return DotQ45_K<true>;
    case QuantType::kQ6_K: return DotQ6_K;
    default: return nullptr;
  }
}

float BiasAt(const HostTensor* bias, int64_t n) {
  if (!bias) return 0.0f;
  float v = 0;
  ConvertElements(bias->dtype, static_cast<const char*>(bias->data) + n * DTypeSize(bias->dtype), DType::kF32, &v, 1);
  return v;
}

// Few tokens through the integer kernels: weights read once, in place.
void IntegerProducts(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  const int block = QuantTypeInfo(w.quant).block_elems;
  std::vector<ActQ8> acts(M);
  for (int64_t m = 0; m < M; ++m) QuantizeActivations(x + m * K, K, block, acts[m]);
  const DotFn dot = DotFor(w.quant);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const uint64_t rb = w.row_bytes();
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, N, 16),
      [&](const tbb::blocked_range<int64_t>& r) {
        float out[kFewTokens];
        for (int64_t n = r.begin(); n < r.end(); ++n) {
          dot(base + n * rb, K, acts.data(), static_cast<int>(M), out);
          const float b = BiasAt(bias, n);
          for (int64_t m = 0; m < M; ++m) y[m * N + n] = out[m] + b;
        }
      },
      tbb::static_partitioner());
}

// Few tokens without an integer kernel: each row dequantized to fp32 once.
void FloatProducts(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, N, 8), [&](const tbb::blocked_range<int64_t>& r) {
    std::vector<float> wf(K);
    for (int64_t n = r.begin(); n < r.end(); ++n) {
      QuantRowToFloat(w, n, wf.data());
      const float b = BiasAt(bias, n);
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * K;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t k = 0; k < K; ++k) acc[k & 7] += wf[k] * xm[k];
        const float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        y[m * N + n] = s + b;
      }
    }
  });
}

// Many tokens: blocks of rows dequantized to bf16 (about 8 MiB at a time),
// multiplied by the dense kernels, scattered into y.
void BlockProducts(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  const int64_t C = std::clamp<int64_t>((8 << 20) / (2 * K) / 32 * 32, 32, 1024);
  std::vector<uint16_t> wb(static_cast<size_t>(std::min(C, N) * K));
  std::vector<float> yb(static_cast<size_t>(std::min(C, N) * M));
  for (int64_t n0 = 0; n0 < N; n0 += C) {
    const int64_t c = std::min(C, N - n0);
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, c, 4), [&](const tbb::blocked_range<int64_t>& r) {
      std::vector<float> f(K);
      for (int64_t i = r.begin(); i < r.end(); ++i) {
        QuantRowToFloat(w, n0 + i, f.data());
        uint16_t* dst = wb.data() + i * K;
        for (int64_t k = 0; k < K; ++k) dst[k] = FloatToBF16(f[k]);
      }
    });
    HostTensor block;
    block.dtype = DType::kBF16;
    block.shape = {c, K};
    block.data = wb.data();
    HostTensor bias_rows;  // bias[n0, n0 + c), added by the dense kernels
    if (bias) {
      bias_rows = *bias;
      bias_rows.shape = {c};
      bias_rows.data = static_cast<const char*>(bias->data) + n0 * DTypeSize(bias->dtype);
    }
    MatMul(block, x, M, yb.data(), bias ? &bias_rows : nullptr);
    for (int64_t m = 0; m < M; ++m) std::memcpy(y + m * N + n0, yb.data() + m * c, sizeof(float) * c);
  }
}

}  // namespace

bool QuantIntegerKernels() {
  if (!kHasVnni) return false;
  const std::string_view k = CpuKernelsName();
  return k == "avx512" || k == "avx512-bf16" || k == "amx-bf16";
}

void QuantRowToFloat(const HostTensor& t, int64_t row, float* out) {
  DequantizeRow(t.quant, static_cast<const uint8_t*>(t.data) + row * t.row_bytes(), t.cols(), out);
}

void QuantMatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  if (M > kFewTokens) return BlockProducts(w, x, M, y, bias);
  if (HasIntegerKernel(w.quant) && QuantIntegerKernels()) return IntegerProducts(w, x, M, y, bias);
  FloatProducts(w, x, M, y, bias);
}

}  // namespace strata
