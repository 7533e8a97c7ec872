// CPU kernels against slow, obviously correct double-precision versions
// written here from the definitions (not from the kernels' code).
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <cstring>
#include <random>
#include <vector>

#include "strata/runtime/cpu_kernels.h"

namespace strata {
namespace {

// Independent conversions: bf16 is the top half of a float; f16 by its formula.
double Bf16Value(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
double F16Value(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

struct TestTensor {
  std::vector<uint16_t> half;
  std::vector<float> f32;
  HostTensor t;
  std::vector<double> values;  // what each element means, in double
};

TestTensor MakeTensor(DType dt, int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  TestTensor w;
  const int64_t n = rows * cols;
  w.t.dtype = dt;
  w.t.shape = cols == 1 ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, cols};
  if (dt == DType::kF32) {
    for (int64_t i = 0; i < n; ++i) w.f32.push_back(nd(rng));
    w.values.assign(w.f32.begin(), w.f32.end());
    w.t.data = w.f32.data();
  } else {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits = dt == DType::kBF16 ? FloatToBF16(nd(rng)) : FloatToF16(nd(rng));
      w.half.push_back(bits);
      w.values.push_back(dt == DType::kBF16 ? Bf16Value(bits) : F16Value(bits));
    }
    w.t.data = w.half.data();
  }
  return w;
}

std::vector<float> RandomVec(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

class MatMulTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t>> {};

TEST_P(MatMulTest, MatchesDoubleReference) {
  auto [dt, M, K] = GetParam();
  const int64_t N = 37;
  TestTensor w = MakeTensor(dt, N, K, 1);
  TestTensor bias = MakeTensor(DType::kF32, N, 1, 2);
  std::vector<float> x = RandomVec(M * K, 3), y(M * N, -1);
  MatMul(w.t, x.data(), M, y.data(), &bias.t);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = bias.values[n], mag = std::abs(bias.values[n]);
      for (int64_t k = 0; k < K; ++k) {
        ref += w.values[n * K + k] * x[m * K + k];
        mag += std::abs(w.values[n * K + k] * x[m * K + k]);
      }
      // fp32 accumulation: error bounded by K * eps * sum|terms|.
      EXPECT_NEAR(y[m * N + n], ref, 1e-6 * K * mag + 1e-6) << "m=" << m << " n=" << n;
    }
}

INSTANTIATE_TEST_SUITE_P(DTypesAndShapes, MatMulTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(1, 5), ::testing::Values(8, 64, 83)));

TEST(Kernels, ZeroWeightGivesExactZeros) {
  std::vector<uint16_t> zeros(16 * 8, 0);
  HostTensor t{DType::kBF16, {16, 8}, zeros.data(), true};
  std::vector<float> x = RandomVec(8, 4), y(16, 1);
  MatMul(t, x.data(), 1, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(Kernels, RmsNormMatchesDefinition) {
  const int64_t D = 50, M = 3;
  TestTensor w = MakeTensor(DType::kBF16, D, 1, 5);
  std::vector<float> x = RandomVec(M * D, 6), out(M * D);
  RmsNorm(x.data(), w.t, M, D, 1e-5, out.data());
  for (int64_t m = 0; m < M; ++m) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(x[m * D + i]) * x[m * D + i];
    double r = 1 / std::sqrt(ss / D + 1e-5);
    for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(out[m * D + i], w.values[i] * x[m * D + i] * r, 1e-5);
  }
}

TEST(Kernels, RopeIsAComplexRotationOfHalfPairs) {
  const int heads = 3, hd = 8;
  std::vector<double> inv = {1.0, 0.1, 0.01, 0.001};
  std::vector<float> x = RandomVec(heads * hd, 7), y = x;
  const int64_t pos = 13;
  Rope(y.data(), heads, hd, pos, inv.data());
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      std::complex<double> z(x[h * hd + i], x[h * hd + i + hd / 2]);
      std::complex<double> r = z * std::polar(1.0, pos * inv[i]);
      EXPECT_NEAR(y[h * hd + i], r.real(), 1e-5);
      EXPECT_NEAR(y[h * hd + i + hd / 2], r.imag(), 1e-5);
    }
}

TEST(Kernels, SwiGlu) {
  std::vector<float> a = {-2, 0, 1.5}, b = {3, 4, -1};
  SwiGlu(a.data(), b.data(), 3);
  const double in[] = {-2, 0, 1.5}, mul[] = {3, 4, -1};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], in[i] / (1 + std::exp(-in[i])) * mul[i], 1e-6);
}

// Attention by the definition: softmax over visible keys, GQA head mapping h -> h / group.
void NaiveAttention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, int64_t M,
                    int64_t pos0, int heads, int kvh, int hd, int window, std::vector<double>& out) {
  out.assign(M * heads * hd, 0);
  for (int64_t m = 0; m < M; ++m)
    for (int h = 0; h < heads; ++h) {
      const int g = h / (heads / kvh);
      const int64_t p = pos0 + m;
      std::vector<double> s;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j <= p; ++j) {
        if (window > 0 && p - j >= window) continue;
        double d = 0;
        for (int e = 0; e < hd; ++e) d += double(q[(m * heads + h) * hd + e]) * k[(j * kvh + g) * hd + e];
        s.push_back(d / std::sqrt(hd));
        keys.push_back(j);
      }
      double mx = *std::max_element(s.begin(), s.end()), sum = 0;
      for (double& e : s) sum += (e = std::exp(e - mx));
      for (size_t i = 0; i < s.size(); ++i)
        for (int e = 0; e < hd; ++e) out[(m * heads + h) * hd + e] += s[i] / sum * v[(keys[i] * kvh + g) * hd + e];
    }
}

TEST(Kernels, AttentionCausalGqaAndWindow) {
  const int heads = 4, kvh = 2, hd = 6;
  const int64_t ctx = 9, M = 4, pos0 = 5;
  std::vector<float> q = RandomVec(M * heads * hd, 8), k = RandomVec(ctx * kvh * hd, 9),
                     v = RandomVec(ctx * kvh * hd, 10);
  for (int window : {0, 3}) {
    std::vector<float> out(M * heads * hd);
    Attention(q.data(), k.data(), v.data(), M, pos0, heads, kvh, hd, window, out.data());
    std::vector<double> ref;
    NaiveAttention(q, k, v, M, pos0, heads, kvh, hd, window, ref);
    for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref[i], 1e-5) << "window " << window << " i " << i;
  }
}

TEST(Kernels, EmbeddingGatherConvertsRows) {
  TestTensor table = MakeTensor(DType::kF16, 10, 4, 11);
  int toks[] = {7, 0, 7};
  std::vector<float> out(12);
  EmbeddingGather(table.t, toks, 3, out.data());
  for (int m = 0; m < 3; ++m)
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[m * 4 + i], static_cast<float>(table.values[toks[m] * 4 + i]));
}

}  // namespace
}  // namespace strata
