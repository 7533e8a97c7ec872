// Tests of plan parsing (ParsePlan/LoadPlan), its file:line:col error messages,
// and mergekit's parameter evaluation (EvaluateNumber, ReferencedModels).
// Expected values are worked out by hand from the YAML text and mergekit's rules.
#include "strata/compiler/plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>

#include "test_util.h"

namespace strata {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testutil::ErrorOf;

std::string Example(const std::string& name) {
  return std::string(STRATA_SOURCE_DIR) + "/examples/" + name;
}

// [begin, end) of every slice's single source, for compact comparisons.
std::vector<std::pair<int, int>> Ranges(const Plan& p) {
  std::vector<std::pair<int, int>> out;
  for (const PlanSlice& s : p.slices) {
    EXPECT_EQ(s.sources.size(), 1u);
    out.push_back({s.sources[0].begin, s.sources[0].end});
  }
  return out;
}

// ---------------------------------------------------------------------------
// The shipped examples

TEST(PlanExamples, SolarDus) {
  Plan p = LoadPlan(Example("solar-dus.yml"));
  EXPECT_EQ(p.merge_method, "passthrough");
  EXPECT_FALSE(p.models_form);
  EXPECT_THAT(Ranges(p), ElementsAre(std::pair{0, 24}, std::pair{8, 32}));
  EXPECT_EQ(p.slices[0].sources[0].model, "mistralai/Mistral-7B-v0.1");
  ASSERT_TRUE(p.dtype.has_value());
  EXPECT_EQ(*p.dtype, DType::kBF16);
  EXPECT_FALSE(p.out_dtype.has_value());
  EXPECT_FALSE(p.base_model.has_value());
  EXPECT_TRUE(p.warnings.empty());
}

TEST(PlanExamples, MistralInstructDus) {
  Plan p = LoadPlan(Example("mistral-instruct-v0.3-dus.yml"));
  EXPECT_THAT(Ranges(p), ElementsAre(std::pair{0, 24}, std::pair{8, 32}));
  EXPECT_EQ(p.slices[1].sources[0].model, "mistralai/Mistral-7B-Instruct-v0.3");
  ASSERT_TRUE(p.dtype.has_value());
  EXPECT_EQ(*p.dtype, DType::kBF16);
}

TEST(PlanExamples, Idus8Layer) {
  Plan p = LoadPlan(Example("idus-8layer.yml"));
  EXPECT_THAT(Ranges(p), ElementsAre(std::pair{0, 8}, std::pair{8, 16}, std::pair{8, 16},
                                     std::pair{16, 24}, std::pair{16, 24}, std::pair{24, 32}));
  ASSERT_TRUE(p.dtype.has_value());
  EXPECT_EQ(*p.dtype, DType::kF16);
}

TEST(PlanExamples, Idus1Layer) {
  Plan p = LoadPlan(Example("idus-1layer.yml"));
  ASSERT_EQ(p.slices.size(), 48u);
  // A0 B8 A1 B9 ... A23 B31: slice 2k is layer k, slice 2k+1 is layer k+8.
  auto r = Ranges(p);
  for (int k = 0; k < 24; ++k) {
    EXPECT_EQ(r[2 * k], (std::pair{k, k + 1})) << "slice " << 2 * k;
    EXPECT_EQ(r[2 * k + 1], (std::pair{k + 8, k + 9})) << "slice " << 2 * k + 1;
  }
  ASSERT_TRUE(p.dtype.has_value());
  EXPECT_EQ(*p.dtype, DType::kF16);
}

TEST(PlanExamples, BlockExpansion40) {
  Plan p = LoadPlan(Example("block-expansion-40.yml"));
  ASSERT_EQ(p.slices.size(), 9u);
  auto r = Ranges(p);
  EXPECT_EQ(r[0], (std::pair{0, 32}));
  for (size_t i = 1; i < 9; ++i) EXPECT_EQ(r[i], (std::pair{31, 32})) << "slice " << i;
  ASSERT_TRUE(p.dtype.has_value());
  EXPECT_EQ(*p.dtype, DType::kBF16);
  // The first slice has no parameters; the expansion slices carry a filter
  // list on their source: o_proj 0, down_proj 0, default 1.
  EXPECT_TRUE(p.slices[0].sources[0].params.empty());
  const Params& params = p.slices[3].sources[0].params;
  ASSERT_EQ(params.count("scale"), 1u);
  const Setting& s = params.at("scale");
  ASSERT_EQ(s.kind, Setting::Kind::kFilters);
  ASSERT_EQ(s.filters.size(), 3u);
  EXPECT_EQ(s.filters[0].filter, std::optional<std::string>("o_proj"));
  EXPECT_EQ(s.filters[1].filter, std::optional<std::string>("down_proj"));
  EXPECT_FALSE(s.filters[2].filter.has_value());
  EXPECT_EQ(EvaluateNumber(s, "model.layers.31.self_attn.o_proj.weight", 1.0), 0.0);
  EXPECT_EQ(EvaluateNumber(s, "model.layers.31.mlp.down_proj.weight", 1.0), 0.0);
  EXPECT_EQ(EvaluateNumber(s, "model.layers.31.mlp.up_proj.weight", 1.0), 1.0);
  // "scale" is the one parameter passthrough understands: no warning.
  EXPECT_TRUE(p.warnings.empty());
}

TEST(PlanExamples, PlanTextAndPathAreKept) {
  const std::string path = Example("solar-dus.yml");
  Plan p = LoadPlan(path);
  EXPECT_EQ(p.path, path);
  EXPECT_EQ(p.text, testutil::ReadText(path));
}

TEST(PlanLoad, MissingFileThrows) {
  std::string msg = ErrorOf([] { LoadPlan("/nonexistent/dir/plan.yml"); });
  EXPECT_THAT(msg, HasSubstr("/nonexistent/dir/plan.yml"));
}

// ---------------------------------------------------------------------------
// The models: form

TEST(PlanParse, ModelsFormIsOneSlice) {
  Plan p = ParsePlan(
      "models:\n"
      "  - model: org/a\n"
      "merge_method: passthrough\n"
      "dtype: float16\n",
      "m.yml");
  EXPECT_TRUE(p.models_form);
  ASSERT_EQ(p.slices.size(), 1u);
  ASSERT_EQ(p.slices[0].sources.size(), 1u);
  EXPECT_EQ(p.slices[0].sources[0].model, "org/a");
  // All layers: the end is only known once the model's config is read.
  EXPECT_EQ(p.slices[0].sources[0].begin, 0);
  EXPECT_EQ(p.slices[0].sources[0].end, -1);
  EXPECT_EQ(p.dtype, std::optional<DType>(DType::kF16));
}

TEST(PlanParse, ModelsFormWithListedBaseModelStaysOneSource) {
  Plan p = ParsePlan(
      "models:\n"
      "  - model: org/a\n"
      "base_model: org/a\n"
      "merge_method: passthrough\n",
      "m.yml");
  ASSERT_EQ(p.slices.size(), 1u);
  EXPECT_EQ(p.slices[0].sources.size(), 1u);
  EXPECT_EQ(p.base_model, std::optional<std::string>("org/a"));
}

TEST(PlanParse, ModelsFormWithOtherBaseModelIsTwoSources) {
  // mergekit appends an unlisted base_model as one more input, and passthrough
  // takes exactly one.
  std::string msg = ErrorOf([] {
    ParsePlan(
        "models:\n"
        "  - model: org/a\n"
        "base_model: org/b\n"
        "merge_method: passthrough\n",
        "m.yml");
  });
  EXPECT_THAT(msg, HasSubstr("m.yml:2:3"));
  EXPECT_THAT(msg, HasSubstr("2 sources"));
}

// ---------------------------------------------------------------------------
// Errors name file:line:col

// A one-slice plan whose layer_range is `range`, written at line 4, column 20.
std::string PlanWithRange(const std::string& range) {
  return "slices:\n"
         "  - sources:\n"
         "    - model: org/a\n"
         "      layer_range: " + range + "\n"
         "merge_method: passthrough\n";
}

TEST(PlanErrors, MalformedYamlUnclosedBracket) {
  // Line 4 opens a flow sequence that is never closed. yaml-cpp reports where
  // it gave up (5:13, the ":" it cannot accept inside the list), not the "["
  // at 4:20; either line points the user at the problem.
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4\n"
        "merge_method: passthrough\n",
        "bad.yml");
  });
  EXPECT_THAT(msg, HasSubstr("malformed YAML"));
  EXPECT_THAT(msg, ::testing::ContainsRegex("bad\\.yml:[45]:[0-9]+"));
}

