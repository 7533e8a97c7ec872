// CPU kernels against slow, obviously correct double-precision versions
// written here from the definitions (not from the kernels' code).
#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
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

// Every MatMul tier this CPU has, lowest first ("portable" always).
std::vector<std::string> Tiers() {
  std::vector<std::string> out;
  for (const char* t : {"portable", "avx2", "avx512", "avx512-bf16", "amx-bf16"}) {
    out.push_back(t);
    if (CpuKernelsBest() == t) break;
  }
  return out;
}

// Switches the kernels to one tier for a scope, then back to the best.
struct TierScope {
  explicit TierScope(const std::string& t) { EXPECT_EQ(SetCpuKernelsForTesting(t), t); }
  ~TierScope() { SetCpuKernelsForTesting(""); }
};

// What the tier does to the activations before multiplying: avx512-bf16 and
// amx-bf16 round them to bf16 (round to nearest even) when the weights are BF16.
double ActivationAsUsed(const std::string& tier, DType w, float x) {
  if ((tier == "avx512-bf16" || tier == "amx-bf16") && w == DType::kBF16) return Bf16Value(FloatToBF16(x));
  return x;
}

// Checks y (M, N) = w x + bias against double precision, two ways:
// - against the exact product of the values the tier multiplies (x rounded as
//   the tier rounds it): only fp32 accumulation error, |err| <= K * 2^-24 *
//   sum|terms| (a bound on recursive summation; 1e-6 * K leaves margin);
// - against the exact product of the fp32 inputs: in addition, rounding x to
//   bf16 moves each term by at most 2^-8 of itself (RNE to 8 significant bits).
void CheckMatMul(const std::string& tier, const TestTensor& w, const TestTensor* bias, const std::vector<float>& x,
                 int64_t M, int64_t N, int64_t K, const std::vector<float>& y) {
  const bool rounds = ActivationAsUsed(tier, w.t.dtype, 1.0f + 1.0f / 1024) != 1.0f + 1.0f / 1024;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double used = bias ? bias->values[n] : 0, exact = used, mag = std::abs(used);
      for (int64_t k = 0; k < K; ++k) {
        const double wv = w.values[n * K + k];
        used += wv * ActivationAsUsed(tier, w.t.dtype, x[m * K + k]);
        exact += wv * x[m * K + k];
        mag += std::abs(wv * x[m * K + k]);
      }
      const double acc_tol = 1e-6 * K * mag + 1e-6;
      ASSERT_NEAR(y[m * N + n], used, acc_tol) << tier << " m=" << m << " n=" << n << " K=" << K;
      ASSERT_NEAR(y[m * N + n], exact, acc_tol + (rounds ? std::ldexp(mag, -8) : 0.0))
          << tier << " m=" << m << " n=" << n << " K=" << K;
    }
}

class MatMulTest : public ::testing::TestWithParam<std::tuple<DType, int64_t, int64_t>> {};

TEST_P(MatMulTest, MatchesDoubleReference) {
  auto [dt, M, K] = GetParam();
  const int64_t N = 37;
  TestTensor w = MakeTensor(dt, N, K, 1);
  TestTensor bias = MakeTensor(DType::kF32, N, 1, 2);
  std::vector<float> x = RandomVec(M * K, 3);
  for (const std::string& tier : Tiers()) {
    TierScope scope(tier);
    std::vector<float> y(M * N, -1);
    MatMul(w.t, x.data(), M, y.data(), &bias.t);
    CheckMatMul(tier, w, &bias, x, M, N, K, y);
  }
}

INSTANTIATE_TEST_SUITE_P(DTypesAndShapes, MatMulTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(1, 5, 20), ::testing::Values(8, 64, 83)));

