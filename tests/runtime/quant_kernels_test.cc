// Quantized products (MatMul on a HostTensor of GGML blocks) on every CPU
// tier: against a double-precision product of the dequantized weights, and
// the AVX2 integer kernels bit for bit against the AVX-512 VNNI ones (they
// sum the same integers).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../runtime/src/cpu_quant.h"
#include "strata/formats/quant.h"
#include "strata/runtime/cpu_kernels.h"

namespace strata {
namespace {

struct TierScope {
  explicit TierScope(const std::string& t) : ok(SetCpuKernelsForTesting(t) == t) {}
  ~TierScope() { SetCpuKernelsForTesting(""); }
  bool ok;
};

struct Case {
  QuantType type;
  int64_t N, K;
};

// Weights N(0, 0.05), activations of mixed sign and scale, quantized with
// the reference quantizer; the product in double from the dequantized rows.
class QuantProducts : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case c = GetParam();
    std::mt19937 rng(11);
    std::normal_distribution<float> n(0, 0.05f);
    const uint64_t rb = QuantRowBytes(c.type, c.K);
    blocks_.resize(rb * c.N);
    deq_.resize(c.N * c.K);
    std::vector<float> row(c.K);
    for (int64_t r = 0; r < c.N; ++r) {
      for (float& v : row) v = n(rng);
      QuantizeRow(c.type, row.data(), c.K, blocks_.data() + r * rb);
      DequantizeRow(c.type, blocks_.data() + r * rb, c.K, deq_.data() + r * c.K);
    }
    w_.dtype = DType::kBF16;
    w_.shape = {c.N, c.K};
    w_.data = blocks_.data();
    w_.quant = c.type;
    x_.resize(kMaxM * c.K);
    std::uniform_real_distribution<float> u(-2, 2);
    for (int64_t i = 0; i < kMaxM * c.K; ++i) x_[i] = u(rng) * (i % 7 == 0 ? 10.0f : 1.0f);
  }
  std::vector<float> Run(int64_t M) {
    std::vector<float> y(M * GetParam().N);
    MatMul(w_, x_.data(), M, y.data());
    return y;
  }
  // |y - exact| within `rel` of sum |w||x| (the activations' 8-bit rounding
  // bounds the integer kernels' error by about 1/127 of it).
  void ExpectNear(const std::vector<float>& y, int64_t M, double rel, const std::string& what) {
    const Case c = GetParam();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t r = 0; r < c.N; ++r) {
        double exact = 0, mag = 0;
        for (int64_t k = 0; k < c.K; ++k) {
          exact += static_cast<double>(deq_[r * c.K + k]) * x_[m * c.K + k];
          mag += std::fabs(static_cast<double>(deq_[r * c.K + k]) * x_[m * c.K + k]);
        }
        ASSERT_NEAR(y[m * c.N + r], exact, rel * mag + 1e-6) << what << " m=" << m << " row=" << r;
      }
  }
  static constexpr int64_t kMaxM = 520;  // tokens x_ holds: more than panels take (512)
  std::vector<uint8_t> blocks_;
  std::vector<float> deq_, x_;
  HostTensor w_;
};

TEST_P(QuantProducts, EveryTierAgreesWithTheDequantizedProduct) {
  for (int64_t M : {1, 3, 16}) {
    {
      TierScope t("portable");  // fp32 rows
      ASSERT_TRUE(t.ok);
      ExpectNear(Run(M), M, 1e-5, "portable");
    }
    TierScope t("avx2");
    if (!t.ok) GTEST_SKIP() << "this CPU has no AVX2";
    ExpectNear(Run(M), M, 2e-2, "avx2");
  }
  {
    TierScope t("avx2");
    ExpectNear(Run(40), 40, 1e-2, "avx2, 40 tokens (bf16 row blocks)");
  }
}

TEST_P(QuantProducts, Avx2IntegersAreVnniIntegers) {
  const std::string best(CpuKernelsBest());
  if (best == "portable" || best == "avx2") GTEST_SKIP() << "no AVX-512 here (" << best << ")";
  for (int64_t M : {1, 2, 5, 16}) {
    std::vector<float> vnni = Run(M), avx2;
    {
      TierScope t("avx2");
      avx2 = Run(M);
    }
    ASSERT_EQ(vnni.size(), avx2.size());
    EXPECT_EQ(std::memcmp(vnni.data(), avx2.data(), vnni.size() * sizeof(float)), 0) << "M=" << M;
    ExpectNear(vnni, M, 2e-2, best);
  }
}

// Panels (rows interleaved 16 at a time) sum the same exact integers per
// block as the row kernels, so the two differ by float rounding alone; a
// misplaced element or scale would differ by the size of the product. The
// rows after the last whole panel run on the row kernels.
class QuantPanels : public QuantProducts {
 protected:
  // The whole panels of w_ packed and attached (the rows after them stay rows).
  void AttachPanels() {
    const Case c = GetParam();
    panels_.resize(PanelBytes(c.type, c.K) * (c.N / kPanelRows));
    PackPanels(w_, 0, c.N / kPanelRows, panels_.data());
    w_.panels = panels_.data();
  }
  // An f32 bias of N values, step * (n % period) + offset.
  HostTensor Bias(float step, int period, float offset) {
    const int64_t N = GetParam().N;
    bias_.resize(N);
    for (int64_t n = 0; n < N; ++n) bias_[n] = step * static_cast<float>(n % period) + offset;
    HostTensor b;
    b.dtype = DType::kF32;
    b.shape = {N};
    b.data = bias_.data();
    return b;
  }
  std::vector<uint8_t> panels_;
  std::vector<float> bias_;
};