TEST(PlanErrors, MalformedYamlExtraBracket) {
  // The stray "]" is at line 4, column 26 (the list opens at column 20).
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[0, 4]]"), "bad.yml"); });
  EXPECT_THAT(msg, HasSubstr("bad.yml:4:26"));
  EXPECT_THAT(msg, HasSubstr("malformed YAML"));
}

TEST(PlanErrors, MalformedYamlBadIndent) {
  // Line 5 is indented by 3, matching no enclosing block.
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4]\n"
        "   merge_method: passthrough\n",
        "bad.yml");
  });
  EXPECT_THAT(msg, HasSubstr("bad.yml:5:"));
  EXPECT_THAT(msg, HasSubstr("malformed YAML"));
}

TEST(PlanErrors, MalformedYamlNamesLine) {
  // A bracket left open on the last line (3). yaml-cpp notices at end of
  // input, 4:1 (just past the final newline); the position must not be 0:0.
  std::string msg = ErrorOf([] {
    ParsePlan(
        "merge_method: passthrough\n"
        "dtype: bfloat16\n"
        "slices: [\n",
        "bad.yml");
  });
  EXPECT_THAT(msg, HasSubstr("malformed YAML"));
  EXPECT_THAT(msg, ::testing::ContainsRegex("bad\\.yml:[34]:[0-9]+"));
}

