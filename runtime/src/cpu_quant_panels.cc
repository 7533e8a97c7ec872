// Panels: quantized rows interleaved 16 at a time for the AVX-512 VNNI
// few-token kernels (docs/quantization.md, "Panels"). One 512-bit vector of
// a panel holds four consecutive elements of each of its 16 rows, so one
// vpdpbusd multiplies four weights of 16 rows by four broadcast activations:
// the unpacking, scales and float work of a block are shared by 16 rows,
// where the row kernels (cpu_quant_dot.inc) pay them per row.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_quant.h"

// GCC 12's AVX-512 headers build some results from _mm512_undefined_ps(),
// which -W(maybe-)uninitialized reports at every inlined use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace strata {
namespace {

constexpr int P = kPanelRows;

// The 6-bit scale and min of group g (0..7) of a Q4_K/Q5_K block's 12 bytes.
void ScaleMinK4(const uint8_t* q, int g, uint8_t& sc, uint8_t& mn) {
  if (g < 4) {
    sc = q[g] & 63;
    mn = q[g + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((q[g + 4] & 0xF) | ((q[g - 4] >> 6) << 4));
    mn = static_cast<uint8_t>((q[g + 4] >> 4) | ((q[g] >> 6) << 4));
  }
}

// Levels four to a 32-bit word, byte i of word w being element 4w + i:
// each byte keeps its own bits through the masked shifts below.
constexpr uint32_t kLow4 = 0x0F0F0F0Fu, kLow2 = 0x03030303u;

uint32_t Word(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The 256 levels of a Q4_K block's 128 quant bytes (0..15; elements l and
// l + 32 of each 64 share a byte), as 64 words.
void LevelsQ4_K(const uint8_t* qs, uint32_t* lw) {
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 8; ++i) {
      const uint32_t w = Word(qs + 32 * j + 4 * i);
      lw[16 * j + i] = w & kLow4;
      lw[16 * j + 8 + i] = (w >> 4) & kLow4;
    }
}

// The 256 levels of a Q6_K block (0..63; ql: 128 bytes, qh: 64), as 64 words.
void LevelsQ6_K(const uint8_t* ql, const uint8_t* qh, uint32_t* lw) {
  for (int n = 0; n < 2; ++n, ql += 64, qh += 32, lw += 32)
    for (int i = 0; i < 8; ++i) {
      const uint32_t a = Word(ql + 4 * i), b = Word(ql + 32 + 4 * i), h = Word(qh + 4 * i);
      lw[i] = (a & kLow4) | (h & kLow2) << 4;
      lw[8 + i] = (b & kLow4) | ((h >> 2) & kLow2) << 4;
      lw[16 + i] = ((a >> 4) & kLow4) | ((h >> 4) & kLow2) << 4;
      lw[24 + i] = ((b >> 4) & kLow4) | ((h >> 6) & kLow2) << 4;
    }
}

// 16 rows of `rb` bytes from `rows` into one panel at `out`.
void PackPanel(QuantType t, const uint8_t* rows, uint64_t rb, int64_t K, uint8_t* out) {
  switch (t) {
    case QuantType::kQ8_0:
      for (int64_t b = 0; b < K / 32; ++b, out += 544)
        for (int r = 0; r < P; ++r) {
          const uint8_t* blk = rows + r * rb + b * 34;
          for (int g = 0; g < 8; ++g) {
            const uint32_t v = Word(blk + 2 + 4 * g) ^ 0x80808080u;
            std::memcpy(out + g * 64 + r * 4, &v, 4);
          }
          std::memcpy(out + 512 + 2 * r, blk, 2);
        }
      return;
    case QuantType::kQ4_K:
      for (int64_t b = 0; b < K / 256; ++b, out += 2368)
        for (int r = 0; r < P; ++r) {
          const uint8_t* blk = rows + r * rb + b * 144;
          uint32_t lw[64];
          LevelsQ4_K(blk + 16, lw);
          for (int g = 0; g < 8; ++g)
            for (int h = 0; h < 4; ++h) {
              const uint32_t v = lw[8 * g + h] | lw[8 * g + h + 4] << 4;
              std::memcpy(out + (g * 4 + h) * 64 + r * 4, &v, 4);
            }
          for (int g = 0; g < 8; ++g) {
            uint8_t sc, mn;
            ScaleMinK4(blk + 4, g, sc, mn);
            out[2048 + g * 16 + r] = sc;
            out[2176 + (g / 2) * 32 + r * 2 + g % 2] = mn;
          }
          std::memcpy(out + 2304 + 2 * r, blk, 2);
          std::memcpy(out + 2336 + 2 * r, blk + 2, 2);
        }
      return;
    case QuantType::kQ6_K:
      for (int64_t b = 0; b < K / 256; ++b, out += 3360)
        for (int r = 0; r < P; ++r) {
          const uint8_t* blk = rows + r * rb + b * 210;
          uint32_t lw[64];
          LevelsQ6_K(blk, blk + 128, lw);
          for (int g = 0; g < 8; ++g) {
            for (int h = 0; h < 4; ++h) {
              const uint32_t v = (lw[8 * g + h] & kLow4) | (lw[8 * g + h + 4] & kLow4) << 4;
              std::memcpy(out + (g * 4 + h) * 64 + r * 4, &v, 4);
            }
            for (int s = 0; s < 2; ++s) {
              uint32_t v = 0;
              for (int e = 0; e < 4; ++e) v |= ((lw[8 * g + 4 * s + e] >> 4) & kLow2) << (2 * e);
              std::memcpy(out + 2048 + (g * 2 + s) * 64 + r * 4, &v, 4);
            }
          }
          for (int s = 0; s < 16; ++s) out[3072 + (s / 2) * 32 + r * 2 + s % 2] = blk[192 + s];
          std::memcpy(out + 3328 + 2 * r, blk + 208, 2);
        }
      return;
    default: return;
  }
}

// Row r (0..15) of the panel at `in` back to its quantized row bytes: the
// inverse of PackPanel, byte for byte.
void UnpackPanel(QuantType t, const uint8_t* in, int r, int64_t K, uint8_t* row) {
  switch (t) {
    case QuantType::kQ8_0:
      for (int64_t b = 0; b < K / 32; ++b, in += 544, row += 34) {
        std::memcpy(row, in + 512 + 2 * r, 2);
        for (int g = 0; g < 8; ++g)
          for (int j = 0; j < 4; ++j) row[2 + 4 * g + j] = in[g * 64 + r * 4 + j] ^ 0x80;
      }
      return;
    case QuantType::kQ4_K:
      for (int64_t b = 0; b < K / 256; ++b, in += 2368, row += 144) {
        std::memcpy(row, in + 2304 + 2 * r, 2);
        std::memcpy(row + 2, in + 2336 + 2 * r, 2);
        uint8_t sc[8], mn[8];
        for (int g = 0; g < 8; ++g) {
          sc[g] = in[2048 + g * 16 + r];
          mn[g] = in[2176 + (g / 2) * 32 + r * 2 + g % 2];
        }
        uint8_t* q = row + 4;
        for (int g = 0; g < 4; ++g) {
          q[g] = static_cast<uint8_t>(sc[g] | (sc[g + 4] >> 4) << 6);
          q[g + 4] = static_cast<uint8_t>(mn[g] | (mn[g + 4] >> 4) << 6);
          q[g + 8] = static_cast<uint8_t>((sc[g + 4] & 0xF) | (mn[g + 4] & 0xF) << 4);
        }
        uint8_t* qs = row + 16;
        for (int g = 0; g < 8; ++g)
          for (int h = 0; h < 8; ++h)
            for (int j = 0; j < 4; ++j) {
              const uint8_t v = in[(g * 4 + h % 4) * 64 + r * 4 + j];
              const uint8_t level = h < 4 ? v & 0xF : v >> 4;
              const int e = 32 * g + 4 * h + j;  // LevelQ4_K's byte and nibble
              uint8_t& dst = qs[32 * (e / 64) + e % 32];
              dst = (e % 64) < 32 ? static_cast<uint8_t>((dst & 0xF0) | level)
                                  : static_cast<uint8_t>((dst & 0x0F) | level << 4);
            }
      }
      return;
    case QuantType::kQ6_K:
      for (int64_t b = 0; b < K / 256; ++b, in += 3360, row += 210) {
        uint8_t *ql = row, *qh = row + 128;
        std::memset(row, 0, 192);
        for (int g = 0; g < 8; ++g)
          for (int h = 0; h < 8; ++h)
            for (int j = 0; j < 4; ++j) {
              const uint8_t v = in[(g * 4 + h % 4) * 64 + r * 4 + j];
              const uint8_t hb = in[2048 + (g * 2 + h / 4) * 64 + r * 4 + j];
              const int level = (h < 4 ? v & 0xF : v >> 4) | ((hb >> (2 * (h % 4))) & 3) << 4;
              const int e = 32 * g + 4 * h + j;  // LevelQ6_K's bytes and bits
              const int n = e / 128, l = e % 32, quarter = (e % 128) / 32;
              uint8_t& lo = quarter & 1 ? ql[64 * n + l + 32] : ql[64 * n + l];
              lo = static_cast<uint8_t>(lo | (quarter < 2 ? level & 0xF : (level & 0xF) << 4));
              qh[32 * n + l] = static_cast<uint8_t>(qh[32 * n + l] | (level >> 4) << (2 * quarter));
            }
        for (int s = 0; s < 16; ++s) row[192 + s] = in[3072 + (s / 2) * 32 + r * 2 + s % 2];
        std::memcpy(row + 208, in + 3328 + 2 * r, 2);
      }
      return;
    default: return;
  }
}

#define STRATA_PT __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

STRATA_PT inline __m512i Bcast(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

STRATA_PT inline __m512 HalfScales(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Each kernel: acc[m] (16 rows) += the panel's product with token m, for
// MT tokens. Integer sums are exact; each block's is scaled in float once.
constexpr int kAhead = 12288;  // bytes of a panel read ahead of the block in use

STRATA_PT inline void ReadAhead(const uint8_t* p, int bytes) {
  for (int i = 0; i < bytes; i += 64) _mm_prefetch(reinterpret_cast<const char*>(p) + kAhead + i, _MM_HINT_T0);
}

// sum over i < N of v[i] (32 int16) times the pair sums[2i], sums[2i + 1]
// repeated: per row, its int16 coefficients dotted with the token's sums.
template <int N>
STRATA_PT inline __m512i PairSums(const __m512i* v, const int16_t* sums) {
  __m512i s = _mm512_setzero_si512();
  for (int i = 0; i < N; ++i) {
    int32_t pair;
    std::memcpy(&pair, sums + 2 * i, 4);
    s = _mm512_dpwssd_epi32(s, v[i], _mm512_set1_epi32(pair));
  }
  return s;
}

template <int MT>
STRATA_PT void PanelQ8_0(const uint8_t* p, int64_t K, const ActQ8* a, __m512* acc) {
  for (int64_t b = 0; b < K / 32; ++b, p += 544) {
    __m512i w[8];
    for (int g = 0; g < 8; ++g) w[g] = _mm512_loadu_si512(p + 64 * g);
    ReadAhead(p, 544);
    const __m512 dw = HalfScales(p + 512);
    for (int m = 0; m < MT; ++m) {
      const int8_t* x = a[m].q.data() + 32 * b;
      // Two chains of sums (the weights are stored + 128), so that the
      // vpdpbusd latencies overlap; integer sums, so the order is free.
      __m512i s0 = _mm512_set1_epi32(-128 * a[m].gsums[b]), s1 = _mm512_setzero_si512();
      for (int g = 0; g < 8; g += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[g], Bcast(x + 4 * g));
        s1 = _mm512_dpbusd_epi32(s1, w[g + 1], Bcast(x + 4 * g + 4));
      }
      const __m512 sa = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
      acc[m] = _mm512_fmadd_ps(sa, _mm512_mul_ps(dw, _mm512_set1_ps(a[m].d[b])), acc[m]);
    }
  }
}

template <int MT>
STRATA_PT void PanelQ4_K(const uint8_t* p, int64_t K, const ActQ8* a, __m512* acc) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < K / 256; ++b, p += 2368) {
    ReadAhead(p, 2368);
    __m512i tot[MT];
    for (int m = 0; m < MT; ++m) tot[m] = _mm512_setzero_si512();
    for (int g = 0; g < 8; ++g) {
      __m512i w[8];
      for (int h = 0; h < 4; ++h) {
        const __m512i raw = _mm512_loadu_si512(p + (g * 4 + h) * 64);
        w[h] = _mm512_and_si512(raw, m4);
        w[h + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
      }
      const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2048 + 16 * g)));
      for (int m = 0; m < MT; ++m) {
        const int8_t* x = a[m].q.data() + 256 * b + 32 * g;
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (int t = 0; t < 8; t += 2) {
          s0 = _mm512_dpbusd_epi32(s0, w[t], Bcast(x + 4 * t));
          s1 = _mm512_dpbusd_epi32(s1, w[t + 1], Bcast(x + 4 * t + 4));
        }
        tot[m] = _mm512_add_epi32(tot[m], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
      }
    }
    __m512i mn[4];
    for (int i = 0; i < 4; ++i)
      mn[i] = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2176 + 32 * i)));
    const __m512 d = HalfScales(p + 2304), dmin = HalfScales(p + 2336);
    for (int m = 0; m < MT; ++m) {
      const __m512i mins = PairSums<4>(mn, a[m].gsums.data() + 8 * b);
      const __m512 da = _mm512_set1_ps(a[m].d[b]);
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[m]), _mm512_mul_ps(d, da), acc[m]);
      acc[m] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmin, da), acc[m]);
    }
  }
}

