// The merge methods' arithmetic (formats/merge.h) on small inputs whose
// results are worked out by hand from docs/merge_methods.md and mergekit's
// definitions (values checked against torch 1.13 where rounding matters), the
// statistics of the deterministic draws, and the merge node's parser on
// malformed nodes. Whole exports are compared with tests/ref/mergekit_ref.py
// by tests/e2e/merge_methods.sh.
#include "strata/formats/merge.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "strata/formats/error.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

Hash H(int i) {
  Hash h;
  h.high = h.low = 0x0101010101010101ull * static_cast<uint8_t>(i);
  return h;
}

MergeSpec Spec(const char* method, size_t n_inputs, int base = -1) {
  MergeSpec m;
  m.method = FindMergeMethod(method);
  EXPECT_NE(m.method, nullptr) << method;
  for (size_t i = 0; i < n_inputs; ++i) m.inputs.push_back(H(static_cast<int>(i + 1)));
  m.base = base;
  m.tensor_params.assign(n_inputs, Json::object());
  if (m.method->random()) {
    m.seed = 0;
    m.salt = "model.layers.0.mlp.up_proj.weight";
  }
  return m;
}

std::vector<float> Merge(const MergeSpec& m, DType d, const std::vector<std::vector<float>>& in,
                         std::vector<int64_t> shape = {}) {
  const size_t n = in.at(0).size();
  if (shape.empty()) shape = {static_cast<int64_t>(n)};
  std::vector<const float*> ptrs;
  for (const auto& v : in) ptrs.push_back(v.data());
  std::vector<float> out(n);
  ComputeMerge(m, d, shape, ptrs, n, out.data(), H(0));
  return out;
}

TEST(MergeMethods, TableHasMergekitsDefaults) {
  const MergeMethodInfo* ties = FindMergeMethod("ties");
  ASSERT_NE(ties, nullptr);
  EXPECT_TRUE(ties->consensus);
  EXPECT_TRUE(ties->needs_base);
  MergeSpec m = Spec("ties", 2, 0);
  EXPECT_EQ(m.Param("normalize"), 1.0);  // mergekit registry: ties normalizes, dare_ties does not
  EXPECT_EQ(m.Param("rescale"), 0.0);
  EXPECT_EQ(Spec("dare_ties", 2, 0).Param("normalize"), 0.0);
  EXPECT_EQ(Spec("dare_ties", 2, 0).Param("rescale"), 1.0);
  EXPECT_EQ(Spec("della", 2, 0).Param("normalize"), 1.0);
  EXPECT_EQ(Spec("breadcrumbs", 2, 0).TensorParam(1, "gamma"), 0.01);
  EXPECT_EQ(Spec("della_linear", 2, 0).TensorParam(1, "epsilon"), 0.15);
  EXPECT_EQ(FindMergeMethod("slerp")->models, 2);
  EXPECT_EQ(FindMergeMethod("nearswap")->models, 2);
  EXPECT_EQ(FindMergeMethod("model_stock")->min_models, 3);  // base plus two others
  EXPECT_EQ(Spec("ram", 2, 0).Param("epsilon"), 1e-5);
  EXPECT_EQ(Spec("sce", 2, 0).Param("select_topk"), 1.0);
  EXPECT_TRUE(FindMergeMethod("sce")->whole_tensor);
  EXPECT_FALSE(FindMergeMethod("ram")->whole_tensor);
  EXPECT_EQ(FindMergeMethod("nuslerp")->others, 2);  // two models, the base optional
  EXPECT_FALSE(FindMergeMethod("nuslerp")->needs_base);
  EXPECT_EQ(Spec("nuslerp", 2).Param("nuslerp_flatten"), 1.0);
  EXPECT_EQ(Spec("nuslerp", 2).Param("nuslerp_row_wise"), 0.0);
  EXPECT_EQ(Spec("multislerp", 2).Param("normalize_weights"), 1.0);
  EXPECT_EQ(Spec("multislerp", 2).Param("eps"), 1e-8);
  EXPECT_FALSE(FindMergeMethod("karcher")->base_role);  // every model alike
  EXPECT_EQ(Spec("karcher", 2).Param("max_iter"), 10);
  EXPECT_EQ(Spec("karcher", 2).Param("tol"), 1e-5);
  EXPECT_TRUE(FindMergeMethod("arcee_fusion")->needs_base);
  EXPECT_EQ(FindMergeMethod("arcee_fusion")->models, 2);
  EXPECT_FALSE(FindMergeMethod("linear")->one_model_as_is);  // its one model still weighed
  EXPECT_EQ(FindMergeMethod("della_ties"), nullptr);
  EXPECT_THAT(MergeMethodNames(), HasSubstr("passthrough, linear, task_arithmetic, ties"));
}