TEST(PlanErrors, UnknownTopLevelKey) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4]\n"
        "merge_method: passthrough\n"
        "bogus: 1\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:6:1"));
  EXPECT_THAT(msg, HasSubstr("bogus"));
}

TEST(PlanErrors, UnsupportedMergeMethodListsSupported) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4]\n"
        "merge_method: frankenmerge\n",
        "p.yml");
  });
  // "merge_method: " is 14 characters: the value starts in column 15.
  EXPECT_THAT(msg, HasSubstr("p.yml:5:15"));
  EXPECT_THAT(msg, HasSubstr("frankenmerge"));
  for (const char* m : {"passthrough", "linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                        "breadcrumbs_ties", "della", "della_linear", "slerp", "nuslerp", "multislerp", "karcher",
                        "model_stock", "sce", "nearswap", "ram", "arcee_fusion"})
    EXPECT_THAT(msg, HasSubstr(m));
}

// The models: form of a merge: listed models in order, the base among them.
TEST(PlanParse, TiesModelsFormKeepsOrderAndBase) {
  Plan p = ParsePlan(
      "merge_method: ties\n"
      "base_model: org/base\n"
      "models:\n"
      "  - model: org/a\n"
      "    parameters: {weight: 0.5, density: 0.5}\n"
      "  - model: org/base\n"
      "  - model: org/b\n"
      "    parameters: {weight: 0.5, density: [0.2, 0.8]}\n",
      "p.yml");
  ASSERT_NE(p.method, nullptr);
  EXPECT_STREQ(p.method->name, "ties");
  ASSERT_EQ(p.slices.size(), 1u);
  std::vector<std::string> models;
  for (const PlanSource& s : p.slices[0].sources) models.push_back(s.model);
  EXPECT_THAT(models, ElementsAre("org/a", "org/base", "org/b"));
  ASSERT_TRUE(p.BaseOf(p.slices[0]).has_value());
  EXPECT_EQ(*p.BaseOf(p.slices[0]), "org/base");
  EXPECT_TRUE(p.warnings.empty()) << p.warnings[0];
}

TEST(PlanParse, SliceBaseModelOverridesThePlans) {
  Plan p = ParsePlan(
      "merge_method: task_arithmetic\n"
      "base_model: org/base\n"
      "slices:\n"
      "  - sources:\n"
      "    - {model: org/base, layer_range: [0, 2]}\n"
      "    - {model: org/a, layer_range: [0, 2], parameters: {weight: 1}}\n"
      "  - base_model: org/a\n"
      "    sources:\n"
      "    - {model: org/a, layer_range: [2, 4]}\n"
      "    - {model: org/b, layer_range: [2, 4], parameters: {weight: 1}}\n",
      "p.yml");
  ASSERT_EQ(p.slices.size(), 2u);
  EXPECT_EQ(*p.BaseOf(p.slices[0]), "org/base");
  EXPECT_EQ(*p.BaseOf(p.slices[1]), "org/a");
  // org/b is referenced only by the second slice; the plan's base comes first.
  EXPECT_THAT(p.ReferencedModels(), ElementsAre("org/base", "org/a", "org/b"));
}

