// GGML's block quantizers and dequantizers, written from the format
// descriptions and checked byte for byte against ggml (bench/quant_bytes.sh)
// and against the numpy reference (tests/ref/quant_ref.py). Every expression
// keeps ggml's float operation order; the file is built with
// -ffp-contract=off so no multiply-add is fused (ggml-base is built for the
// x86-64 baseline, without FMA).
#include "strata/formats/quant.h"

#include <algorithm>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "strata/formats/dtype_convert.h"
#include "strata/formats/error.h"

namespace strata {
namespace {

constexpr int kQK = 32;    // elements per block of the legacy types
constexpr int kQKK = 256;  // elements per super-block of the K types
constexpr float kGroupMaxEps = 1e-15f;

const std::vector<QuantInfo> kTypes = {
    {QuantType::kQ4_0, "Q4_0", 2, kQK, 18},    {QuantType::kQ5_0, "Q5_0", 6, kQK, 22},
    {QuantType::kQ5_1, "Q5_1", 7, kQK, 24},    {QuantType::kQ8_0, "Q8_0", 8, kQK, 34},
    {QuantType::kQ4_K, "Q4_K", 12, kQKK, 144}, {QuantType::kQ5_K, "Q5_K", 13, kQKK, 176},
    {QuantType::kQ6_K, "Q6_K", 14, kQKK, 210},
};

uint16_t H(float f) { return FloatToF16(f); }
float F(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToFloat(h);
}
void PutH(uint8_t* p, float f) {
  const uint16_t h = H(f);
  std::memcpy(p, &h, 2);
}

// Round to nearest (ties to even) through float's mantissa, as ggml does:
// exact for |f| <= 2^22.
int NearestInt(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// --- legacy 32-element blocks ---------------------------------------------

// Q4_0: d (f16), 16 bytes of nibbles (element j low, j+16 high); x = (q-8)*d.
void QuantQ4_0(const float* x, uint8_t* y) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutH(y, d);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int q1 = std::min(15, static_cast<int>(x[j + kQK / 2] * id + 8.5f));
    y[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

// Q5_0: d, 4 bytes of fifth bits (bit j: element j), 16 bytes of nibbles; x = (q-16)*d.
void QuantQ5_0(const float* x, uint8_t* y) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutH(y, d);
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    const int q1 = std::min(31, static_cast<int>(x[j + kQK / 2] * id + 16.5f));
    y[6 + j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
    qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + kQK / 2);
  }
  std::memcpy(y + 2, &qh, 4);
}

// Q5_1: d, m (f16), fifth bits, nibbles; x = q*d + m.
void QuantQ5_1(const float* x, uint8_t* y) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < kQK; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutH(y, d);
  PutH(y + 2, min);
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
    const int q1 = static_cast<uint8_t>((x[j + kQK / 2] - min) * id + 0.5f);
    y[8 + j] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
    qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + kQK / 2);
  }
  std::memcpy(y + 4, &qh, 4);
}

// Q8_0: d, 32 signed bytes; x = q*d.
void QuantQ8_0(const float* x, uint8_t* y) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  PutH(y, d);
  for (int j = 0; j < kQK; ++j) y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
}

// --- K super-blocks ---------------------------------------------------------