template <int MT>
STRATA_PT void PanelQ6_K(const uint8_t* p, int64_t K, const ActQ8* a, __m512* acc) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
  for (int64_t b = 0; b < K / 256; ++b, p += 3360) {
    ReadAhead(p, 3360);
    __m512i tot[MT];
    for (int m = 0; m < MT; ++m) tot[m] = _mm512_setzero_si512();
    for (int g = 0; g < 8; ++g) {
      __m512i w[8];
      const __m512i h0 = _mm512_loadu_si512(p + 2048 + (g * 2) * 64), h1 = _mm512_loadu_si512(p + 2048 + (g * 2 + 1) * 64);
      for (int h = 0; h < 4; ++h) {
        const __m512i raw = _mm512_loadu_si512(p + (g * 4 + h) * 64);
        w[h] = _mm512_or_si512(_mm512_and_si512(raw, m4),
                               _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h0, 2 * h), m2), 4));
        w[h + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(raw, 4), m4),
                                   _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h1, 2 * h), m2), 4));
      }
      // Scales of the 16-element groups 2g (quads 0-3) and 2g+1 (quads 4-7).
      const __m512i pr = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 3072 + 32 * g)));
      const __m512i sc0 = _mm512_srai_epi32(_mm512_slli_epi32(pr, 16), 16), sc1 = _mm512_srai_epi32(pr, 16);
      for (int m = 0; m < MT; ++m) {
        const int8_t* x = a[m].q.data() + 256 * b + 32 * g;
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (int t = 0; t < 4; ++t) {
          s0 = _mm512_dpbusd_epi32(s0, w[t], Bcast(x + 4 * t));
          s1 = _mm512_dpbusd_epi32(s1, w[t + 4], Bcast(x + 16 + 4 * t));
        }
        tot[m] = _mm512_add_epi32(tot[m], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc0), _mm512_mullo_epi32(s1, sc1)));
      }
    }
    // The -32 offset: 32 x sum over 16-groups of scale x the activations' sum.
    __m512i sp[8];
    for (int i = 0; i < 8; ++i)
      sp[i] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 3072 + 32 * i)));
    const __m512 d = HalfScales(p + 3328);
    for (int m = 0; m < MT; ++m) {
      const __m512i off = PairSums<8>(sp, a[m].bsums.data() + 16 * b);
      const __m512i q = _mm512_sub_epi32(tot[m], _mm512_slli_epi32(off, 5));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_mul_ps(d, _mm512_set1_ps(a[m].d[b])), acc[m]);
    }
  }
}

