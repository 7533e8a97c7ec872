// GGML's block formats (formats/quant.h) against the independent numpy
// reference (tests/ref/quant_ref.py): the same bytes, the same dequantized
// floats, and errors within each type's bound; plus llama-quantize's mix rules.
#include "strata/formats/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/formats/file.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

// The reference's rows and expected outputs, made once per test run.
class QuantRef : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::temp_directory_path() / ("strata-quant-ref-" + std::to_string(getpid()))).string();
    const std::string cmd = "/usr/bin/python3 " + std::string(STRATA_SOURCE_DIR) + "/tests/ref/quant_ref.py emit " +
                            dir_ + " 2>" + dir_ + ".err";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  static void TearDownTestSuite() {
    fs::remove_all(dir_);
    fs::remove(dir_ + ".err");
  }
  void SetUp() override {
    if (!ok_) {
      const std::string why = fs::exists(dir_ + ".err") ? ReadFile(dir_ + ".err") : "";
      if (std::getenv("CI")) FAIL() << "the numpy reference did not run (install python3-numpy): " << why;
      GTEST_SKIP() << "the numpy reference did not run: " << why;
    }
    meta_ = nlohmann::json::parse(ReadFile(dir_ + "/meta.json"));
    rows_ = meta_["rows"];
    cols_ = meta_["cols"];
    const std::string raw = ReadFile(dir_ + "/input.f32");
    x_.resize(raw.size() / 4);
    std::memcpy(x_.data(), raw.data(), raw.size());
  }
  static std::vector<float> Floats(const std::string& path) {
    const std::string raw = ReadFile(path);
    std::vector<float> f(raw.size() / 4);
    std::memcpy(f.data(), raw.data(), raw.size());
    return f;
  }
  static inline std::string dir_;
  static inline bool ok_ = false;
  nlohmann::json meta_;
  int64_t rows_ = 0, cols_ = 0;
  std::vector<float> x_;
};

TEST_F(QuantRef, BlocksEqualTheReferenceBytes) {
  for (const QuantInfo& t : QuantTypes()) {
    SCOPED_TRACE(std::string(t.name));
    const std::string want = ReadFile(dir_ + "/" + std::string(t.name) + ".bin");
    const uint64_t rb = QuantRowBytes(t.type, cols_);
    ASSERT_EQ(want.size(), rb * rows_);
    std::string got(want.size(), '\0');
    for (int64_t r = 0; r < rows_; ++r) QuantizeRow(t.type, x_.data() + r * cols_, cols_, got.data() + r * rb);
    int bad_blocks = 0, first = -1;
    for (size_t b = 0; b < got.size() / t.block_bytes; ++b)
      if (got.compare(b * t.block_bytes, t.block_bytes, want, b * t.block_bytes, t.block_bytes) != 0) {
        if (first < 0) first = static_cast<int>(b);
        ++bad_blocks;
      }
    EXPECT_EQ(bad_blocks, 0) << "first differing block " << first << " (row " << first * t.block_elems / cols_ << ")";
  }
}

TEST_F(QuantRef, DequantizationEqualsTheReference) {
  for (const QuantInfo& t : QuantTypes()) {
    SCOPED_TRACE(std::string(t.name));
    const std::string q = ReadFile(dir_ + "/" + std::string(t.name) + ".bin");
    const std::vector<float> want = Floats(dir_ + "/" + std::string(t.name) + ".deq.f32");
    const uint64_t rb = QuantRowBytes(t.type, cols_);
    std::vector<float> got(cols_);
    int64_t bad = 0;
    for (int64_t r = 0; r < rows_; ++r) {
      DequantizeRow(t.type, q.data() + r * rb, cols_, got.data());
      for (int64_t c = 0; c < cols_; ++c)
        bad += std::memcmp(&got[c], &want[r * cols_ + c], 4) != 0;
      // A range inside the row is the same floats.
      std::vector<float> part(77);
      DequantizeRange(t.type, q.data() + r * rb, cols_, 301, 77, part.data());
      EXPECT_EQ(std::memcmp(part.data(), got.data() + 301, 77 * 4), 0);
    }
    EXPECT_EQ(bad, 0);
  }
}