TEST(MergeMethods, LinearNormalizesByTheWeightSum) {
  MergeSpec m = Spec("linear", 2);
  m.tensor_params[0]["weight"] = 0.5;
  m.tensor_params[1]["weight"] = 1.5;
  // (0.5*[2,4] + 1.5*[6,-8]) / 2 = [10, -10] / 2
  EXPECT_EQ(Merge(m, DType::kF32, {{2, 4}, {6, -8}}), (std::vector<float>{5, -5}));
}

TEST(MergeMethods, LinearRoundsTheWeightToTheDtype) {
  // torch.tensor([0.3], dtype=bfloat16) is 0.30078125; 1.0 * it stays that.
  MergeSpec m = Spec("linear", 1);
  m.tensor_params[0]["weight"] = 0.3;
  m.params["normalize"] = false;
  EXPECT_EQ(Merge(m, DType::kBF16, {{1.0f}})[0], 0.30078125f);
  EXPECT_EQ(Merge(m, DType::kF32, {{1.0f}})[0], 0.3f);
}

TEST(MergeMethods, LinearSumStartsFromPositiveZero) {
  // torch.tensor([[-0.], [-0.]]).sum(0) is +0.
  MergeSpec m = Spec("linear", 2);
  m.tensor_params[0]["weight"] = 1.0;
  m.tensor_params[1]["weight"] = 1.0;
  m.params["normalize"] = false;
  const float r = Merge(m, DType::kBF16, {{-0.0f}, {-0.0f}})[0];
  EXPECT_EQ(r, 0.0f);
  EXPECT_FALSE(std::signbit(r));
}

TEST(MergeMethods, LinearAccumulatesInFloat32) {
  // bf16: 1 + 3 * 2^-9 sums to 1.005859375 in float32, which rounds to
  // 1.0078125; summed in bf16 it would stay 1.0 (torch gives 1.0078).
  MergeSpec m = Spec("linear", 4);
  for (int i = 0; i < 4; ++i) m.tensor_params[i]["weight"] = 1.0;
  m.params["normalize"] = false;
  const float e = std::ldexp(1.0f, -9);
  EXPECT_EQ(Merge(m, DType::kBF16, {{1.0f}, {e}, {e}, {e}})[0], 1.0078125f);
}

TEST(MergeMethods, TaskArithmeticAddsWeightedDeltas) {
  MergeSpec m = Spec("task_arithmetic", 3, 1);
  m.tensor_params[0]["weight"] = 1.0;
  m.tensor_params[2]["weight"] = 0.5;
  // base [1, 1]; deltas [2, -1] and [4, 4]: 1 + (2 + 2), 1 + (-1 + 2)
  EXPECT_EQ(Merge(m, DType::kF32, {{3, 0}, {1, 1}, {5, 5}}), (std::vector<float>{5, 2}));
  m.params["lambda"] = 2.0;
  EXPECT_EQ(Merge(m, DType::kF32, {{3, 0}, {1, 1}, {5, 5}}), (std::vector<float>{9, 3}));
  m.params["lambda"] = 1.0;
  m.params["normalize"] = true;  // divided by the weight sum 1.5
  EXPECT_EQ(Merge(m, DType::kF32, {{3, 0}, {1, 1}, {5, 5}}), (std::vector<float>{1 + 4 / 1.5f, 1 + 1 / 1.5f}));
}