template <int MT>
STRATA_PT void PanelTokens(QuantType t, const uint8_t* p, int64_t K, const ActQ8* a, float* y, int64_t N,
                           const float* bias16) {
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  switch (t) {
    case QuantType::kQ8_0: PanelQ8_0<MT>(p, K, a, acc); break;
    case QuantType::kQ4_K: PanelQ4_K<MT>(p, K, a, acc); break;
    case QuantType::kQ6_K: PanelQ6_K<MT>(p, K, a, acc); break;
    default: return;
  }
  const __m512 bv = _mm512_loadu_ps(bias16);
  for (int m = 0; m < MT; ++m) _mm512_storeu_ps(y + m * N, _mm512_add_ps(acc[m], bv));
}

// ---------------------------------------------------------------------------
// AMX-INT8 over the same panels, 16 tokens at a time: a panel's vector of 4
// elements x 16 rows is one row of a tdpbsud B tile, so a Q8_0 block's 8
// vectors (32 elements) are a B tile as they lie; an A tile is 16 tokens x
// 32 int8 activations (AmxActivations). One tdpbsud gives the C tile of
// exact int32 sums that the VNNI kernels above build with 8 x 16 vpdpbusd,
// and the same scale arithmetic follows, so the products are those of the
// VNNI kernels bit for bit. Q4_K and Q6_K levels are unpacked once per panel
// into bytes (the VNNI kernels' w[]), then serve every tile of 16 tokens.