// Each type's error bound. Legacy types, per element, from the block's
// extremes: Q8_0 and Q5_0/Q4_0 round to a step of amax/127, amax/16, amax/8
// (half a step, except the clamp of +amax to the top level: a whole step);
// Q5_1 to (max-min)/31. The K types search their scales, so their bound is
// the RMS error over a row against the row's RMS (weight-like rows).
TEST_F(QuantRef, ErrorsWithinEachTypesBound) {
  const std::map<QuantType, double> rms_bound = {{QuantType::kQ4_K, 0.12}, {QuantType::kQ5_K, 0.06},
                                                 {QuantType::kQ6_K, 0.03}, {QuantType::kQ8_0, 0.01},
                                                 {QuantType::kQ4_0, 0.15}, {QuantType::kQ5_0, 0.075},
                                                 {QuantType::kQ5_1, 0.06}};
  for (const QuantInfo& t : QuantTypes()) {
    SCOPED_TRACE(std::string(t.name));
    std::vector<char> q(QuantRowBytes(t.type, cols_));
    std::vector<float> d(cols_);
    for (int64_t r = 0; r < 18; ++r) {  // the normal rows of three scales
      const float* x = x_.data() + r * cols_;
      QuantizeRow(t.type, x, cols_, q.data());
      DequantizeRow(t.type, q.data(), cols_, d.data());
      double se = 0, sx = 0;
      for (int64_t c = 0; c < cols_; ++c) {
        se += (x[c] - d[c]) * (x[c] - d[c]);
        sx += x[c] * x[c];
      }
      EXPECT_LT(std::sqrt(se / sx), rms_bound.at(t.type)) << "row " << r;
      if (t.block_elems != 32) continue;
      for (int64_t b = 0; b < cols_ / 32; ++b) {
        float amax = 0, mn = x[b * 32], mx = x[b * 32];
        for (int i = 0; i < 32; ++i) {
          amax = std::max(amax, std::fabs(x[b * 32 + i]));
          mn = std::min(mn, x[b * 32 + i]);
          mx = std::max(mx, x[b * 32 + i]);
        }
        const double step = t.type == QuantType::kQ8_0 ? amax / 127.0 * 0.5
                            : t.type == QuantType::kQ5_0 ? amax / 16.0
                            : t.type == QuantType::kQ4_0 ? amax / 8.0
                                                         : (mx - mn) / 31.0;
        for (int i = 0; i < 32; ++i)
          ASSERT_LE(std::fabs(x[b * 32 + i] - d[b * 32 + i]), step * 1.01 + 1e-3 * amax) << "block " << b << " " << i;
      }
    }
  }
}

TEST(QuantFormats, LayoutsAreGgmls) {
  const std::map<std::string, std::pair<int, int>> want = {{"Q4_0", {32, 18}}, {"Q5_0", {32, 22}},
                                                            {"Q5_1", {32, 24}}, {"Q8_0", {32, 34}},
                                                            {"Q4_K", {256, 144}}, {"Q5_K", {256, 176}},
                                                            {"Q6_K", {256, 210}}};
  ASSERT_EQ(QuantTypes().size(), want.size());
  for (const QuantInfo& t : QuantTypes()) {
    EXPECT_EQ(want.at(std::string(t.name)), std::make_pair(t.block_elems, t.block_bytes));
    EXPECT_EQ(QuantTypeFromGgml(t.ggml_type), t.type);
    EXPECT_EQ(ParseQuantType(t.name), t.type);
  }
  EXPECT_EQ(QuantTypeInfo(QuantType::kQ4_K).ggml_type, 12u);
  EXPECT_EQ(QuantRowBytes(QuantType::kQ4_K, 4096), 16u * 144u);
  EXPECT_FALSE(ParseQuantType("Q3_K"));
  EXPECT_FALSE(QuantTypeFromGgml(0));  // F32 is not a block type
}

// llama-quantize's choices for a 32-layer Mistral-7B at Q4_K_M (counted from
// its log on mistral-7b: 33 Q6_K tensors of 226 quantized) and the fallbacks.
TEST(QuantMix, Q4KMatchesLlamaQuantizeOnA32LayerModel) {
  int q6 = 0, q4 = 0;
  for (int l = 0; l < 32; ++l) {
    for (QuantRole r : {QuantRole::kAttnV, QuantRole::kFfnDown}) {
      const QuantType t = MixTensorType(QuantMix::kQ4_K_M, r, l, 32, 4096, false);
      (t == QuantType::kQ6_K ? q6 : q4) += 1;
    }
    EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kOther, l, 32, 4096, false), QuantType::kQ4_K);
  }
  // use_more_bits: layers 0-3, 28-31 and 6, 9, ..., 27 (every third from n/8+2).
  EXPECT_EQ(q6, 2 * (4 + 4 + 8));
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kAttnV, 5, 32, 4096, false), QuantType::kQ4_K);
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kAttnV, 6, 32, 4096, false), QuantType::kQ6_K);
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kOutput, 0, 32, 4096, false), QuantType::kQ6_K);
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kTokenEmbd, 0, 32, 4096, false), QuantType::kQ4_K);
  EXPECT_EQ(MixTensorType(QuantMix::kQ8_0, QuantRole::kOutput, 0, 32, 4096, false), QuantType::kQ8_0);
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_0, QuantRole::kOutput, 0, 32, 4096, false), QuantType::kQ6_K);
  // 70B: attn_v one step up.
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kAttnV, 11, 80, 8192, true), QuantType::kQ5_K);
  // Rows no super-block divides: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; none divides: kept.
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kOther, 10, 32, 96, false), QuantType::kQ5_0);
  EXPECT_EQ(MixTensorType(QuantMix::kQ5_K_M, QuantRole::kOther, 10, 32, 96, false), QuantType::kQ5_1);
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kAttnV, 0, 32, 96, false), QuantType::kQ8_0);
  EXPECT_EQ(MixTensorType(QuantMix::kQ4_K_M, QuantRole::kOther, 0, 32, 100, false), QuantType::kNone);
  EXPECT_EQ(ParseQuantMix("q4_k_m"), QuantMix::kQ4_K_M);
  EXPECT_FALSE(ParseQuantMix("q4_k_x"));
}

}  // namespace
}  // namespace strata