TEST_P(QuantPanels, PanelsAgreeWithTheRowKernels) {
  const Case c = GetParam();
  ASSERT_TRUE(HasPanelKernel(c.type));
  if (!CpuRunsPanels()) GTEST_SKIP() << "the few-token kernels here are not VNNI (" << QuantKernelsName() << ")";
  ASSERT_GE(c.N, kPanelRows);
  AttachPanels();
  const HostTensor b = Bias(0.25f, 5, -0.5f);
  std::vector<uint8_t> row(QuantRowBytes(c.type, c.K));
  for (int64_t r = 0; r < c.N / kPanelRows * kPanelRows; ++r) {  // the panels hold the rows' very bytes
    PanelRowBytes(w_, r, row.data());
    ASSERT_EQ(std::memcmp(row.data(), blocks_.data() + r * row.size(), row.size()), 0) << "row " << r;
  }
  for (int64_t M : {1, 2, 3, 5, 8, 9, 16}) {
    std::vector<float> rows(M * c.N), pan(M * c.N);
    w_.panels = nullptr;
    MatMul(w_, x_.data(), M, rows.data(), &b);
    w_.panels = panels_.data();
    MatMul(w_, x_.data(), M, pan.data(), &b);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t r = 0; r < c.N; ++r) {
        double mag = 0;
        for (int64_t k = 0; k < c.K; ++k) mag += std::fabs(static_cast<double>(deq_[r * c.K + k]) * x_[m * c.K + k]);
        ASSERT_NEAR(pan[m * c.N + r], rows[m * c.N + r], 1e-5 * mag + 1e-6) << "M=" << M << " m=" << m << " row=" << r;
      }
  }
  // Past the row kernels' 16 tokens panels still run (the rows after them in
  // chunks of 16): against the double product.
  for (int64_t M : {1, 16, 40}) {
    std::vector<float> pan(M * c.N);
    MatMul(w_, x_.data(), M, pan.data());
    ExpectNear(pan, M, 2e-2, "panels, M=" + std::to_string(M));
  }
  // Past the panels' token limit, bf16 row blocks made from the panels' rows:
  // the very floats of the blocks made from the mapped rows.
  const int64_t M = kMaxM;
  std::vector<float> rows(M * c.N), pan(M * c.N);
  MatMul(w_, x_.data(), M, pan.data(), &b);
  w_.panels = nullptr;
  MatMul(w_, x_.data(), M, rows.data(), &b);
  EXPECT_EQ(std::memcmp(rows.data(), pan.data(), rows.size() * sizeof(float)), 0);
}

// AMX-INT8 tiles over the panels sum the same integers per block as the
// VNNI panel kernels and scale them in the same order: the same floats,
// whatever the number of tokens and its remainder modulo the tile's 16.
TEST_P(QuantPanels, AmxTilesAreTheVnniPanels) {
  const Case c = GetParam();
  if (!CpuRunsAmxPanels()) GTEST_SKIP() << "no AMX-INT8 here (" << CpuKernelsName() << ")";
  AttachPanels();
  const HostTensor b = Bias(0.125f, 3, -0.25f);
  for (int64_t M : {16, 17, 31, 32, 40, 100}) {
    std::vector<float> amx(M * c.N), vnni(M * c.N);
    MatMul(w_, x_.data(), M, amx.data(), &b);
    {
      TierScope t("avx512-bf16");  // VNNI panels, no tiles
      ASSERT_TRUE(t.ok);
      ASSERT_FALSE(CpuRunsAmxPanels());
      MatMul(w_, x_.data(), M, vnni.data(), &b);
    }
    for (int64_t i = 0; i < M * c.N; ++i)
      ASSERT_EQ(amx[i], vnni[i]) << "M=" << M << " token " << i / c.N << " row " << i % c.N;
  }
  std::vector<float> y(40 * c.N);
  MatMul(w_, x_.data(), 40, y.data());
  ExpectNear(y, 40, 2e-2, "amx panels, M=40");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(QuantTypeInfo(info.param.type).name) + "_" + std::to_string(info.param.N) + "x" +
         std::to_string(info.param.K);
}

INSTANTIATE_TEST_SUITE_P(Types, QuantProducts,
                         ::testing::Values(Case{QuantType::kQ8_0, 24, 96}, Case{QuantType::kQ4_0, 24, 96},
                                           Case{QuantType::kQ4_K, 20, 512}, Case{QuantType::kQ5_K, 20, 512},
                                           Case{QuantType::kQ6_K, 20, 512}, Case{QuantType::kQ5_0, 8, 64}),
                         CaseName);

// The types with panel kernels, with rows after the last whole panel.
INSTANTIATE_TEST_SUITE_P(Types, QuantPanels,
                         ::testing::Values(Case{QuantType::kQ8_0, 24, 96}, Case{QuantType::kQ4_K, 20, 512},
                                           Case{QuantType::kQ6_K, 20, 512}, Case{QuantType::kQ8_0, 53, 256},
                                           Case{QuantType::kQ4_K, 35, 768}, Case{QuantType::kQ6_K, 48, 1024}),
                         CaseName);

}  // namespace
}  // namespace strata