#define STRATA_PA \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8")))

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles: C 0, 1 (16 tokens x 16 rows of int32); A 2, 3 (16 tokens x 32
// bytes); B 4, 5 (8 rows of 64 bytes: 32 elements of 16 rows); Q6_K's
// 16-element groups: A 6 (16 x 16 bytes), B 7 (4 rows).
constexpr int kInt8Tiles = 2;  // tls_tile_config's value for this configuration
STRATA_PA void ConfigureInt8Tiles() {
  if (tls_tile_config == kInt8Tiles) return;
  TileConfig cfg;
  const int shape[8][2] = {{16, 64}, {16, 64}, {16, 32}, {16, 32}, {8, 64}, {8, 64}, {16, 16}, {4, 64}};
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = static_cast<uint8_t>(shape[t][0]);
    cfg.colsb[t] = static_cast<uint16_t>(shape[t][1]);
  }
  asm volatile("" : : "m"(cfg) : "memory");  // the stores above must reach memory before ldtilecfg
  _tile_loadconfig(&cfg);
  tls_tile_config = kInt8Tiles;
}

// One block (256 elements x 16 rows) of a Q4_K / Q6_K panel's levels as B
// tiles: per group of 32, the 8 vectors w[] of PanelQ4_K / PanelQ6_K (512
// bytes; Q6_K: 16-element groups 2g and 2g + 1 in its halves).
STRATA_PA void LevelsOfBlock(QuantType t, const uint8_t* p, uint8_t* out) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
  for (int g = 0; g < 8; ++g, out += 512) {
    auto* o = reinterpret_cast<__m512i*>(out);
    if (t == QuantType::kQ4_K) {
      for (int h = 0; h < 4; ++h) {
        const __m512i raw = _mm512_loadu_si512(p + (g * 4 + h) * 64);
        _mm512_storeu_si512(o + h, _mm512_and_si512(raw, m4));
        _mm512_storeu_si512(o + h + 4, _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4));
      }
      continue;
    }
    const __m512i h0 = _mm512_loadu_si512(p + 2048 + (g * 2) * 64), h1 = _mm512_loadu_si512(p + 2048 + (g * 2 + 1) * 64);
    for (int h = 0; h < 4; ++h) {
      const __m512i raw = _mm512_loadu_si512(p + (g * 4 + h) * 64);
      _mm512_storeu_si512(o + h, _mm512_or_si512(_mm512_and_si512(raw, m4),
                                                 _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h0, 2 * h), m2), 4)));
      _mm512_storeu_si512(o + h + 4,
                          _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(raw, 4), m4),
                                          _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(h1, 2 * h), m2), 4)));
    }
  }
}

