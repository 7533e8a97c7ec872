// The fused decode kernels (runtime/cuda/decode.cuh) against references
// written here in double precision from the definitions (RMSNorm, GEMV,
// SwiGLU, rotate-half RoPE, softmax attention), on random inputs; outputs
// poisoned with NaN first so an element never written fails. Tolerances:
// fp32 accumulation over K terms, relative 1e-4 of the output's scale; values
// stored in bf16 within one bf16 rounding (2^-8 relative) of the reference.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "decode.cuh"
#include "gpu_test_util.h"

namespace strata {
namespace {

using cuda::AttentionDecodeAt;
using cuda::DecodeAttentionWorkspaceBytes;
using cuda::DecodeSplits;
using cuda::GemvAccumulate;
using cuda::NormGemv;
using cuda::NormGemvQkvRope;
using cuda::NormGemvSwiGlu;
using cuda::QkvRopeOutput;
using cuda::RowStack;
using gputest::CountNonFinite;
using gputest::Dev;
using gputest::Poison;
using gputest::RandomFloats;
using gputest::RandomTyped;
using gputest::RelErr;
using gputest::TypedData;

// The RMSNorm-ed input as the definition has it (double), rounded to float.
std::vector<double> NormRef(const std::vector<float>& x, const std::vector<float>& g, double eps) {
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> n(x.size());
  for (size_t i = 0; i < x.size(); ++i) n[i] = g[i] * (x[i] * inv);
  return n;
}

double DotRef(const std::vector<float>& w, int64_t row, const std::vector<double>& x) {
  double s = 0;
  const int64_t K = static_cast<int64_t>(x.size());
  for (int64_t k = 0; k < K; ++k) s += static_cast<double>(w[row * K + k]) * x[k];
  return s;
}

std::vector<float> ToFloat(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

float Bf16Round(double v) {
  const float f = static_cast<float>(v);
  uint16_t b = 0;
  ConvertElements(DType::kF32, &f, DType::kBF16, &b, 1);
  float r = 0;
  ConvertElements(DType::kBF16, &b, DType::kF32, &r, 1);
  return r;
}

std::vector<float> Bf16ToFloats(const std::vector<uint16_t>& v) {
  std::vector<float> f(v.size());
  ConvertElements(DType::kBF16, v.data(), DType::kF32, f.data(), v.size());
  return f;
}

const DType kTypes[] = {DType::kBF16, DType::kF16, DType::kF32};

TEST(CudaDecode, NormGemvMatchesDefinition) {
  STRATA_REQUIRE_CUDA();
  // K 512: the vector path; K 100: not a multiple of 8 (per-element path);
  // N odd: the last pair has one row. Three parts of different row counts.
  for (DType dt : kTypes)
    for (int64_t K : {512, 100, 4096}) {
      const int64_t rows[3] = {37, 64, 10};  // 111 rows: the last pair has one
      const int64_t N = rows[0] + rows[1] + rows[2];
      const TypedData w = RandomTyped(dt, static_cast<size_t>(N * K), 11 + K, 0.05f);
      const TypedData g = RandomTyped(DType::kBF16, static_cast<size_t>(K), 12, 1.0f);
      const std::vector<float> x = RandomFloats(static_cast<size_t>(K), 13, 3.0f);
      const TypedData b = RandomTyped(DType::kF32, static_cast<size_t>(rows[1]), 14, 1.0f);
      Dev<uint8_t> dw(w.bytes);
      Dev<uint8_t> dg(g.bytes);
      Dev<float> dx(x);
      Dev<uint8_t> db(b.bytes);
      Dev<float> dy(Poison(static_cast<size_t>(N) + 1));  // + a guard element that must stay NaN
      RowStack s;
      const size_t esz = DTypeSize(dt);
      s.Add(dw.get(), dt, rows[0], K);
      s.Add(dw.get() + rows[0] * K * esz, dt, rows[1], K, db.get(), DType::kF32);
      s.Add(dw.get() + (rows[0] + rows[1]) * K * esz, dt, rows[2], K);
      NormGemv({dx.get(), dg.get(), DType::kBF16, 1e-5}, s, dy.get(), nullptr);
      std::vector<float> y = dy.Download();
      EXPECT_TRUE(std::isnan(y.back())) << "a row past the last one was written";
      y.pop_back();
      const std::vector<double> n = NormRef(x, g.values, 1e-5);
      std::vector<double> ref(static_cast<size_t>(N));
      for (int64_t r = 0; r < N; ++r)
        ref[r] = DotRef(w.values, r, n) + (r >= rows[0] && r < rows[0] + rows[1] ? b.values[r - rows[0]] : 0.0);
      EXPECT_EQ(CountNonFinite(y), 0u) << DTypeName(dt) << " K " << K;
      EXPECT_LE(RelErr(y, ToFloat(ref)), 1e-4) << DTypeName(dt) << " K " << K;
    }
}

TEST(CudaDecode, SwiGluGemvMatchesDefinition) {
  STRATA_REQUIRE_CUDA();
  for (DType dt : kTypes) {
    const int64_t I = 300, K = 256;
    const TypedData w = RandomTyped(dt, static_cast<size_t>(2 * I * K), 21, 0.1f);
    const TypedData g = RandomTyped(DType::kF32, static_cast<size_t>(K), 22, 1.0f);
    const std::vector<float> x = RandomFloats(static_cast<size_t>(K), 23, 2.0f);
    Dev<uint8_t> dw(w.bytes);
    Dev<uint8_t> dg(g.bytes);
    Dev<float> dx(x);
    Dev<float> dh(Poison(static_cast<size_t>(I)));
    RowStack s;
    s.Add(dw.get(), dt, I, K);
    s.Add(dw.get() + I * K * DTypeSize(dt), dt, I, K);
    NormGemvSwiGlu({dx.get(), dg.get(), DType::kF32, 1e-6}, s, dh.get(), nullptr);
    const std::vector<float> h = dh.Download();
    const std::vector<double> n = NormRef(x, g.values, 1e-6);
    std::vector<double> ref(static_cast<size_t>(I));
    for (int64_t i = 0; i < I; ++i) {
      const double a = DotRef(w.values, i, n), u = DotRef(w.values, I + i, n);
      ref[i] = a / (1.0 + std::exp(-a)) * u;
    }
    EXPECT_EQ(CountNonFinite(h), 0u);
    EXPECT_LE(RelErr(h, ToFloat(ref)), 1e-4) << DTypeName(dt);
  }
}

TEST(CudaDecode, QkvRopeRotatesAndStoresAtTheDevicePosition) {
  STRATA_REQUIRE_CUDA();
  const int heads = 8, kv_heads = 2, hd = 64, half = hd / 2;
  const int64_t K = 256, Q = int64_t{heads} * hd, KV = int64_t{kv_heads} * hd, ctx = 40;
  const int64_t pos = 29;
  const TypedData w = RandomTyped(DType::kBF16, static_cast<size_t>((Q + 2 * KV) * K), 31, 0.1f);
  const TypedData g = RandomTyped(DType::kBF16, static_cast<size_t>(K), 32, 1.0f);
  const TypedData bq = RandomTyped(DType::kBF16, static_cast<size_t>(Q), 33, 0.5f);
  const TypedData bk = RandomTyped(DType::kBF16, static_cast<size_t>(KV), 34, 0.5f);
  const TypedData bv = RandomTyped(DType::kBF16, static_cast<size_t>(KV), 35, 0.5f);
  const std::vector<float> x = RandomFloats(static_cast<size_t>(K), 36, 1.0f);
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = 1.0 / std::pow(10000.0, 2.0 * i / hd);
  Dev<uint8_t> dw(w.bytes), dg(g.bytes), dbq(bq.bytes), dbk(bk.bytes), dbv(bv.bytes);
  Dev<float> dx(x), dq(Poison(static_cast<size_t>(Q)));
  Dev<double> dfreq(inv_freq);
  Dev<int64_t> dpos(std::vector<int64_t>{pos});
  const std::vector<uint16_t> sentinel(static_cast<size_t>(ctx * KV), 0x7FC1);  // a NaN pattern
  Dev<uint16_t> dk(sentinel), dv(sentinel);
  RowStack s;
  s.Add(dw.get(), DType::kBF16, Q, K, dbq.get(), DType::kBF16);
  s.Add(dw.get() + Q * K * 2, DType::kBF16, KV, K, dbk.get(), DType::kBF16);
  s.Add(dw.get() + (Q + KV) * K * 2, DType::kBF16, KV, K, dbv.get(), DType::kBF16);
  QkvRopeOutput o;
  o.q = dq.get();
  o.k_cache = dk.get();
  o.v_cache = dv.get();
  o.pos = dpos.get();
  o.inv_freq = dfreq.get();
  o.heads = heads;
  o.kv_heads = kv_heads;
  o.hd = hd;
  NormGemvQkvRope({dx.get(), dg.get(), DType::kBF16, 1e-5}, s, o, nullptr);
  const std::vector<float> q = dq.Download();
  const std::vector<float> kc = Bf16ToFloats(dk.Download()), vc = Bf16ToFloats(dv.Download());

  const std::vector<double> n = NormRef(x, g.values, 1e-5);
  std::vector<double> raw(static_cast<size_t>(Q + 2 * KV));
  for (int64_t r = 0; r < Q + 2 * KV; ++r) {
    const double b = r < Q ? bq.values[r] : r < Q + KV ? bk.values[r - Q] : bv.values[r - Q - KV];
    raw[r] = DotRef(w.values, r, n) + b;
  }
  auto rotated = [&](int64_t head_row0, int i, bool second) {  // rotate-half at position pos
    const double a = raw[head_row0 + i], b = raw[head_row0 + i + half];
    const double c = std::cos(pos * inv_freq[i]), sn = std::sin(pos * inv_freq[i]);
    return second ? b * c + a * sn : a * c - b * sn;
  };
  std::vector<double> qref(static_cast<size_t>(Q));
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < half; ++i) {
      qref[h * hd + i] = rotated(int64_t{h} * hd, i, false);
      qref[h * hd + i + half] = rotated(int64_t{h} * hd, i, true);
    }
  EXPECT_EQ(CountNonFinite(q), 0u);
  EXPECT_LE(RelErr(q, ToFloat(qref)), 1e-4);
  double scale = 0;
  for (double v : raw) scale = std::max(scale, std::abs(v));
  for (int h = 0; h < kv_heads; ++h)
    for (int i = 0; i < half; ++i)
      for (bool second : {false, true}) {
        const int64_t col = int64_t{h} * hd + i + (second ? half : 0);
        const double ref = rotated(Q + int64_t{h} * hd, i, second);
        EXPECT_NEAR(kc[pos * KV + col], Bf16Round(ref), std::abs(ref) / 128 + 1e-4 * scale) << "k col " << col;
      }
  for (int64_t j = 0; j < KV; ++j) {
    const double ref = raw[Q + KV + j];
    EXPECT_NEAR(vc[pos * KV + j], Bf16Round(ref), std::abs(ref) / 128 + 1e-4 * scale) << "v col " << j;
  }
  // Rows other than `pos` untouched.
  for (int64_t r = 0; r < ctx; ++r) {
    if (r == pos) continue;
    for (int64_t j = 0; j < KV; ++j) ASSERT_TRUE(std::isnan(kc[r * KV + j]) && std::isnan(vc[r * KV + j])) << r;
  }
}

TEST(CudaDecode, GemvAccumulateAddsToY) {
  STRATA_REQUIRE_CUDA();
  for (DType dt : kTypes)
    for (int64_t K : {1024, 14336 / 16, 36}) {
      const int64_t N = 99;
      const TypedData w = RandomTyped(dt, static_cast<size_t>(N * K), 41 + K, 0.05f);
      const std::vector<float> x = RandomFloats(static_cast<size_t>(K), 42, 1.0f);
      const std::vector<float> y0 = RandomFloats(static_cast<size_t>(N), 43, 1.0f);
      Dev<uint8_t> dw(w.bytes);
      Dev<float> dx(x), dy(y0);
      GemvAccumulate(dw.get(), dt, N, K, dx.get(), dy.get(), nullptr);
      const std::vector<float> y = dy.Download();
      std::vector<double> xd(x.begin(), x.end());
      std::vector<double> ref(static_cast<size_t>(N));
      for (int64_t r = 0; r < N; ++r) ref[r] = y0[r] + DotRef(w.values, r, xd);
      EXPECT_LE(RelErr(y, ToFloat(ref)), 1e-4) << DTypeName(dt) << " K " << K;
    }
}

// softmax(q.K^T / sqrt(hd)) V over rows [lo, pos] of the bf16 cache, in double.
std::vector<double> AttentionRef(const std::vector<float>& q, const std::vector<float>& kc,
                                 const std::vector<float>& vc, int64_t pos, int heads, int kv_heads, int hd,
                                 int window) {
  const int64_t kvd = int64_t{kv_heads} * hd;
  const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
  std::vector<double> out(static_cast<size_t>(heads) * hd, 0.0);
  for (int h = 0; h < heads; ++h) {
    const int kvh = h / (heads / kv_heads);
    std::vector<double> s;
    double mx = -INFINITY;
    for (int64_t j = lo; j <= pos; ++j) {
      double d = 0;
      for (int e = 0; e < hd; ++e) d += static_cast<double>(q[h * hd + e]) * kc[j * kvd + kvh * hd + e];
      s.push_back(d / std::sqrt(static_cast<double>(hd)));
      mx = std::max(mx, s.back());
    }
    double sum = 0;
    for (double& v : s) sum += (v = std::exp(v - mx));
    for (int64_t j = lo; j <= pos; ++j)
      for (int e = 0; e < hd; ++e) out[h * hd + e] += s[j - lo] / sum * vc[j * kvd + kvh * hd + e];
  }
  return out;
}

TEST(CudaDecode, AttentionAtDevicePositionMatchesDefinition) {
  STRATA_REQUIRE_CUDA();
  struct Case {
    int heads, kv_heads, hd, window, splits;
    int64_t pos;
  };
  // Splits more than keys (pos 0, 3), uneven chunks, GQA, windows, every head size class.
  const Case cases[] = {{8, 2, 64, 0, 9, 0},    {8, 2, 64, 0, 9, 3},    {8, 2, 64, 0, 9, 200},
                        {4, 4, 128, 0, 32, 1000}, {4, 1, 128, 16, 5, 300}, {2, 2, 256, 0, 3, 77},
                        {6, 3, 40, 7, 1, 50},     {32, 8, 128, 0, 9, 511}};
  for (const Case& c : cases) {
    const int64_t ctx = c.pos + 1, kvd = int64_t{c.kv_heads} * c.hd;
    const std::vector<float> q = RandomFloats(static_cast<size_t>(c.heads) * c.hd, 51 + c.pos, 1.0f);
    const TypedData k = RandomTyped(DType::kBF16, static_cast<size_t>(ctx * kvd), 52 + c.pos, 1.0f);
    const TypedData v = RandomTyped(DType::kBF16, static_cast<size_t>(ctx * kvd), 53 + c.pos, 1.0f);
    std::vector<uint16_t> kb(k.bytes.size() / 2), vb(v.bytes.size() / 2);
    std::memcpy(kb.data(), k.bytes.data(), k.bytes.size());
    std::memcpy(vb.data(), v.bytes.data(), v.bytes.size());
    Dev<float> dq(q), dout(Poison(q.size()));
    Dev<uint16_t> dk(kb), dv(vb);
    Dev<int64_t> dpos(std::vector<int64_t>{c.pos});
    const uint64_t ws_bytes = DecodeAttentionWorkspaceBytes(c.heads, c.hd, c.splits);
    Dev<uint8_t> ws(std::vector<uint8_t>(ws_bytes, 0));
    const std::vector<double> ref = AttentionRef(q, k.values, v.values, c.pos, c.heads, c.kv_heads, c.hd, c.window);
    // Twice: the per-head counters must be back at zero after each launch.
    for (int run = 0; run < 2; ++run) {
      dout.Upload(Poison(q.size()));
      AttentionDecodeAt(dq.get(), dk.get(), dv.get(), dpos.get(), c.heads, c.kv_heads, c.hd, c.window, c.splits,
                        ws.get(), dout.get(), nullptr);
      const std::vector<float> out = dout.Download();
      EXPECT_EQ(CountNonFinite(out), 0u) << "pos " << c.pos << " run " << run;
      EXPECT_LE(RelErr(out, ToFloat(ref)), 1e-4) << "heads " << c.heads << " hd " << c.hd << " pos " << c.pos
                                                  << " window " << c.window << " splits " << c.splits;
    }
    const std::vector<uint8_t> w = ws.Download();
    std::vector<unsigned> counters(static_cast<size_t>(c.heads));
    std::memcpy(counters.data(), w.data() + ws_bytes - sizeof(unsigned) * c.heads, sizeof(unsigned) * c.heads);
    EXPECT_EQ(counters, std::vector<unsigned>(static_cast<size_t>(c.heads), 0u));
  }
}

TEST(CudaDecode, SplitsFillTheDevice) {
  EXPECT_EQ(DecodeSplits(32, 132), 9);   // 288 blocks on an H100/H200
  EXPECT_EQ(DecodeSplits(32, 108), 7);   // A100
  EXPECT_EQ(DecodeSplits(1, 1000), 32);  // capped
  EXPECT_EQ(DecodeSplits(512, 132), 1);
}

#ifndef STRATA_CUDA_EMU  // a measurement of the real device
TEST(CudaDecode, ReadBandwidthIsPlausible) {
  STRATA_REQUIRE_CUDA();
  const double bw = MeasureDeviceReadBandwidth(uint64_t{256} << 20, 3);
  EXPECT_GT(bw, 1e10);  // > 10 GB/s on any CUDA device
  EXPECT_LT(bw, 2e13);  // < 20 TB/s: no HBM is that fast (the loads were not optimized away)
}
#endif

}  // namespace
}  // namespace strata