TEST(PlanErrors, SlerpTakesExactlyTwoModels) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "merge_method: slerp\n"
        "base_model: org/a\n"
        "parameters: {t: 0.5}\n"
        "slices:\n"
        "  - sources:\n"
        "    - {model: org/a, layer_range: [0, 4]}\n"
        "    - {model: org/b, layer_range: [0, 4]}\n"
        "    - {model: org/c, layer_range: [0, 4]}\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:5:5"));
  EXPECT_THAT(msg, HasSubstr("3 sources"));
  EXPECT_THAT(msg, HasSubstr("exactly 2"));
}

TEST(PlanErrors, TiesWithoutBaseModel) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "merge_method: ties\n"
        "models:\n"
        "  - {model: org/a, parameters: {weight: 1}}\n"
        "  - {model: org/b, parameters: {weight: 1}}\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:"));
  EXPECT_THAT(msg, HasSubstr("needs a base_model"));
}

TEST(PlanErrors, BaseModelMustBeASourceOfTheSlice) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "merge_method: ties\n"
        "base_model: org/base\n"
        "slices:\n"
        "  - sources:\n"
        "    - {model: org/a, layer_range: [0, 4], parameters: {weight: 1}}\n"
        "    - {model: org/b, layer_range: [0, 4], parameters: {weight: 1}}\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:4:5"));
  EXPECT_THAT(msg, HasSubstr("\"org/base\" is not a source"));
}

TEST(PlanErrors, ModelListedTwiceInASlice) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "merge_method: linear\n"
        "models:\n"
        "  - {model: org/a, parameters: {weight: 1}}\n"
        "  - {model: org/b, parameters: {weight: 1}}\n"
        "  - {model: org/a, parameters: {weight: 2}}\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:5:5"));
  EXPECT_THAT(msg, HasSubstr("p.yml:3:5"));
  EXPECT_THAT(msg, HasSubstr("already a source"));
}

TEST(PlanParse, ParameterOfAnotherMethodWarns) {
  Plan p = ParsePlan(
      "merge_method: linear\n"
      "models:\n"
      "  - {model: org/a, parameters: {weight: 1, density: 0.5}}\n"
      "  - {model: org/b, parameters: {weight: 1}}\n"
      "parameters:\n"
      "  normalize: false\n"
      "  t: 0.5\n",
      "p.yml");
  ASSERT_EQ(p.warnings.size(), 2u);
  EXPECT_THAT(p.warnings[0] + p.warnings[1], HasSubstr("\"density\""));
  EXPECT_THAT(p.warnings[0] + p.warnings[1], HasSubstr("\"t\""));
  EXPECT_THAT(p.warnings[0] + p.warnings[1], HasSubstr("p.yml:7:3"));
}

TEST(PlanErrors, TwoSourcesInPassthroughSlice) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4]\n"
        "    - model: org/b\n"
        "      layer_range: [0, 4]\n"
        "merge_method: passthrough\n",
        "p.yml");
  });
  // The slice is the map that starts at "sources" (line 2, column 5).
  EXPECT_THAT(msg, HasSubstr("p.yml:2:5"));
  EXPECT_THAT(msg, HasSubstr("2 sources"));
}

TEST(PlanErrors, SourcesOfDifferentLengths) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4]\n"
        "    - model: org/b\n"
        "      layer_range: [0, 3]\n"
        "merge_method: passthrough\n",
        "p.yml");
  });
  // "      layer_range: " is 19 characters: the list starts in column 20.
  EXPECT_THAT(msg, HasSubstr("p.yml:6:20"));
  EXPECT_THAT(msg, HasSubstr("same number of layers"));
}

TEST(PlanParse, ZeroLengthLayerRangeIsLegal) {
  // mergekit accepts [n, n]: a slice that adds no layers (compile_test checks
  // what it still decides).
  Plan p = ParsePlan(PlanWithRange("[5, 5]"), "p.yml");
  ASSERT_EQ(p.slices.size(), 1u);
  EXPECT_EQ(p.slices[0].sources[0].begin, 5);
  EXPECT_EQ(p.slices[0].sources[0].end, 5);
}

TEST(PlanErrors, ReversedLayerRange) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[4, 2]"), "p.yml"); });
  EXPECT_THAT(msg, HasSubstr("p.yml:4:20"));
  EXPECT_THAT(msg, HasSubstr("[4, 2] is reversed"));
}

TEST(PlanErrors, NegativeLayerRange) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[-1, 2]"), "p.yml"); });
  EXPECT_THAT(msg, HasSubstr("p.yml:4:20"));
}