// Each: acc[m] += the panel's product with token m of the 16 at xq. Two
// blocks (Q8_0) or groups (Q4_K) go through C tiles 0 and 1 side by side.
constexpr int T16 = 16;

STRATA_PA void AmxQ8_0(const uint8_t* p, int64_t K, const int8_t* xq, const ActQ8* a, __m512* acc) {
  alignas(64) int32_t c[2][256];
  const int64_t blocks = K / 32;
  for (int64_t b = 0; b < blocks; b += 2) {
    const int n = b + 1 < blocks ? 2 : 1;
    ReadAhead(p + 544 * b, 544 * n);
    _tile_loadd(2, xq + 512 * b, 32);
    _tile_loadd(4, p + 544 * b, 64);
    _tile_zero(0);
    _tile_dpbsud(0, 2, 4);
    if (n == 2) {
      _tile_loadd(3, xq + 512 * (b + 1), 32);
      _tile_loadd(5, p + 544 * (b + 1), 64);
      _tile_zero(1);
      _tile_dpbsud(1, 3, 5);
    }
    _tile_stored(0, c[0], 64);
    if (n == 2) _tile_stored(1, c[1], 64);
    for (int j = 0; j < n; ++j) {
      const __m512 dw = HalfScales(p + 544 * (b + j) + 512);
      for (int m = 0; m < T16; ++m) {
        const __m512i s = _mm512_add_epi32(_mm512_load_si512(c[j] + 16 * m), _mm512_set1_epi32(-128 * a[m].gsums[b + j]));
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(a[m].d[b + j])), acc[m]);
      }
    }
  }
}