// Sizes off every tile and vector width: K not a multiple of 8/16/32, N not a
// multiple of the 4-row tile, M below, at and past the token tiles.
class MatMulOddSizes : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulOddSizes, EveryTierMatchesDoubleReference) {
  const DType dt = GetParam();
  for (const std::string& tier : Tiers()) {
    TierScope scope(tier);
    for (int64_t K : {1, 7, 31, 33, 95, 525})
      for (int64_t N : {1, 3, 6, 69})
        for (int64_t M : {1, 2, 3, 7, 17, 50}) {
          TestTensor w = MakeTensor(dt, N, K, 100 + K * 7 + N);
          TestTensor bias = MakeTensor(DType::kBF16, N, 1, 200 + N);
          std::vector<float> x = RandomVec(M * K, 300 + M), y(M * N, -1);
          const bool with_bias = (K + N + M) % 2 == 0;
          MatMul(w.t, x.data(), M, y.data(), with_bias ? &bias.t : nullptr);
          CheckMatMul(tier, w, with_bias ? &bias : nullptr, x, M, N, K, y);
        }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, MatMulOddSizes, ::testing::Values(DType::kF32, DType::kBF16, DType::kF16));

bool SameBits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

// The caller batches sequences: row m's output must be the same bits whatever
// else is in the batch (M), where the row falls in its tile, and the threads.
class MatMulDeterminism : public ::testing::TestWithParam<DType> {};

TEST_P(MatMulDeterminism, RowBitsDoNotDependOnBatchPositionOrThreads) {
  const DType dt = GetParam();
  const int64_t N = 45, K = 1100, M = 100;  // K past the cache blocks of K (512, 1024)
  TestTensor w = MakeTensor(dt, N, K, 21);
  TestTensor bias = MakeTensor(DType::kF32, N, 1, 22);
  std::vector<float> x = RandomVec(M * K, 23);
  for (const std::string& tier : Tiers()) {
    TierScope scope(tier);
    std::vector<float> full(M * N);
    MatMul(w.t, x.data(), M, full.data(), &bias.t);
    for (int threads : {1, 2}) {
      tbb::global_control gc(tbb::global_control::max_allowed_parallelism, threads);
      for (int64_t Mb : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{7}, int64_t{37}, M}) {
        // Windows of Mb rows starting at several offsets: every row of x is
        // seen at several positions of the tiles.
        for (int64_t start : {int64_t{0}, int64_t{1}, int64_t{3}, M - Mb}) {
          if (start + Mb > M) continue;
          std::vector<float> y(Mb * N);
          MatMul(w.t, x.data() + start * K, Mb, y.data(), &bias.t);
          ASSERT_TRUE(SameBits(y.data(), full.data() + start * N, Mb * N))
              << tier << " threads=" << threads << " M=" << Mb << " start=" << start;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, MatMulDeterminism, ::testing::Values(DType::kF32, DType::kBF16, DType::kF16));

TEST(Kernels, MatMulManyEqualsSeparateMatMulsBitForBit) {
  const int64_t K = 200;
  TestTensor q = MakeTensor(DType::kBF16, 64, K, 31), k = MakeTensor(DType::kBF16, 21, K, 32),
             v = MakeTensor(DType::kF32, 7, K, 33), f = MakeTensor(DType::kF16, 10, K, 34);
  TestTensor qb = MakeTensor(DType::kF32, 64, 1, 35), vb = MakeTensor(DType::kBF16, 7, 1, 36);
  std::vector<uint16_t> zeros(5 * K, 0);
  HostTensor z{DType::kBF16, {5, K}, zeros.data(), true};
  for (const std::string& tier : Tiers()) {
    TierScope scope(tier);
    for (int64_t M : {1, 3, 7, 37}) {
      std::vector<float> x = RandomVec(M * K, 40 + M);
      std::vector<float> yq(M * 64), yk(M * 21), yv(M * 7), yf(M * 10), yz(M * 5, 1);
      MatMulOut outs[] = {{&q.t, yq.data(), &qb.t}, {&k.t, yk.data(), nullptr}, {&v.t, yv.data(), &vb.t},
                          {&f.t, yf.data(), nullptr}, {&z, yz.data(), nullptr}};
      MatMulMany(outs, 5, x.data(), M);
      std::vector<float> sq(M * 64), sk(M * 21), sv(M * 7), sf(M * 10);
      MatMul(q.t, x.data(), M, sq.data(), &qb.t);
      MatMul(k.t, x.data(), M, sk.data());
      MatMul(v.t, x.data(), M, sv.data(), &vb.t);
      MatMul(f.t, x.data(), M, sf.data());
      EXPECT_TRUE(SameBits(yq.data(), sq.data(), yq.size())) << tier << " M=" << M;
      EXPECT_TRUE(SameBits(yk.data(), sk.data(), yk.size())) << tier << " M=" << M;
      EXPECT_TRUE(SameBits(yv.data(), sv.data(), yv.size())) << tier << " M=" << M;
      EXPECT_TRUE(SameBits(yf.data(), sf.data(), yf.size())) << tier << " M=" << M;
      for (float e : yz) EXPECT_EQ(e, 0.0f);
    }
  }
}

bool HasAmx() { return CpuKernelsBest() == "amx-bf16"; }

// amx-bf16 on the shapes it takes (K % 32 == 0, N % 16 == 0): against the
// double reference, M off the 16-token tiles, N off the 32-row panels, K past
// its 1024 block, with and without bias.
TEST(KernelsAmx, MatchesDoubleReference) {
  if (!HasAmx()) GTEST_SKIP() << "no AMX on this CPU (best tier " << CpuKernelsBest() << ")";
  TierScope scope("amx-bf16");
  for (int64_t K : {32, 96, 512, 1056})
    for (int64_t N : {16, 48, 64, 144})
      for (int64_t M : {1, 2, 15, 16, 17, 33, 37, 100}) {
        TestTensor w = MakeTensor(DType::kBF16, N, K, 500 + K + N);
        TestTensor bias = MakeTensor(DType::kBF16, N, 1, 600 + N);
        std::vector<float> x = RandomVec(M * K, 700 + M), y(M * N, -1);
        const bool with_bias = (M + N / 16) % 2 == 0;
        MatMul(w.t, x.data(), M, y.data(), with_bias ? &bias.t : nullptr);
        CheckMatMul("amx-bf16", w, with_bias ? &bias : nullptr, x, M, N, K, y);
      }
}

// The engine batches sequences: row m's bits must not depend on M, the row's
// place in its 16-token tile, the units (M > 32 and K > 1024 carry the
// accumulators between K blocks) nor the thread count; and M = 1 (decode)
// takes the same path.
// With batch invariance on (STRATA_BATCH_INVARIANT) for M = 1 as well.
struct InvariantScope {
  explicit InvariantScope(bool on) : was(BatchInvariant()) { SetBatchInvariant(on); }
  ~InvariantScope() { SetBatchInvariant(was); }
  bool was;
};

TEST(KernelsAmx, RowBitsDoNotDependOnBatchPositionOrThreads) {
  if (!HasAmx()) GTEST_SKIP() << "no AMX on this CPU";
  TierScope scope("amx-bf16");
  InvariantScope inv(true);
  for (int64_t K : {int64_t{512}, int64_t{2080}}) {
    const int64_t N = 208, M = 100;
    TestTensor w = MakeTensor(DType::kBF16, N, K, 41 + K);
    TestTensor bias = MakeTensor(DType::kF32, N, 1, 42);
    std::vector<float> x = RandomVec(M * K, 43);
    std::vector<float> full(M * N);
    MatMul(w.t, x.data(), M, full.data(), &bias.t);
    for (int threads : {1, 2}) {
      tbb::global_control gc(tbb::global_control::max_allowed_parallelism, threads);
      for (int64_t Mb : {1, 2, 5, 16, 17, 37, 100})
        for (int64_t start : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{9}, M - Mb}) {
          if (start + Mb > M) continue;
          std::vector<float> y(Mb * N);
          MatMul(w.t, x.data() + start * K, Mb, y.data(), &bias.t);
          ASSERT_TRUE(SameBits(y.data(), full.data() + start * N, Mb * N))
              << "K=" << K << " threads=" << threads << " M=" << Mb << " start=" << start;
        }
    }
  }
}

// By default one token (a lone decode step) takes the avx512-bf16 dot
// products on amx-bf16 (they stream weights faster): exactly that tier's bits,
// while two tokens or more are AMX's, whatever M.
TEST(KernelsAmx, OneTokenTakesTheStreamingKernelUnlessInvariant) {
  if (!HasAmx()) GTEST_SKIP() << "no AMX on this CPU";
  const int64_t N = 64, K = 512;
  TestTensor w = MakeTensor(DType::kBF16, N, K, 77);
  std::vector<float> x = RandomVec(2 * K, 78), one(N), two(2 * N), ref(N), amx_one(N);
  {
    TierScope scope("avx512-bf16");
    MatMul(w.t, x.data(), 1, ref.data());
  }
  TierScope scope("amx-bf16");
  {
    InvariantScope inv(false);
    EXPECT_FALSE(BatchInvariant());
    MatMul(w.t, x.data(), 1, one.data());
    MatMul(w.t, x.data(), 2, two.data());
  }
  {
    InvariantScope inv(true);
    EXPECT_TRUE(BatchInvariant());
    MatMul(w.t, x.data(), 1, amx_one.data());
  }
  EXPECT_TRUE(SameBits(one.data(), ref.data(), N));
  EXPECT_TRUE(SameBits(amx_one.data(), two.data(), N));  // AMX: row 0 alone = row 0 of two
  EXPECT_FALSE(SameBits(one.data(), two.data(), N));     // the two kernels round differently
}

// Shapes AMX does not take run the avx512-bf16 kernel: the same bits as that tier.
TEST(KernelsAmx, UnsupportedShapesFallBackToAvx512Bf16) {
  if (!HasAmx()) GTEST_SKIP() << "no AMX on this CPU";
  for (auto [N, K] : {std::pair<int64_t, int64_t>{40, 512}, {64, 100}, {37, 83}, {64, 528}}) {
    for (int64_t M : {1, 7, 40}) {
      TestTensor w = MakeTensor(DType::kBF16, N, K, 800 + N + K);
      TestTensor bias = MakeTensor(DType::kF32, N, 1, 801);
      std::vector<float> x = RandomVec(M * K, 802 + M), ya(M * N), yb(M * N);
      {
        TierScope scope("amx-bf16");
        MatMul(w.t, x.data(), M, ya.data(), &bias.t);
      }
      {
        TierScope scope("avx512-bf16");
        MatMul(w.t, x.data(), M, yb.data(), &bias.t);
      }
      EXPECT_TRUE(SameBits(ya.data(), yb.data(), ya.size())) << "N=" << N << " K=" << K << " M=" << M;
    }
  }
}

// q/k/v style: AMX and fallback products (and F32 weights) in one region, each
// the same bits as alone.
TEST(KernelsAmx, MatMulManyMixesAmxAndFallback) {
  if (!HasAmx()) GTEST_SKIP() << "no AMX on this CPU";
  TierScope scope("amx-bf16");
  const int64_t K = 256;
  TestTensor q = MakeTensor(DType::kBF16, 96, K, 51), k = MakeTensor(DType::kBF16, 20, K, 52),
             v = MakeTensor(DType::kF32, 16, K, 53);
  TestTensor qb = MakeTensor(DType::kF32, 96, 1, 54);
  for (int64_t M : {1, 16, 37, 70}) {
    std::vector<float> x = RandomVec(M * K, 55 + M);
    std::vector<float> yq(M * 96), yk(M * 20), yv(M * 16), sq(M * 96), sk(M * 20), sv(M * 16);
    MatMulOut outs[] = {{&q.t, yq.data(), &qb.t}, {&k.t, yk.data(), nullptr}, {&v.t, yv.data(), nullptr}};
    MatMulMany(outs, 3, x.data(), M);
    MatMul(q.t, x.data(), M, sq.data(), &qb.t);
    MatMul(k.t, x.data(), M, sk.data());
    MatMul(v.t, x.data(), M, sv.data());
    EXPECT_TRUE(SameBits(yq.data(), sq.data(), yq.size())) << M;
    EXPECT_TRUE(SameBits(yk.data(), sk.data(), yk.size())) << M;
    EXPECT_TRUE(SameBits(yv.data(), sv.data(), yv.size())) << M;
    CheckMatMul("amx-bf16", q, &qb, x, M, 96, K, yq);
  }
}

TEST(Kernels, TierSelection) {
  const std::vector<std::string> tiers = Tiers();
  EXPECT_EQ(tiers.back(), CpuKernelsBest());
  // Asking for more than the CPU has gives the best it has; unknown names change nothing.
  EXPECT_EQ(SetCpuKernelsForTesting("amx-bf16"), CpuKernelsBest());
  EXPECT_EQ(SetCpuKernelsForTesting("portable"), "portable");
  EXPECT_FALSE(CpuHasAvx2());
  EXPECT_EQ(SetCpuKernelsForTesting("no-such-tier"), "portable");
  EXPECT_EQ(SetCpuKernelsForTesting(""), CpuKernelsBest());
  EXPECT_EQ(CpuKernelsName(), CpuKernelsBest());
}

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

// Every tier: against the definition over a wide range (exp of large
// arguments), and element/row results independent of n / M (same bits).
TEST(Kernels, SwiGluAndRmsNormEveryTier) {
  const int64_t n = 1000, D = 83, M = 7;
  std::vector<float> a0 = RandomVec(n, 12), b = RandomVec(n, 13);
  for (int64_t i = 0; i < n; ++i) a0[i] *= (i % 10 == 0) ? 60.0f : 4.0f;
  TestTensor w = MakeTensor(DType::kBF16, D, 1, 14);
  std::vector<float> x = RandomVec(M * D, 15);
  for (const std::string& tier : Tiers()) {
    TierScope scope(tier);
    std::vector<float> a = a0;
    SwiGlu(a.data(), b.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double ref = a0[i] / (1 + std::exp(-double(a0[i]))) * b[i];
      ASSERT_NEAR(a[i], ref, 1e-6 * std::abs(ref) + 1e-30) << tier << " i=" << i << " a=" << a0[i];
    }
    for (int64_t off : {0, 1, 17}) {  // a suffix of the vector: the same bits per element
      std::vector<float> s(a0.begin() + off, a0.begin() + off + 37);
      SwiGlu(s.data(), b.data() + off, 37);
      ASSERT_TRUE(SameBits(s.data(), a.data() + off, 37)) << tier << " off=" << off;
    }
    std::vector<float> out(M * D), one(D);
    RmsNorm(x.data(), w.t, M, D, 1e-5, out.data());
    for (int64_t m = 0; m < M; ++m) {
      double ss = 0;
      for (int64_t i = 0; i < D; ++i) ss += double(x[m * D + i]) * x[m * D + i];
      const double r = 1 / std::sqrt(ss / D + 1e-5);
      for (int64_t i = 0; i < D; ++i) ASSERT_NEAR(out[m * D + i], w.values[i] * x[m * D + i] * r, 1e-5) << tier;
      RmsNorm(x.data() + m * D, w.t, 1, D, 1e-5, one.data());
      ASSERT_TRUE(SameBits(one.data(), out.data() + m * D, D)) << tier << " m=" << m;
    }
  }
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
  for (const std::string& tier : Tiers()) {
    TierScope scope(tier);
    for (int window : {0, 3}) {
      std::vector<float> out(M * heads * hd);
      Attention(q.data(), k.data(), v.data(), M, pos0, heads, kvh, hd, window, out.data());
      std::vector<double> ref;
      NaiveAttention(q, k, v, M, pos0, heads, kvh, hd, window, ref);
      for (size_t i = 0; i < out.size(); ++i)
        EXPECT_NEAR(out[i], ref[i], 1e-5) << tier << " window " << window << " i " << i;
    }
  }
}

// A paged KV pool like the CPU backend's: block b holds [K | V][block_tokens]
// rows of kv_heads*hd floats; each job's table is a shuffled, non-contiguous
// choice of blocks, so a job's positions jump between blocks.
struct PagedPool {
  int bt, kv_stride;
  std::vector<float> data;
  int64_t block_stride() const { return int64_t{2} * bt * kv_stride; }
  float* krow(int32_t b, int r) { return data.data() + b * block_stride() + int64_t{r} * kv_stride; }
  float* vrow(int32_t b, int r) { return krow(b, r) + int64_t{bt} * kv_stride; }
};

TEST(Kernels, AttentionBatchPagedMatchesNaive) {
  const int heads = 8, kvh = 2, bt = 4;
  struct Seq {
    int64_t M, pos0;
  };
  const std::vector<Seq> seqs = {{1, 0}, {5, 0}, {1, 12}, {3, 9}, {17, 4}, {1, 40}};
  std::mt19937_64 rng(50);
  for (int hd : {6, 20, 64}) {
    const int kv_stride = kvh * hd;
    int total_blocks = 0;
    for (const Seq& s : seqs) total_blocks += static_cast<int>((s.pos0 + s.M + bt - 1) / bt) + 1;
    PagedPool pool{bt, kv_stride, RandomVec(int64_t{total_blocks} * 2 * bt * kv_stride, 51 + hd)};
    std::vector<int32_t> ids(total_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    // Per job: its block table, contiguous copies of its K/V for the reference, q.
    std::vector<std::vector<int32_t>> tables;
    std::vector<std::vector<float>> ks, vs, qs;
    size_t next = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int64_t ctx = seqs[i].pos0 + seqs[i].M;
      const int nb = static_cast<int>((ctx + bt - 1) / bt) + 1;  // one spare block past the end
      tables.emplace_back(ids.begin() + next, ids.begin() + next + nb);
      next += nb;
      std::vector<float> k(ctx * kv_stride), v(ctx * kv_stride);
      for (int64_t j = 0; j < ctx; ++j) {
        std::memcpy(&k[j * kv_stride], pool.krow(tables[i][j / bt], j % bt), kv_stride * 4);
        std::memcpy(&v[j * kv_stride], pool.vrow(tables[i][j / bt], j % bt), kv_stride * 4);
      }
      ks.push_back(k);
      vs.push_back(v);
      qs.push_back(RandomVec(seqs[i].M * heads * hd, 60 + i));
    }
    for (const std::string& tier : Tiers()) {
      TierScope scope(tier);
      for (int window : {0, 5}) {
        std::vector<std::vector<float>> outs;
        std::vector<AttentionJob> jobs;
        for (size_t i = 0; i < seqs.size(); ++i) outs.emplace_back(seqs[i].M * heads * hd, -1.0f);
        for (size_t i = 0; i < seqs.size(); ++i) {
          AttentionJob j;
          j.q = qs[i].data();
          j.kv = {pool.data.data(), pool.data.data() + int64_t{bt} * kv_stride, pool.block_stride(), bt,
                  tables[i].data()};
          j.M = seqs[i].M;
          j.pos0 = seqs[i].pos0;
          j.out = outs[i].data();
          jobs.push_back(j);
        }
        AttentionBatch(jobs.data(), static_cast<int>(jobs.size()), heads, kvh, hd, window);
        for (size_t i = 0; i < seqs.size(); ++i) {
          std::vector<double> ref;
          NaiveAttention(qs[i], ks[i], vs[i], seqs[i].M, seqs[i].pos0, heads, kvh, hd, window, ref);
          for (size_t e = 0; e < ref.size(); ++e)
            ASSERT_NEAR(outs[i][e], ref[e], 1e-5) << tier << " hd " << hd << " window " << window << " job " << i;
          // Alone, and one query at a time (decode after a prefill), the same bits.
          std::vector<float> alone(outs[i].size());
          AttentionJob j = jobs[i];
          j.out = alone.data();
          AttentionBatch(&j, 1, heads, kvh, hd, window);
          EXPECT_TRUE(SameBits(alone.data(), outs[i].data(), alone.size())) << tier << " job " << i;
          for (int64_t m = 0; m < seqs[i].M; ++m) {
            AttentionJob one = jobs[i];
            one.q = qs[i].data() + m * heads * hd;
            one.M = 1;
            one.pos0 = seqs[i].pos0 + m;
            one.out = alone.data();
            AttentionBatch(&one, 1, heads, kvh, hd, window);
            ASSERT_TRUE(SameBits(alone.data(), outs[i].data() + m * heads * hd, heads * hd)) << tier << " m " << m;
          }
        }
      }
    }
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