// ggml's make_qkx2_quants: scale and min of one 32-element group, searching
// nstep+1 candidate scales for the least weighted error. Writes L, returns
// the scale, sets *the_min to the (positive) offset.
float MakeQkx2(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, float rmin,
               float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    const int l = NearestInt(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    const float diff = scale * L[i] + min - x[i];
    best += w[i] * (diff * diff);
  }
  uint8_t aux[32];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, NearestInt(iscale * (x[i] - min))));
      aux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * aux[i] + this_min - x[i];
        err += w[i] * (diff * diff);
      }
      if (err < best) {
        std::memcpy(L, aux, n);
        best = err;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// The 12 scale bytes of Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins.
void PackScales(const uint8_t* ls, const uint8_t* lm, uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s[j] = ls[j];
      s[j + 4] = lm[j];
    } else {
      s[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      s[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      s[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

void ScaleMin(int j, const uint8_t* s, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): the super-block's d, dmin and
// scales at y[0..16), the levels L (0..nmax) of its 256 elements.
void QuantKScalesMins(const float* x, int nmax, float rmin, float rdelta, int nstep, uint8_t* y, uint8_t* L) {
  float scales[8], mins[8], w[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* g = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += g[l] * g[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(g[l]);
    scales[j] = MakeQkx2(32, nmax, g, w, L + 32 * j, &mins[j], rmin, rdelta, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(NearestInt(inv_scale * scales[j])));
    lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(NearestInt(inv_min * mins[j])));
  }
  PutH(y, max_scale / 63.f);
  PutH(y + 2, max_min / 63.f);
  PackScales(ls, lm, y + 4);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ScaleMin(j, y + 4, &sc, &m);
    const float d = F(y) * sc;
    if (d == 0.0f) continue;  // the group keeps make_qkx2's levels
    const float dm = F(y + 2) * m;
    for (int i = 0; i < 32; ++i) {
      const int l = NearestInt((x[32 * j + i] + dm) / d);
      L[32 * j + i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

// Q4_K: d, dmin, scales[12], qs[128] (elements j and j+32 of each 64 share a byte).
void QuantQ4_K(const float* x, uint8_t* y) {
  uint8_t L[kQKK];
  QuantKScalesMins(x, 15, -1.f, 0.1f, 20, y, L);
  uint8_t* q = y + 16;
  for (int j = 0; j < kQKK; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

// Q5_K: d, dmin, scales[12], qh[32] (bit 2i / 2i+1: fifth bit of pair i's
// low / high element), qs[128] as Q4_K.
void QuantQ5_K(const float* x, uint8_t* y) {
  uint8_t L[kQKK];
  QuantKScalesMins(x, 31, -0.5f, 0.1f, 15, y, L);
  uint8_t* qh = y + 16;
  uint8_t* ql = y + 48;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < kQKK; n += 64, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
  }
}

int ClampLevel(int nmax, int l) { return std::max(-nmax, std::min(nmax - 1, l)); }

// ggml's make_qx_quants with rmse_type 1 (weights x^2) and no importance:
// the symmetric scale of a 16-element group, levels L in [0, 2*nmax).
float MakeQx(int n, int nmax, const float* x, int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = ClampLevel(nmax, NearestInt(iscale * x[i]));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = ClampLevel(nmax, NearestInt(iscale * x[i]));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + ClampLevel(nmax, NearestInt(iscale * x[i])));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q6_K: ql[128] (low nibbles), qh[64] (two high bits each), scales[16]
// (int8, one per 16 elements), d; x = d * scale * (q - 32).
void QuantQ6_K(const float* x, uint8_t* y) {
  int8_t L[kQKK];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = MakeQx(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs) {
      max_abs = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(y, 0, 210);
  if (max_abs < kGroupMaxEps) return;  // d = 0 and every level 0
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
  const float iscale = -128.f / max_scale;
  PutH(y + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, NearestInt(iscale * scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float d = F(y + 208) * sc[j];
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i) {
      const int l = std::max(-32, std::min(31, NearestInt(x[16 * j + i] / d)));
      L[16 * j + i] = static_cast<int8_t>(l + 32);
    }
  }
  for (int j = 0; j < kQKK; j += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; ++l) {
      const int a = L[j + l], b = L[j + l + 32], c = L[j + l + 64], e = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((a & 0xF) | ((c & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((b & 0xF) | ((e & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
    }
  }
}

// --- dequantization ---------------------------------------------------------

void DeqQ4_0(const uint8_t* b, float* y) {
  const float d = F(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = ((b[2 + j] & 0xF) - 8) * d;
    y[j + 16] = ((b[2 + j] >> 4) - 8) * d;
  }
}

void DeqQ5(const uint8_t* b, float* y, bool with_min) {
  const float d = F(b);
  const float m = with_min ? F(b + 2) : 0.0f;
  const uint8_t* qhp = b + (with_min ? 4 : 2);
  const uint8_t* qs = qhp + 4;
  uint32_t qh;
  std::memcpy(&qh, qhp, 4);
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) << 4) & 0x10;
    const int h1 = (qh >> (j + 12)) & 0x10;
    const int x0 = (qs[j] & 0xF) | h0;
    const int x1 = (qs[j] >> 4) | h1;
    if (with_min) {
      y[j] = x0 * d + m;
      y[j + 16] = x1 * d + m;
    } else {
      y[j] = (x0 - 16) * d;
      y[j + 16] = (x1 - 16) * d;
    }
  }
}

void DeqQ8_0(const uint8_t* b, float* y) {
  const float d = F(b);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<int8_t>(b[2 + j]) * d;
}

void DeqQ4_K(const uint8_t* b, float* y) {
  const float d = F(b), min = F(b + 2);
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < kQKK; j += 64, q += 32, is += 2) {
    uint8_t sc, m;
    ScaleMin(is, b + 4, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    ScaleMin(is + 1, b + 4, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
  }
}

void DeqQ5_K(const uint8_t* b, float* y) {
  const float d = F(b), min = F(b + 2);
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < kQKK; j += 64, ql += 32, is += 2) {
    uint8_t sc, m;
    ScaleMin(is, b + 4, &sc, &m);
    const float d1 = d * sc, m1 = min * m;
    ScaleMin(is + 1, b + 4, &sc, &m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    u1 = static_cast<uint8_t>(u1 << 2);
    u2 = static_cast<uint8_t>(u2 << 2);
  }
}

void DeqQ6_K(const uint8_t* b, float* y) {
  const float d = F(b + 208);
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
  }
}

using QuantFn = void (*)(const float*, uint8_t*);
using DeqFn = void (*)(const uint8_t*, float*);

QuantFn QuantFor(QuantType t) {
  switch (t) {
    case QuantType::kQ4_0: return QuantQ4_0;
    case QuantType::kQ5_0: return QuantQ5_0;
    case QuantType::kQ5_1: return QuantQ5_1;
    case QuantType::kQ8_0: return QuantQ8_0;
    case QuantType::kQ4_K: return QuantQ4_K;
    case QuantType::kQ5_K: return QuantQ5_K;
    case QuantType::kQ6_K: return QuantQ6_K;
    case QuantType::kNone: break;
  }
  throw Error("internal: no quantizer for this type");
}

DeqFn DeqFor(QuantType t) {
  switch (t) {
    case QuantType::kQ4_0: return DeqQ4_0;
    case QuantType::kQ5_0: return [](const uint8_t* b, float* y) { DeqQ5(b, y, false); };
    case QuantType::kQ5_1: return [](const uint8_t* b, float* y) { DeqQ5(b, y, true); };
    case QuantType::kQ8_0: return DeqQ8_0;
    case QuantType::kQ4_K: return DeqQ4_K;
    case QuantType::kQ5_K: return DeqQ5_K;
    case QuantType::kQ6_K: return DeqQ6_K;
    case QuantType::kNone: break;
  }
  throw Error("internal: no dequantizer for this type");
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct MixInfo {
  QuantMix mix;
  std::string_view name;
  QuantType base;
};
const MixInfo kMixes[] = {
    {QuantMix::kQ4_0, "Q4_0", QuantType::kQ4_0},     {QuantMix::kQ5_0, "Q5_0", QuantType::kQ5_0},
    {QuantMix::kQ5_1, "Q5_1", QuantType::kQ5_1},     {QuantMix::kQ8_0, "Q8_0", QuantType::kQ8_0},
    {QuantMix::kQ4_K_S, "Q4_K_S", QuantType::kQ4_K}, {QuantMix::kQ4_K_M, "Q4_K_M", QuantType::kQ4_K},
    {QuantMix::kQ5_K_S, "Q5_K_S", QuantType::kQ5_K}, {QuantMix::kQ5_K_M, "Q5_K_M", QuantType::kQ5_K},
    {QuantMix::kQ6_K, "Q6_K", QuantType::kQ6_K},
};

const MixInfo& Mix(QuantMix m) {
  for (const MixInfo& i : kMixes)
    if (i.mix == m) return i;
  throw Error("internal: unknown quantization mix");
}

// llama-quantize's use_more_bits: the first and last eighth of the layers and
// every third layer between them.
bool UseMoreBits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

}  // namespace

const std::vector<QuantInfo>& QuantTypes() { return kTypes; }

const QuantInfo& QuantTypeInfo(QuantType t) {
  for (const QuantInfo& i : kTypes)
    if (i.type == t) return i;
  throw Error("internal: QuantTypeInfo(kNone)");
}

std::optional<QuantType> ParseQuantType(std::string_view name) {
  const std::string n = Lower(name);
  for (const QuantInfo& i : kTypes)
    if (Lower(i.name) == n) return i.type;
  return std::nullopt;
}

std::optional<QuantType> QuantTypeFromGgml(uint32_t id) {
  for (const QuantInfo& i : kTypes)
    if (i.ggml_type == id) return i.type;
  return std::nullopt;
}

uint64_t QuantRowBytes(QuantType t, int64_t n) {
  const QuantInfo& i = QuantTypeInfo(t);
  return static_cast<uint64_t>(n / i.block_elems) * static_cast<uint64_t>(i.block_bytes);
}

void QuantizeRow(QuantType t, const float* x, int64_t n, void* out) {
  const QuantInfo& info = QuantTypeInfo(t);
  const QuantFn f = QuantFor(t);
  auto* y = static_cast<uint8_t*>(out);
  for (int64_t b = 0; b < n / info.block_elems; ++b) f(x + b * info.block_elems, y + b * info.block_bytes);
}

void DequantizeRow(QuantType t, const void* q, int64_t n, float* out) {
  const QuantInfo& info = QuantTypeInfo(t);
  const DeqFn f = DeqFor(t);
  const auto* b = static_cast<const uint8_t*>(q);
  for (int64_t i = 0; i < n / info.block_elems; ++i) f(b + i * info.block_bytes, out + i * info.block_elems);
}

void DequantizeRange(QuantType t, const void* row, int64_t n, int64_t begin, int64_t count, float* out) {
  const QuantInfo& info = QuantTypeInfo(t);
  const DeqFn f = DeqFor(t);
  const auto* b = static_cast<const uint8_t*>(row);
  float tmp[kQKK];
  for (int64_t blk = begin / info.block_elems; count > 0; ++blk) {
    f(b + blk * info.block_bytes, tmp);
    const int64_t off = begin - blk * info.block_elems;
    const int64_t take = std::min<int64_t>(count, info.block_elems - off);
    std::memcpy(out, tmp + off, static_cast<size_t>(take) * sizeof(float));
    out += take;
    begin += take;
    count -= take;
  }
  (void)n;
}

std::optional<QuantMix> ParseQuantMix(std::string_view name) {
  const std::string n = Lower(name);
  for (const MixInfo& i : kMixes)
    if (Lower(i.name) == n) return i.mix;
  return std::nullopt;
}

std::string_view QuantMixName(QuantMix m) { return Mix(m).name; }

std::string QuantMixFlag(QuantMix m) { return Lower(Mix(m).name); }

std::string QuantMixNames() {
  std::string out;
  for (const MixInfo& i : kMixes) out += (out.empty() ? "" : ", ") + QuantMixFlag(i.mix);
  return out;
}

QuantType MixTensorType(QuantMix m, QuantRole role, int layer, int n_layers, int64_t cols, bool is_70b) {
  QuantType t = Mix(m).base;
  auto divides = [&](QuantType q) { return cols % QuantTypeInfo(q).block_elems == 0; };
  switch (role) {
    case QuantRole::kOutput:
      if (!divides(t)) t = QuantType::kQ8_0;
      else if (t != QuantType::kQ8_0) t = QuantType::kQ6_K;
      break;
    case QuantRole::kAttnV:
      if ((m == QuantMix::kQ4_K_M || m == QuantMix::kQ5_K_M) && UseMoreBits(layer, n_layers)) t = QuantType::kQ6_K;
      else if (m == QuantMix::kQ4_K_S && layer < 4) t = QuantType::kQ5_K;
      if (is_70b && t == QuantType::kQ4_K) t = QuantType::kQ5_K;
      break;
    case QuantRole::kFfnDown:
      if ((m == QuantMix::kQ4_K_M || m == QuantMix::kQ5_K_M) && UseMoreBits(layer, n_layers)) t = QuantType::kQ6_K;
      else if (m == QuantMix::kQ4_K_S && layer < n_layers / 8) t = QuantType::kQ5_K;
      break;
    case QuantRole::kTokenEmbd:
    case QuantRole::kOther: break;
  }
  if (divides(t)) return t;
  // llama-quantize's fallbacks for rows no super-block divides.
  if (t == QuantType::kQ4_K) t = QuantType::kQ5_0;
  else if (t == QuantType::kQ5_K) t = QuantType::kQ5_1;
  else if (t == QuantType::kQ6_K) t = QuantType::kQ8_0;
  return divides(t) ? t : QuantType::kNone;
}

}  // namespace strata