// K types, one block of 256 (panel bytes p, levels lv, the tile's 16
// tokens' activations of the block x) for one tile of 16 tokens: acc, in
// memory (16 tokens x 16 rows), += the block's products.
STRATA_PA void AmxQ4_K(const uint8_t* p, const uint8_t* lv, const int8_t* x, const ActQ8* a, int64_t b, float* acc) {
  alignas(64) int32_t c[2][256];
  __m512i tot[T16];
  for (int m = 0; m < T16; ++m) tot[m] = _mm512_setzero_si512();
  for (int g = 0; g < 8; g += 2) {
    _tile_loadd(2, x + 512 * g, 32);
    _tile_loadd(4, lv + 512 * g, 64);
    _tile_zero(0);
    _tile_dpbsud(0, 2, 4);
    _tile_loadd(3, x + 512 * (g + 1), 32);
    _tile_loadd(5, lv + 512 * (g + 1), 64);
    _tile_zero(1);
    _tile_dpbsud(1, 3, 5);
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    for (int h = 0; h < 2; ++h) {
      const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2048 + 16 * (g + h))));
      for (int m = 0; m < T16; ++m)
        tot[m] = _mm512_add_epi32(tot[m], _mm512_mullo_epi32(_mm512_load_si512(c[h] + 16 * m), sc));
    }
  }
  __m512i mn[4];
  for (int i = 0; i < 4; ++i)
    mn[i] = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2176 + 32 * i)));
  const __m512 d = HalfScales(p + 2304), dmin = HalfScales(p + 2336);
  for (int m = 0; m < T16; ++m) {
    const __m512i mins = PairSums<4>(mn, a[m].gsums.data() + 8 * b);
    const __m512 da = _mm512_set1_ps(a[m].d[b]);
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[m]), _mm512_mul_ps(d, da), _mm512_load_ps(acc + 16 * m));
    v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmin, da), v);
    _mm512_store_ps(acc + 16 * m, v);
  }
}