TEST(PlanErrors, OneElementLayerRange) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[3]"), "p.yml"); });
  EXPECT_THAT(msg, HasSubstr("p.yml:4:20"));
  EXPECT_THAT(msg, HasSubstr("layer_range"));
}

TEST(PlanErrors, NonIntegerLayerRange) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[\"a\", 2]"), "p.yml"); });
  // The offending element "a" starts right after the bracket, column 21.
  EXPECT_THAT(msg, HasSubstr("p.yml:4:21"));
  EXPECT_THAT(msg, HasSubstr("integer"));
}

TEST(PlanErrors, FractionalLayerRange) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[0, 2.5]"), "p.yml"); });
  // "[0, " is 4 characters from column 20: the 2.5 is at column 24.
  EXPECT_THAT(msg, HasSubstr("p.yml:4:24"));
}

TEST(PlanErrors, TokenizerSourceUnion) {
  std::string msg = ErrorOf([] {
    ParsePlan(PlanWithRange("[0, 4]") + "tokenizer_source: union\n", "p.yml");
  });
  // "tokenizer_source: " is 18 characters.
  EXPECT_THAT(msg, HasSubstr("p.yml:6:19"));
  EXPECT_THAT(msg, HasSubstr("union"));
}

TEST(PlanErrors, UnknownDtype) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[0, 4]") + "dtype: int4\n", "p.yml"); });
  EXPECT_THAT(msg, HasSubstr("p.yml:6:8"));
  EXPECT_THAT(msg, HasSubstr("int4"));
}

TEST(PlanErrors, UnknownOutDtype) {
  std::string msg = ErrorOf([] { ParsePlan(PlanWithRange("[0, 4]") + "out_dtype: fp8\n", "p.yml"); });
  EXPECT_THAT(msg, HasSubstr("p.yml:6:12"));
}

TEST(PlanErrors, BothSlicesAndModels) {
  std::string msg = ErrorOf([] {
    ParsePlan(PlanWithRange("[0, 4]") + "models:\n  - model: org/a\n", "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml"));
  EXPECT_THAT(msg, HasSubstr("slices"));
}

TEST(PlanErrors, UnknownSourceKey) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 4]\n"
        "      weight: 1\n"
        "merge_method: passthrough\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:5:7"));
  EXPECT_THAT(msg, HasSubstr("weight"));
}