TEST(MergeMethods, TiesElectsTheSignOfTheWeightedSum) {
  MergeSpec m = Spec("ties", 3, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[2]["weight"] = 1.0;
  // deltas a = [1, -1, 2, 0], b = [-3, -1, 1, 0]; sums [-2, -2, 3, 0] elect
  // [-, -, +, +]; kept: a [no, yes, yes, no], b [yes, yes, yes, no] (a zero
  // delta never agrees); mixed [-3, -2, 3, 0] over kept weights [1, 2, 2, 0->1].
  EXPECT_EQ(Merge(m, DType::kF32, {{0, 0, 0, 0}, {1, -1, 2, 0}, {-3, -1, 1, 0}}),
            (std::vector<float>{-3, -1, 1.5f, 0}));
}

TEST(MergeMethods, TiesKeepsTheLargestAndEqualMagnitudesByIndex) {
  MergeSpec m = Spec("ties", 2, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[1]["density"] = 0.4;  // k = int(0.4 * 5) = 2
  // |delta| = [1, 2, 2, 2, 0.5]: the two largest are the 2s at 1 and 2.
  EXPECT_EQ(Merge(m, DType::kF32, {{0, 0, 0, 0, 0}, {1, -2, 2, 2, 0.5f}}), (std::vector<float>{0, -2, 2, 0, 0}));
  m.tensor_params[1]["density"] = 0.1;  // keeps int(0.5) = 0 elements: mergekit asserts
  EXPECT_THROW(Merge(m, DType::kF32, {{0, 0, 0, 0, 0}, {1, -2, 2, 2, 0.5f}}), Error);
}

TEST(MergeMethods, BreadcrumbsDropsTheSmallestAndTheLargest) {
  MergeSpec m = Spec("breadcrumbs", 2, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[1]["density"] = 0.9;
  m.tensor_params[1]["gamma"] = 0.05;
  std::vector<float> base(100, 0.0f), x(100);
  for (int i = 0; i < 100; ++i) x[i] = static_cast<float>(100 - i);  // magnitudes 100..1
  // target 90, n_top 5, n_bot 5: the magnitudes 6..95 survive.
  std::vector<float> r = Merge(m, DType::kF32, {base, x});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(r[i], x[i] >= 6 && x[i] <= 95 ? x[i] : 0.0f) << i;
  // gamma * numel < 1: mergekit's indices[n_bot:-0] is empty, nothing is kept.
  m.tensor_params[1]["gamma"] = 0.001;
  r = Merge(m, DType::kF32, {base, x});
  for (float v : r) EXPECT_EQ(v, 0.0f);
}

TEST(MergeMethods, BreadcrumbsTiesAtBothEndsGoByIndex) {
  MergeSpec m = Spec("breadcrumbs", 2, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[1]["density"] = 0.5;
  m.tensor_params[1]["gamma"] = 0.25;
  // 8 elements all of magnitude 1: target 4, n_top 2, n_bot 2: sorted
  // (stable) positions 2..5 are indices 2..5.
  std::vector<float> x(8, 1.0f), base(8, 0.0f);
  EXPECT_EQ(Merge(m, DType::kF32, {base, x}), (std::vector<float>{0, 0, 1, 1, 1, 1, 0, 0}));
}

TEST(MergeMethods, DareKeepsTheDensityAndRescalesTheL1Norm) {
  const size_t n = 1 << 20;
  MergeSpec m = Spec("dare_linear", 2, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[1]["density"] = 0.3;
  m.params["rescale"] = false;
  std::vector<float> base(n, 0.0f), x(n, 1.0f);
  std::vector<float> r = Merge(m, DType::kF32, {base, x});
  size_t kept = 0;
  for (float v : r) {
    ASSERT_TRUE(v == 0.0f || v == 1.0f);
    kept += v == 1.0f;
  }
  const double frac = static_cast<double>(kept) / n, sigma = std::sqrt(0.3 * 0.7 / n);
  EXPECT_NEAR(frac, 0.3, 6 * sigma);
  m.params["rescale"] = true;
  std::vector<float> rs = Merge(m, DType::kF32, {base, x});
  double sum = 0;
  for (size_t j = 0; j < n; ++j) {
    sum += rs[j];
    ASSERT_EQ(rs[j] != 0.0f, r[j] != 0.0f) << "rescaling keeps the same mask";
  }
  EXPECT_NEAR(sum / n, 1.0, 1e-5);  // the l1 norm of the delta is kept
  // Reproducible, and another seed or tensor draws another mask.
  EXPECT_EQ(Merge(m, DType::kF32, {base, x}), rs);
  MergeSpec other = m;
  other.seed = 1;
  EXPECT_NE(Merge(other, DType::kF32, {base, x}), rs);
  other = m;
  other.salt = "model.layers.1.mlp.up_proj.weight";
  EXPECT_NE(Merge(other, DType::kF32, {base, x}), rs);
}

TEST(MergeMethods, DareRoundsTheDensityInBf16) {
  // torch.bernoulli(full_like(bf16 delta, 0.3)) draws with p = 0.30078125.
  const size_t n = 1 << 22;
  MergeSpec m = Spec("dare_linear", 2, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[1]["density"] = 0.3;
  m.params["rescale"] = false;
  std::vector<float> base(n, 0.0f), x(n, 1.0f);
  size_t kept = 0;
  for (float v : Merge(m, DType::kBF16, {base, x})) kept += v != 0.0f;
  const double sigma = std::sqrt(0.3 * 0.7 / n);
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.30078125, 6 * sigma);
  EXPECT_GT(static_cast<double>(kept) / n, 0.3 + 2 * sigma);
}

TEST(MergeMethods, DellaKeepsLargerMagnitudesMoreOften) {
  const int rows = 64, cols = 1024;
  MergeSpec m = Spec("della_linear", 2, 0);
  m.tensor_params[1]["weight"] = 1.0;
  m.tensor_params[1]["density"] = 0.5;
  m.tensor_params[1]["epsilon"] = 0.4;  // p from 0.1 (smallest) to 0.9 (largest) in each row
  m.params["rescale"] = false;
  std::vector<float> base(rows * cols, 0.0f), x(rows * cols);
  for (int i = 0; i < rows * cols; ++i) x[i] = static_cast<float>(1 + (i * 7919) % cols);  // a permutation per row
  std::vector<float> r = Merge(m, DType::kF32, {base, x}, {rows, cols});
  size_t low = 0, high = 0, kept = 0;
  for (int i = 0; i < rows * cols; ++i) {
    const bool k = r[i] != 0.0f;
    kept += k;
    if (x[i] <= cols / 10) low += k;
    if (x[i] > cols - cols / 10) high += k;
  }
  EXPECT_NEAR(static_cast<double>(kept) / (rows * cols), 0.5, 0.02);
  const double per_decile = rows * (cols / 10);
  EXPECT_NEAR(low / per_decile, 0.14, 0.03);   // mean p over the lowest decile ~ 0.1 + 0.08*0.5
  EXPECT_NEAR(high / per_decile, 0.86, 0.03);
  m.tensor_params[1]["epsilon"] = 0.5;  // density - epsilon = 0: mergekit refuses
  EXPECT_THROW(Merge(m, DType::kF32, {base, x}, {rows, cols}), Error);
}

TEST(MergeMethods, SlerpEndsAndMiddle) {
  MergeSpec m = Spec("slerp", 2, 0);
  const std::vector<float> a{1, 0}, b{0, 1};
  m.params["t"] = 0.0;
  EXPECT_EQ(Merge(m, DType::kF32, {a, b}), a);
  m.params["t"] = 1.0;
  std::vector<float> r = Merge(m, DType::kF32, {a, b});
  EXPECT_NEAR(r[0], 0.0f, 1e-7);
  EXPECT_EQ(r[1], 1.0f);
  m.params["t"] = 0.5;  // a quarter turn halved: (cos 45, sin 45)
  r = Merge(m, DType::kF32, {a, b});
  EXPECT_FLOAT_EQ(r[0], std::sqrt(0.5f));
  EXPECT_FLOAT_EQ(r[1], std::sqrt(0.5f));
  m.base = 1;  // the base is v0 wherever it is listed
  r = Merge(m, DType::kF32, {b, a});
  EXPECT_FLOAT_EQ(r[0], std::sqrt(0.5f));
}

TEST(MergeMethods, SlerpOfParallelTensorsIsLinear) {
  MergeSpec m = Spec("slerp", 2, 0);
  m.params["t"] = 0.25;
  // |dot| > 0.9995: (1 - t) * v0 + t * v1
  EXPECT_EQ(Merge(m, DType::kF32, {{1, 2}, {3, 6}}), (std::vector<float>{1.5f, 3.0f}));
}

TEST(MergeMethods, NuslerpTakesTFromTheWeights) {
  MergeSpec m = Spec("nuslerp", 2);
  auto weights = [&](double w0, double w1) {
    m.tensor_params[0]["weight"] = w0;
    m.tensor_params[1]["weight"] = w1;
  };
  const std::vector<float> a{1, 0}, b{0, 1};
  weights(1, 1);  // t = 1/2: halfway round the quarter turn
  std::vector<float> r = Merge(m, DType::kF32, {a, b});
  EXPECT_FLOAT_EQ(r[0], std::sqrt(0.5f));
  EXPECT_FLOAT_EQ(r[1], std::sqrt(0.5f));
  weights(3, 1);  // t = 1/4: 22.5 degrees from a
  r = Merge(m, DType::kF32, {a, b});
  EXPECT_NEAR(r[0], std::cos(M_PI / 8), 1e-6);
  EXPECT_NEAR(r[1], std::sin(M_PI / 8), 1e-6);
  weights(1, -1);  // weights summing to 0: t = 1/2
  r = Merge(m, DType::kF32, {a, b});
  EXPECT_FLOAT_EQ(r[0], std::sqrt(0.5f));
  // With a base: the offsets from it are interpolated, and it is added back.
  MergeSpec mb = Spec("nuslerp", 3, 1);
  mb.tensor_params[0]["weight"] = 1.0;
  mb.tensor_params[2]["weight"] = 1.0;
  r = Merge(mb, DType::kF32, {{2, 1}, {1, 1}, {1, 2}});
  EXPECT_FLOAT_EQ(r[0], 1 + std::sqrt(0.5f));
  EXPECT_FLOAT_EQ(r[1], 1 + std::sqrt(0.5f));
}

TEST(MergeMethods, NuslerpRowsColumnsAndColinearVectors) {
  MergeSpec m = Spec("nuslerp", 2);
  m.tensor_params[0]["weight"] = 3.0;
  m.tensor_params[1]["weight"] = 1.0;  // t = 1/4
  m.params["nuslerp_flatten"] = false;
  // Row 0: a quarter turn; row 1: parallel rows, interpolated linearly (3/4 * 2 + 1/4 * 6).
  std::vector<float> r = Merge(m, DType::kF32, {{1, 0, 2, 0}, {0, 1, 6, 0}}, {2, 2});
  EXPECT_NEAR(r[0], std::cos(M_PI / 8), 1e-6);
  EXPECT_NEAR(r[1], std::sin(M_PI / 8), 1e-6);
  EXPECT_EQ(r[2], 3.0f);
  EXPECT_EQ(r[3], 0.0f);
  // nuslerp_row_wise: the same vectors as columns.
  m.params["nuslerp_row_wise"] = true;
  r = Merge(m, DType::kF32, {{1, 2, 0, 0}, {0, 6, 1, 0}}, {2, 2});
  EXPECT_NEAR(r[0], std::cos(M_PI / 8), 1e-6);
  EXPECT_NEAR(r[2], std::sin(M_PI / 8), 1e-6);
  EXPECT_EQ(r[1], 3.0f);
  EXPECT_EQ(r[3], 0.0f);
}

TEST(MergeMethods, MultislerpAveragesDirectionsAndNorms) {
  MergeSpec m = Spec("multislerp", 2);
  m.tensor_params[0]["weight"] = 1.0;
  m.tensor_params[1]["weight"] = 1.0;
  // Directions 0 and 90 degrees, norms 2 and 4: 45 degrees, norm 3.
  std::vector<float> r = Merge(m, DType::kF32, {{2, 0}, {0, 4}});
  EXPECT_NEAR(r[0], 3 * std::sqrt(0.5), 1e-5);
  EXPECT_NEAR(r[1], 3 * std::sqrt(0.5), 1e-5);
  // Antipodal models of equal weight: their mean direction is zero, and two
  // models fall back to linear interpolation.
  r = Merge(m, DType::kF32, {{1, 0}, {-1, 0}});
  EXPECT_EQ(r, (std::vector<float>{0, 0}));
  // Three models cannot: mergekit raises, and so does strata, naming the node.
  MergeSpec m3 = Spec("multislerp", 3);
  for (int k = 0; k < 3; ++k) m3.tensor_params[k]["weight"] = k == 2 ? 0.0 : 1.0;
  try {
    Merge(m3, DType::kF32, {{1, 0}, {-1, 0}, {0, 1}});
    ADD_FAILURE() << "antipodal models merged";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("weighted mean of the 3 models' directions is zero"));
    EXPECT_THAT(e.what(), HasSubstr(H(0).Hex()));
  }
  // One model besides the base: that model, as it is.
  MergeSpec one = Spec("multislerp", 2, 0);
  one.tensor_params[1]["weight"] = 0.5;
  EXPECT_EQ(Merge(one, DType::kF32, {{1, 2}, {3, 5}}), (std::vector<float>{3, 5}));
}

TEST(MergeMethods, KarcherFindsTheMeanDirection) {
  MergeSpec m = Spec("karcher", 3);
  // Directions 0, 90 and 0 degrees: the Riemannian mean is at 30 degrees
  // (the first guess, the normalized mean, at 26.6); norms 1, 1 and 4 average 2.
  std::vector<float> r = Merge(m, DType::kF32, {{1, 0}, {0, 1}, {4, 0}});
  EXPECT_NEAR(r[0], 2 * std::cos(M_PI / 6), 1e-5);
  EXPECT_NEAR(r[1], 2 * std::sin(M_PI / 6), 1e-5);
  m.params["max_iter"] = 0;  // no iteration: the first guess
  r = Merge(m, DType::kF32, {{1, 0}, {0, 1}, {4, 0}});
  EXPECT_NEAR(r[0], 2 * 2 / std::sqrt(5.0), 1e-5);
  EXPECT_NEAR(r[1], 2 * 1 / std::sqrt(5.0), 1e-5);
  // A zero tensor is not a direction, but its norm counts in the scale.
  MergeSpec m2 = Spec("karcher", 2);
  r = Merge(m2, DType::kF32, {{0, 0}, {0, 4}});
  EXPECT_EQ(r, (std::vector<float>{0, 2}));
  EXPECT_EQ(Merge(m2, DType::kF32, {{0, 0}, {0, 0}}), (std::vector<float>{0, 0}));
}

TEST(MergeMethods, ArceeFusionKeepsTheOutlyingChanges) {
  MergeSpec m = Spec("arcee_fusion", 2, 0);
  EXPECT_TRUE(m.method->out_f32);
  // One row, so one KL factor k > 0: importances k * |p - b|. Sorted, the
  // median is element int(0.5 * 7) = 3 (0.5), q1 element 1 (0.25), q3
  // element 5 (0.75): the threshold is k * (0.5 + 1.5 * 0.5) = 1.25 k. Only
  // the change of 4 reaches it; the result is float32 whatever the inputs.
  const std::vector<float> b(8, 1.0f), p{1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f, 5};
  for (DType d : {DType::kBF16, DType::kF32})
    EXPECT_EQ(Merge(m, d, {b, p}), (std::vector<float>{1, 1, 1, 1, 1, 1, 1, 5})) << DTypeName(d);
  m.base = 1;  // the base wherever it is listed
  EXPECT_EQ(Merge(m, DType::kF32, {p, b}), (std::vector<float>{1, 1, 1, 1, 1, 1, 1, 5}));
}

Json NodeJson(const MergeSpec& m) {
  Json j{{"kind", "tensor"}, {"dtype", "F32"}, {"shape", {2}}, {"op", "merge"}};
  j.update(m.ToJson());
  return j;
}

TEST(MergeMethods, NearswapSwapsNearElements) {
  MergeSpec m = Spec("nearswap", 2, 0);
  m.params["t"] = 0.01;
  // |a - b| = 0.001 and 0: weight t/|a-b| clamps to 1 (the other model's value);
  // 0.5: weight 0.02, 0.02 * 1.5 + 0.98 * 1.
  const std::vector<float> r = Merge(m, DType::kF32, {{0, 1, 5}, {0.001f, 1.5f, 5}});
  EXPECT_EQ(r[0], 0.001f);
  EXPECT_FLOAT_EQ(r[1], 1.01f);
  EXPECT_EQ(r[2], 5.0f);
  m.params["t"] = -1.0;  // a negative weight clamps to 0: the base
  EXPECT_EQ(Merge(m, DType::kF32, {{0, 1, 5}, {0.001f, 1.5f, 5}}), (std::vector<float>{0, 1, 5}));
}

TEST(MergeMethods, RamTakesUniqueChangesAndAveragesShared) {
  MergeSpec m = Spec("ram", 3, 0);
  m.params["epsilon"] = 0.1;
  // changes below epsilon dropped; one model's change kept; two averaged.
  EXPECT_EQ(Merge(m, DType::kF32, {{0, 0, 0, 0}, {0.05f, 1, 1, 0}, {0.05f, 0.05f, 3, -2}}),
            (std::vector<float>{0, 1, 2, -2}));
  // epsilon is compared in the tensor's dtype: bf16(0.1) = 0.10009765625 is not above itself.
  MergeSpec one = Spec("ram", 2, 0);
  one.params["epsilon"] = 0.1;
  EXPECT_EQ(Merge(one, DType::kBF16, {{0}, {0.10009765625f}})[0], 0.0f);
  EXPECT_EQ(Merge(one, DType::kF32, {{0}, {0.10009765625f}})[0], 0.10009765625f);
}

TEST(MergeMethods, ModelStockInterpolatesByTheOffsetsAngle) {
  MergeSpec m = Spec("model_stock", 3, 0);
  // offsets [1, 0] and [1, 1]: cos = 1/sqrt(2), t = 2 cos / (1 + cos); mean [1, 0.5]
  const double c = 1 / std::sqrt(2.0), t = 2 * c / (1 + c);
  const std::vector<float> r = Merge(m, DType::kF32, {{0, 0}, {1, 0}, {1, 1}});
  EXPECT_NEAR(r[0], t, 1e-6);
  EXPECT_NEAR(r[1], t * 0.5, 1e-6);
  // filter_wise: per row; row 0's offsets are orthogonal (t = 0: the base),
  // row 1's parallel (t = 1: the mean).
  m.params["filter_wise"] = true;
  EXPECT_EQ(Merge(m, DType::kF32, {{0, 0, 0, 0}, {1, 0, 1, 0}, {0, 1, 1, 0}}, {2, 2}),
            (std::vector<float>{0, 0, 1, 0}));
}

TEST(MergeMethods, SceWeighsBySquaresAndErasesDisagreeingSigns) {
  MergeSpec m = Spec("sce", 3, 0);
  // mean squares 2 and 14/3: weights 0.3, 0.7; the sum's signs +, + (0), -.
  std::vector<float> r = Merge(m, DType::kF32, {{0, 0, 0}, {1, 2, -1}, {3, -2, -1}});
  EXPECT_FLOAT_EQ(r[0], 2.4f);  // (0.3 * 1 + 0.7 * 3) / 1
  EXPECT_FLOAT_EQ(r[1], 2.0f);  // only the first agrees: 0.3 * 2 / 0.3
  EXPECT_FLOAT_EQ(r[2], -1.0f);
  // select_topk 0.5: variances 1, 4, 0; int(2 nonzero * 0.5) = 1 kept (the middle).
  m.params["select_topk"] = 0.5;
  r = Merge(m, DType::kF32, {{0, 0, 0}, {1, 2, -1}, {3, -2, -1}});
  EXPECT_EQ(r, (std::vector<float>{0, 2, 0}));
}

TEST(MergeNode, RoundTrips) {
  MergeSpec m = Spec("dare_ties", 3, 2);
  m.tensor_params[0]["weight"] = 0.25;
  m.tensor_params[0]["density"] = 0.5;
  m.params["lambda"] = 1.5;
  m.seed = 42;
  const MergeSpec back = ParseMergeSpec(Json::parse(NodeJson(m).dump()), H(9));
  EXPECT_EQ(back.method, m.method);
  EXPECT_EQ(back.inputs, m.inputs);
  EXPECT_EQ(back.base, 2);
  EXPECT_EQ(back.TensorParam(0, "density"), 0.5);
  EXPECT_EQ(back.TensorParam(1, "density"), 1.0);  // the default
  EXPECT_EQ(back.Param("lambda"), 1.5);
  EXPECT_EQ(*back.seed, 42u);
  EXPECT_EQ(back.salt, m.salt);
}

TEST(MergeNode, RefusesMalformedNodes) {
  auto refused = [](Json j, const std::string& why) {
    try {
      ParseMergeSpec(j, H(9));
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(why)) << j.dump();
      EXPECT_THAT(e.what(), HasSubstr(H(9).Hex()));
    }
  };
  const Json good = NodeJson(Spec("ties", 2, 0));
  Json j = good;
  j["method"] = "frankenmerge";
  refused(j, "unknown method");
  j = good;
  j["method"] = "passthrough";
  refused(j, "unknown method");
  j = good;
  j["inputs"] = Json::array();
  refused(j, "inputs");
  j = good;
  j["inputs"] = Json::array();
  for (size_t i = 0; i <= kMaxMergeInputs; ++i) j["inputs"].push_back(H(1).Hex());
  refused(j, "inputs");
  j = good;
  j["inputs"][1] = "not-a-hash";
  refused(j, "not a hash");
  j = good;
  j["base"] = 2;
  refused(j, "base");
  j = good;
  j.erase("base");
  refused(j, "needs a base");
  j = good;
  j["tensor_params"] = Json::array({Json::object()});
  refused(j, "tensor_params");
  // Input counts the method cannot take (the compiler writes a one-input merge as its input).
  j = NodeJson(Spec("model_stock", 2, 0));
  refused(j, "model_stock with 2 inputs (it takes 3 to 256)");
  j = NodeJson(Spec("nearswap", 3, 0));
  refused(j, "nearswap with 3 inputs (it takes 2)");
  j = NodeJson(Spec("ram", 1, 0));
  refused(j, "ram with 1 input (it takes 2 to 256)");
  j = NodeJson(Spec("nuslerp", 3));
  refused(j, "nuslerp of 3 models besides the base (it takes 2)");
  j = NodeJson(Spec("nuslerp", 2, 0));
  refused(j, "nuslerp of 1 models besides the base (it takes 2)");
  j = NodeJson(Spec("karcher", 2));
  j["params"]["max_iter"] = 2.5;
  refused(j, "max_iter 2.5 is not a whole number");
  j["params"]["max_iter"] = 1e9;
  refused(j, "up to 1000");
  j = NodeJson(Spec("arcee_fusion", 3, 0));
  refused(j, "arcee_fusion with 3 inputs (it takes 2)");
  j = good;
  j["tensor_params"][1]["weight"] = "half";
  refused(j, "finite value");
  j = good;
  j["params"]["temperature"] = 1;
  refused(j, "not a parameter of ties");
  j = good;
  j["seed"] = 1;
  j["salt"] = "x";
  refused(j, "draws nothing");
  j = NodeJson(Spec("dare_linear", 2, 0));
  j.erase("seed");
  refused(j, "without \"seed\"");
  j = NodeJson(Spec("dare_linear", 2, 0));
  j["seed"] = -1;
  refused(j, "seed");
}

}  // namespace
}  // namespace strata