STRATA_PA void AmxQ6_K(const uint8_t* p, const uint8_t* lv, const int8_t* x, const ActQ8* a, int64_t b, float* acc) {
  alignas(64) int32_t c[2][256];
  __m512i tot[T16];
  for (int m = 0; m < T16; ++m) tot[m] = _mm512_setzero_si512();
  for (int g = 0; g < 8; ++g) {
    const int8_t* xg = x + 512 * g;
    const uint8_t* l = lv + 512 * g;
    _tile_loadd(6, xg, 32);  // elements 0-15 of the group: group 2g of 16
    _tile_loadd(7, l, 64);
    _tile_zero(0);
    _tile_dpbsud(0, 6, 7);
    _tile_loadd(6, xg + 16, 32);  // 16-31: group 2g + 1
    _tile_loadd(7, l + 256, 64);
    _tile_zero(1);
    _tile_dpbsud(1, 6, 7);
    _tile_stored(0, c[0], 64);
    _tile_stored(1, c[1], 64);
    const __m512i pr = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 3072 + 32 * g)));
    const __m512i sc0 = _mm512_srai_epi32(_mm512_slli_epi32(pr, 16), 16), sc1 = _mm512_srai_epi32(pr, 16);
    for (int m = 0; m < T16; ++m)
      tot[m] = _mm512_add_epi32(tot[m], _mm512_add_epi32(_mm512_mullo_epi32(_mm512_load_si512(c[0] + 16 * m), sc0),
                                                         _mm512_mullo_epi32(_mm512_load_si512(c[1] + 16 * m), sc1)));
  }
  __m512i sp[8];
  for (int i = 0; i < 8; ++i)
    sp[i] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 3072 + 32 * i)));
  const __m512 d = HalfScales(p + 3328);
  for (int m = 0; m < T16; ++m) {
    const __m512i off = PairSums<8>(sp, a[m].bsums.data() + 16 * b);
    const __m512i q = _mm512_sub_epi32(tot[m], _mm512_slli_epi32(off, 5));
    _mm512_store_ps(acc + 16 * m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(q), _mm512_mul_ps(d, _mm512_set1_ps(a[m].d[b])),
                                                  _mm512_load_ps(acc + 16 * m)));
  }
}

}  // namespace

bool HasPanelKernel(QuantType t) { return t == QuantType::kQ8_0 || t == QuantType::kQ4_K || t == QuantType::kQ6_K; }

uint64_t PanelBytes(QuantType t, int64_t K) {
  switch (t) {
    case QuantType::kQ8_0: return static_cast<uint64_t>(K / 32) * 544;
    case QuantType::kQ4_K: return static_cast<uint64_t>(K / 256) * 2368;
    case QuantType::kQ6_K: return static_cast<uint64_t>(K / 256) * 3360;
    default: return 0;
  }
}

void PackPanels(const HostTensor& w, int64_t first, int64_t count, uint8_t* out) {
  const uint64_t rb = w.row_bytes(), pb = PanelBytes(w.quant, w.cols());
  const auto* rows = static_cast<const uint8_t*>(w.data);
  for (int64_t p = first; p < first + count; ++p)
    PackPanel(w.quant, rows + static_cast<uint64_t>(p) * P * rb, rb, w.cols(), out + static_cast<uint64_t>(p) * pb);
}