// PyYAML (mergekit) keeps a repeated key's last value, yaml-cpp its first: a
// plan that means two things is refused, naming both places.
TEST(PlanErrors, DuplicateKeyNamesBothPlaces) {
  std::string msg = ErrorOf([] {
    ParsePlan(
        "slices:\n"
        "  - sources:\n"
        "    - model: org/a\n"
        "      layer_range: [0, 1]\n"
        "      layer_range: [0, 3]\n"
        "merge_method: passthrough\n",
        "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:5:7: duplicate key \"layer_range\" (first at p.yml:4:7)"));
  EXPECT_THAT(msg, HasSubstr("mergekit would silently take the last"));
}

TEST(PlanErrors, DuplicateKeyAtTopLevelAndInFlowMaps) {
  EXPECT_THAT(ErrorOf([] { ParsePlan(PlanWithRange("[0, 4]") + "merge_method: passthrough\n", "p.yml"); }),
              HasSubstr("duplicate key \"merge_method\""));
  EXPECT_THAT(ErrorOf([] {
                ParsePlan("slices:\n  - sources: [{model: org/a, layer_range: [0, 4], model: org/b}]\n"
                          "merge_method: passthrough\n",
                          "p.yml");
              }),
              HasSubstr("p.yml:2:51: duplicate key \"model\" (first at p.yml:2:16)"));
}

TEST(PlanParse, SameKeyInDifferentMapsIsFine) {
  Plan p = ParsePlan(
      "slices:\n"
      "  - sources:\n"
      "    - model: org/a\n"
      "      layer_range: [0, 2]\n"
      "  - sources:\n"
      "    - model: org/a\n"
      "      layer_range: [1, 3]\n"
      "merge_method: passthrough\n",
      "p.yml");
  EXPECT_THAT(Ranges(p), ElementsAre(std::pair{0, 2}, std::pair{1, 3}));
}

TEST(PlanErrors, SecondDocumentIsRefused) {
  std::string msg = ErrorOf([] {
    ParsePlan(PlanWithRange("[0, 4]") + "---\n" + PlanWithRange("[0, 2]"), "p.yml");
  });
  EXPECT_THAT(msg, HasSubstr("p.yml:6:1: a second YAML document starts here"));  // the "---"
  // A leading "---" and an explicit end ("...") are still one document.
  EXPECT_THAT(Ranges(ParsePlan("---\n" + PlanWithRange("[0, 4]") + "...\n", "p.yml")), ElementsAre(std::pair{0, 4}));
}

TEST(PlanParse, UnknownParameterWarns) {
  Plan p = ParsePlan(
      "slices:\n"
      "  - sources:\n"
      "    - model: org/a\n"
      "      layer_range: [0, 4]\n"
      "merge_method: passthrough\n"
      "parameters:\n"
      "  weight: 0.5\n",
      "p.yml");
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_THAT(p.warnings[0], HasSubstr("p.yml:7:3"));
  EXPECT_THAT(p.warnings[0], HasSubstr("weight"));
}

TEST(PlanParse, ParameterLevelsAndKinds) {
  Plan p = ParsePlan(
      "slices:\n"
      "  - sources:\n"
      "    - model: org/a\n"
      "      layer_range: [0, 4]\n"
      "      parameters:\n"
      "        scale: 0.5\n"
      "    parameters:\n"
      "      scale: [0, 1]\n"
      "merge_method: passthrough\n"
      "parameters:\n"
      "  scale:\n"
      "    - filter: o_proj\n"
      "      value: 2\n",
      "p.yml");
  const Setting& src = p.slices[0].sources[0].params.at("scale");
  EXPECT_EQ(src.kind, Setting::Kind::kNumber);
  EXPECT_EQ(src.number, 0.5);
  EXPECT_EQ(src.loc.Str(), "p.yml:6:16");
  const Setting& slice = p.slices[0].params.at("scale");
  EXPECT_EQ(slice.kind, Setting::Kind::kGradient);
  EXPECT_THAT(slice.gradient, ElementsAre(0.0, 1.0));
  const Setting& global = p.params.at("scale");
  EXPECT_EQ(global.kind, Setting::Kind::kFilters);
  ASSERT_EQ(global.filters.size(), 1u);
  EXPECT_EQ(*global.filters[0].filter, "o_proj");
  EXPECT_EQ(global.filters[0].value->number, 2.0);
}

TEST(SourceLocTest, Str) {
  EXPECT_EQ((SourceLoc{"plan.yml", 6, 20}).Str(), "plan.yml:6:20");
  EXPECT_EQ((SourceLoc{"plan.yml", 0, 0}).Str(), "plan.yml");
}

// ---------------------------------------------------------------------------
// EvaluateNumber: mergekit's evaluate_setting

Setting Number(double v) {
  Setting s;
  s.kind = Setting::Kind::kNumber;
  s.number = v;
  return s;
}

Setting Gradient(std::vector<double> g) {
  Setting s;
  s.kind = Setting::Kind::kGradient;
  s.gradient = std::move(g);
  return s;
}

Setting::Filter FilterOf(std::optional<std::string> f, Setting value) {
  return Setting::Filter{std::move(f), std::make_shared<Setting>(std::move(value))};
}

Setting Filters(std::vector<Setting::Filter> fs) {
  Setting s;
  s.kind = Setting::Kind::kFilters;
  s.filters = std::move(fs);
  return s;
}

TEST(EvaluateNumberTest, ScalarIgnoresNameAndT) {
  EXPECT_EQ(EvaluateNumber(Number(0.75), "anything", 0.0), 0.75);
  EXPECT_EQ(EvaluateNumber(Number(0.75), "", 1.0), 0.75);
}

TEST(EvaluateNumberTest, ThreePointGradient) {
  Setting g = Gradient({0, 0.5, 1});
  // scaled = t*2; hand values: t=0 -> g[0]; 0.25 -> halfway g[0]..g[1];
  // 0.5 -> g[1]; 1 -> g[2].
  EXPECT_DOUBLE_EQ(*EvaluateNumber(g, "x", 0.0), 0.0);
  EXPECT_DOUBLE_EQ(*EvaluateNumber(g, "x", 0.25), 0.25);
  EXPECT_DOUBLE_EQ(*EvaluateNumber(g, "x", 0.5), 0.5);
  EXPECT_DOUBLE_EQ(*EvaluateNumber(g, "x", 1.0), 1.0);
}

TEST(EvaluateNumberTest, TwoPointGradient) {
  // (1 - 0.3) * 1 + 0.3 * 3 = 1.6
  EXPECT_NEAR(*EvaluateNumber(Gradient({1, 3}), "x", 0.3), 1.6, 1e-12);
}

TEST(EvaluateNumberTest, NonMonotoneGradient) {
  // [2, 0, 4] at t=0.75: scaled 1.5 -> halfway between 0 and 4.
  EXPECT_DOUBLE_EQ(*EvaluateNumber(Gradient({2, 0, 4}), "x", 0.75), 2.0);
  // a one-element gradient is constant.
  EXPECT_DOUBLE_EQ(*EvaluateNumber(Gradient({7}), "x", 0.6), 7.0);
}

TEST(EvaluateNumberTest, FilterListFirstMatchWins) {
  Setting s = Filters({FilterOf("o_proj", Number(0.0)), FilterOf(std::nullopt, Number(1.0))});
  EXPECT_EQ(EvaluateNumber(s, "model.layers.3.self_attn.o_proj.weight", 0.0), 0.0);
  EXPECT_EQ(EvaluateNumber(s, "model.layers.3.mlp.up_proj.weight", 0.0), 1.0);
}

TEST(EvaluateNumberTest, StarMatchesEverything) {
  Setting s = Filters({FilterOf("*", Number(0.25)), FilterOf("o_proj", Number(9))});
  EXPECT_EQ(EvaluateNumber(s, "model.layers.3.self_attn.o_proj.weight", 0.0), 0.25);
  EXPECT_EQ(EvaluateNumber(s, "lm_head.weight", 0.0), 0.25);
}

TEST(EvaluateNumberTest, NoMatchNoDefaultIsNullopt) {
  Setting s = Filters({FilterOf("o_proj", Number(0.0)), FilterOf("down_proj", Number(0.0))});
  EXPECT_EQ(EvaluateNumber(s, "model.layers.3.mlp.up_proj.weight", 0.0), std::nullopt);
}

TEST(EvaluateNumberTest, FilterIsPlainSubstringNotGlob) {
  // mergekit tests `filter in tensor_name`: "layers.1." must not match layer 10.
  Setting s = Filters({FilterOf("layers.1.", Number(0.5))});
  EXPECT_EQ(EvaluateNumber(s, "model.layers.1.mlp.up_proj.weight", 0.0), 0.5);
  EXPECT_EQ(EvaluateNumber(s, "model.layers.10.mlp.up_proj.weight", 0.0), std::nullopt);
  Setting glob = Filters({FilterOf("*proj", Number(0.5))});
  EXPECT_EQ(EvaluateNumber(glob, "model.layers.1.mlp.up_proj.weight", 0.0), std::nullopt);
}

TEST(EvaluateNumberTest, GradientInsideFilter) {
  Setting s = Filters({FilterOf("o_proj", Gradient({0, 1})), FilterOf(std::nullopt, Number(2))});
  EXPECT_DOUBLE_EQ(*EvaluateNumber(s, "model.layers.0.self_attn.o_proj.weight", 0.5), 0.5);
  EXPECT_DOUBLE_EQ(*EvaluateNumber(s, "model.layers.0.self_attn.o_proj.weight", 1.0), 1.0);
  EXPECT_DOUBLE_EQ(*EvaluateNumber(s, "model.layers.0.mlp.up_proj.weight", 0.5), 2.0);
}

TEST(EvaluateNumberTest, ParsedNestedGradient) {
  Plan p = ParsePlan(PlanWithRange("[0, 4]") +
                         "parameters:\n"
                         "  scale:\n"
                         "    - filter: down_proj\n"
                         "      value: [1, 0]\n"
                         "    - value: 1\n",
                     "p.yml");
  const Setting& s = p.params.at("scale");
  EXPECT_DOUBLE_EQ(*EvaluateNumber(s, "model.layers.2.mlp.down_proj.weight", 0.25), 0.75);
  EXPECT_DOUBLE_EQ(*EvaluateNumber(s, "model.layers.2.mlp.up_proj.weight", 0.25), 1.0);
}

TEST(EvaluateNumberTest, StringValueThrowsWithLocation) {
  Plan p = ParsePlan(PlanWithRange("[0, 4]") + "parameters:\n  scale: big\n", "p.yml");
  std::string msg = ErrorOf([&] { EvaluateNumber(p.params.at("scale"), "x", 0.0); });
  EXPECT_THAT(msg, HasSubstr("p.yml:7:10"));
}

TEST(EvaluateNumberTest, BooleansAreNumbers) {
  // Python: True * x == x.
  Plan p = ParsePlan(PlanWithRange("[0, 4]") + "parameters:\n  scale: false\n", "p.yml");
  EXPECT_EQ(EvaluateNumber(p.params.at("scale"), "x", 0.0), 0.0);
}

// ---------------------------------------------------------------------------
// ReferencedModels

TEST(ReferencedModelsTest, BaseFirstThenFirstMention) {
  Plan p = ParsePlan(
      "slices:\n"
      "  - sources:\n"
      "    - model: org/b\n"
      "      layer_range: [0, 1]\n"
      "  - sources:\n"
      "    - model: org/a\n"
      "      layer_range: [0, 1]\n"
      "  - sources:\n"
      "    - model: org/b\n"
      "      layer_range: [1, 2]\n"
      "  - sources:\n"
      "    - model: org/c\n"
      "      layer_range: [1, 2]\n"
      "merge_method: passthrough\n"
      "base_model: org/c\n",
      "p.yml");
  EXPECT_THAT(p.ReferencedModels(), ElementsAre("org/c", "org/b", "org/a"));
}

TEST(ReferencedModelsTest, WithoutBaseModel) {
  Plan p = ParsePlan(
      "slices:\n"
      "  - sources:\n"
      "    - model: org/z\n"
      "      layer_range: [0, 1]\n"
      "  - sources:\n"
      "    - model: org/y\n"
      "      layer_range: [0, 1]\n"
      "  - sources:\n"
      "    - model: org/z\n"
      "      layer_range: [0, 1]\n"
      "merge_method: passthrough\n",
      "p.yml");
  EXPECT_THAT(p.ReferencedModels(), ElementsAre("org/z", "org/y"));
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// Found by tests/fuzz/plan_fuzz: a map, list or empty key made yaml-cpp's
// conversion throw out of the parser; nested aliases expanded exponentially.
TEST(PlanHostile, KeysMustBePlainNames) {
  using testutil::ErrorOf;
  EXPECT_THAT(ErrorOf([] { ParsePlan("? [a, b]\n: 1\nmodels:\n  - model: a\nmerge_method: passthrough\n", "k.yml"); }),
              ::testing::HasSubstr("k.yml:1:3: a list is used as a key"));
  EXPECT_THAT(ErrorOf([] { ParsePlan("? :\nmodels:\n  - model: a\nmerge_method: passthrough\n", "k.yml"); }),
              ::testing::HasSubstr("is used as a key"));
  EXPECT_THAT(
      ErrorOf([] { ParsePlan("models:\n  - model: a\nmerge_method: passthrough\nparameters:\n  {x: 1}: 2\n", "k.yml"); }),
      ::testing::HasSubstr("a map is used as a key"));
}

TEST(PlanHostile, NanAndInfAreNotNumbers) {
  for (const char* v : {"nan", ".nan", "inf", "-inf", "1e999"}) {
    Plan p = ParsePlan(std::string("models:\n  - model: a\nmerge_method: passthrough\nparameters:\n  scale: ") + v + "\n",
                       "n.yml");
    EXPECT_THAT(testutil::ErrorOf([&] { EvaluateNumber(p.params.at("scale"), "x.weight", 0.0); }),
                ::testing::HasSubstr("expected a number")) << v;
  }
}

TEST(PlanHostile, AliasBombIsRefusedWithoutExpanding) {
  std::string text = "models:\n  - model: a\nmerge_method: passthrough\nparameters:\n  p0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";
  for (int i = 1; i < 9; ++i) {
    text += "  p" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) text += std::string(k ? ", " : "") + "*a" + std::to_string(i - 1);
    text += "]\n";
  }
  EXPECT_THAT(testutil::ErrorOf([&] { ParsePlan(text, "bomb.yml"); }), ::testing::HasSubstr("expands to more than"));
  // A few aliases, as people use them, are fine.
  EXPECT_NO_THROW(ParsePlan("slices:\n  - sources:\n    - model: &m org/m\n      layer_range: [0, 2]\n"
                            "  - sources:\n    - model: *m\n      layer_range: [1, 3]\nmerge_method: passthrough\n",
                            "alias.yml"));
}

}  // namespace
}  // namespace strata