void PanelRowBytes(const HostTensor& w, int64_t row, uint8_t* out) {
  const uint8_t* p = static_cast<const uint8_t*>(w.panels) + static_cast<uint64_t>(row / P) * PanelBytes(w.quant, w.cols());
  UnpackPanel(w.quant, p, static_cast<int>(row % P), w.cols(), out);
}

STRATA_PT void PanelProducts(const HostTensor& w, int64_t panel, const ActQ8* acts, int64_t M, float* y,
                             const float* bias16) {
  const int64_t N = w.rows(), K = w.cols();
  const uint8_t* p = static_cast<const uint8_t*>(w.panels) + static_cast<uint64_t>(panel) * PanelBytes(w.quant, K);
  float* out = y + panel * P;
  for (int64_t m = 0; m < M;) {
    const int64_t left = M - m;
    const int mt = left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
    switch (mt) {
      case 8: PanelTokens<8>(w.quant, p, K, acts + m, out + m * N, N, bias16); break;
      case 4: PanelTokens<4>(w.quant, p, K, acts + m, out + m * N, N, bias16); break;
      case 2: PanelTokens<2>(w.quant, p, K, acts + m, out + m * N, N, bias16); break;
      default: PanelTokens<1>(w.quant, p, K, acts + m, out + m * N, N, bias16); break;
    }
    m += mt;
  }
}

void AmxActivations(const int8_t* q, int64_t m, int64_t K, int8_t* xq) {
  int8_t* tile = xq + (m / 16) * 16 * K + (m % 16) * 32;
  for (int64_t j = 0; j < K / 32; ++j) std::memcpy(tile + 512 * j, q + 32 * j, 32);
}

STRATA_PA void PanelProductsAmx(const HostTensor& w, int64_t panel, const ActQ8* acts, const int8_t* xq, int64_t M,
                                float* y, const float* bias16) {
  ConfigureInt8Tiles();
  const int64_t N = w.rows(), K = w.cols();
  const uint8_t* p = static_cast<const uint8_t*>(w.panels) + static_cast<uint64_t>(panel) * PanelBytes(w.quant, K);
  const __m512 bv = _mm512_loadu_ps(bias16);
  float* out = y + panel * P;
  if (w.quant == QuantType::kQ8_0) {  // tiles of tokens outer: the panel stays in L2 for the next tile
    for (int64_t m0 = 0; m0 < M; m0 += T16) {
      __m512 acc[T16];
      for (int m = 0; m < T16; ++m) acc[m] = _mm512_setzero_ps();
      AmxQ8_0(p, K, xq + m0 * K, acts + m0, acc);
      for (int m = 0; m < T16; ++m) _mm512_storeu_ps(out + (m0 + m) * N, _mm512_add_ps(acc[m], bv));
    }
    return;
  }
  // Q4_K, Q6_K: blocks outer, each block's levels unpacked once (in L1) for
  // every tile of tokens, whose sums wait in memory.
  thread_local std::vector<float> acc_kept;
  acc_kept.assign(static_cast<size_t>(M * P + 16), 0.0f);
  float* acc = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(acc_kept.data()) + 63) & ~uintptr_t{63});
  alignas(64) uint8_t lv[4096];
  const uint64_t block = PanelBytes(w.quant, 256);
  for (int64_t b = 0; b < K / 256; ++b, p += block) {
    ReadAhead(p, static_cast<int>(block));
    LevelsOfBlock(w.quant, p, lv);
    for (int64_t m0 = 0; m0 < M; m0 += T16) {
      const int8_t* x = xq + m0 * K + 4096 * b;  // the tile's 16 tokens x 256 elements of block b
      if (w.quant == QuantType::kQ4_K) AmxQ4_K(p, lv, x, acts + m0, b, acc + m0 * P);
      else AmxQ6_K(p, lv, x, acts + m0, b, acc + m0 * P);
    }
  }
  for (int64_t m = 0; m < M; ++m) _mm512_storeu_ps(out + m * N, _mm512_add_ps(_mm512_load_ps(acc + m * P), bv));
}

}  // namespace strata
