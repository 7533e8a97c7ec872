// End-to-end tests of Compile and Export through the library: tiny synthetic
// models in a temporary HF cache, small plans, and checks of the store's
// contents and of exported tensors against values computed here by hand.
#include "strata/compiler/compile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "strata/compiler/export.h"
#include "strata/compiler/gc.h"
#include "strata/compiler/inspect.h"
#include "strata/compiler/materialize.h"
#include "strata/compiler/render.h"
#include "strata/compiler/resolve.h"
#include "strata/compiler/synth.h"
#include "strata/formats/variant.h"
#include "strata/formats/safetensors.h"
#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testutil::ErrorOf;
using testutil::FilesUnder;
using testutil::ScopedTempDir;

// Mistral/Llama layer roles (mergekit's order); Qwen2 adds three biases.
const std::vector<std::string> kLlamaRoles = {
    "input_layernorm.weight",  "self_attn.q_proj.weight",         "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight",         "post_attention_layernorm.weight",
    "mlp.up_proj.weight",      "mlp.gate_proj.weight",            "mlp.down_proj.weight"};

std::string Xxh3Hex(const void* p, size_t n) {
  XXH128_hash_t h = XXH3_128bits(p, n);
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

uint16_t Bits16(const uint8_t* p, size_t i) {
  uint16_t v;
  std::memcpy(&v, p + 2 * i, 2);  // little-endian host, as safetensors
  return v;
}

// bf16 -> float: the bf16 bits are the float's upper half.
float Bf16ToFloatByHand(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// float -> IEEE half, round to nearest even, overflow to inf: written here
// independently of formats/dtype.cc.
uint16_t FloatToHalfByHand(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (a < 0x38800000u) {  // below 2^-14: a half subnormal, in units of 2^-24
    float af;
    std::memcpy(&af, &a, 4);
    // Exact scaling by a power of two, then round-half-even to an integer.
    uint32_t units = static_cast<uint32_t>(std::nearbyint(af * 16777216.0f));
    return static_cast<uint16_t>(sign | units);
  }
  uint32_t h = (((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13);
  const uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry may bump the exponent: right
  return static_cast<uint16_t>(sign | h);
}

// "model-00002-of-00013.safetensors", mergekit's (and HF's) shard names.
std::string ShardName(int i, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i, n);
  return buf;
}

class CompileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = tmp_ / "hf";
    fs::create_directories(cache_);
    env_ = std::make_unique<testutil::ScopedEnv>("HF_HUB_CACHE", cache_);
    store_ = std::make_unique<Store>(tmp_ / "store");
  }
  void TearDown() override { SetWriteBudgetForTesting(-1); }

  // A tiny synthetic model (hidden 64, 4 heads, 2 kv heads, intermediate 128,
  // vocab 256, bf16) as HF id `id` in the temporary cache.
  SynthResult Synth(const std::string& id, const std::string& arch = "mistral", int layers = 4,
                    std::optional<int> hidden = std::nullopt, bool tie = false, uint64_t seed = 0) {
    SynthSpec s;
    s.arch = arch;
    s.preset = "tiny";
    s.layers = layers;
    s.hidden = hidden;
    s.tie_embeddings = tie;
    s.seed = seed;
    return SynthToHfCache(s, cache_, id);
  }

  // Writes `text` as plans/<name>.yml and loads it, as `strata compile` does.
  Plan PlanFile(const std::string& name, const std::string& text) {
    fs::create_directories(tmp_ / "plans");
    std::string path = tmp_ / ("plans/" + name + ".yml");
    testutil::WriteText(path, text);
    return LoadPlan(path);
  }

  CompileStats Run(const Plan& plan, const std::string& name = "", bool force = false) {
    CompileOptions o;
    o.name = name;
    o.force = force;
    return Compile(*store_, plan, o);
  }

  std::string StorePath(const std::string& rel) const { return store_->root() + "/" + rel; }

  ScopedTempDir tmp_;
  std::string cache_;
  std::unique_ptr<testutil::ScopedEnv> env_;
  std::unique_ptr<Store> store_;
};

std::string OneSlice(const std::string& model, int b, int e, const std::string& extra = "") {
  return "slices:\n"
         "  - sources:\n"
         "    - model: " + model + "\n"
         "      layer_range: [" + std::to_string(b) + ", " + std::to_string(e) + "]\n" + extra;
}

using testutil::kDusPlan;

// Bytes of the tiny mistral's tensors (bf16), worked out from its shapes:
// embed/lm_head 256x64; per layer two norms of 64, q and o 64x64, k and v
// 32x64 (2 kv heads of 16), gate/up 128x64, down 64x128.
constexpr uint64_t kEmbedBytes = 256 * 64 * 2;
constexpr uint64_t kLayerBytes = 2 * 64 * 2 + 2 * 64 * 64 * 2 + 2 * 32 * 64 * 2 + 3 * 128 * 64 * 2;
constexpr uint64_t kNormBytes = 64 * 2;

TEST_F(CompileTest, DusDeduplicatesLayersAndBlobs) {
  SynthResult m = Synth("org/m");
  CompileStats st = Run(PlanFile("dus", kDusPlan));
  EXPECT_EQ(st.name, "dus");  // the plan file's stem
  EXPECT_EQ(st.layers, 6);
  EXPECT_EQ(st.distinct_layers, 4);
  EXPECT_EQ(st.source_tensors, 4u * 9 + 3);  // 4 layers x 9 + embed, norm, lm_head
  EXPECT_EQ(st.cached_tensors, 0u);
  EXPECT_EQ(st.blobs_written, 39u);
  EXPECT_EQ(st.bytes_read, 2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes);
  EXPECT_EQ(st.blob_bytes_written, st.bytes_read);
  EXPECT_EQ(st.logical_bytes, 2 * kEmbedBytes + 6 * kLayerBytes + kNormBytes);
  EXPECT_FALSE(st.ref_unchanged);
  EXPECT_EQ(store_->GetRef("dus"), st.variant);

  // Every source tensor is one blob named by the XXH3 of its bytes; the only
  // other blobs are the output config.json and the plan text.
  SafetensorsFile src(m.dir + "/model.safetensors");
  ASSERT_EQ(src.tensors().size(), 39u);
  std::set<std::string> expected;
  for (const TensorInfo& t : src.tensors()) {
    std::string hex = Xxh3Hex(src.Data(t), t.nbytes());
    expected.insert(hex.substr(0, 2) + "/" + hex);
  }
  ASSERT_EQ(expected.size(), 39u);  // synthetic tensors are all distinct
  std::vector<std::string> blobs = FilesUnder(StorePath("blobs"));
  EXPECT_EQ(blobs.size(), 39u + 2);
  for (const std::string& e : expected) EXPECT_THAT(blobs, ::testing::Contains(e));
  EXPECT_TRUE(FilesUnder(StorePath("tmp")).empty());

  // Layers: source layers 0 1 2 | 1 2 3; output 1 and 3 (source 1) share a node,
  // as do 2 and 4 (source 2).
  Json show = ShowVariant(*store_, "dus");
  ASSERT_EQ(show["layers"].size(), 6u);
  std::vector<int> src_layers, slices;
  for (const Json& l : show["layers"]) {
    src_layers.push_back(l["source_layer"].get<int>());
    slices.push_back(l["slice"].get<int>());
    EXPECT_EQ(l["source_model"], "org/m");
    EXPECT_TRUE(l["transforms"].empty());  // bf16 -> bf16, no scale: no ops
  }
  EXPECT_THAT(src_layers, ElementsAre(0, 1, 2, 1, 2, 3));
  EXPECT_THAT(slices, ElementsAre(0, 0, 0, 1, 1, 1));
  EXPECT_EQ(show["layers"][1]["layer"], show["layers"][3]["layer"]);
  EXPECT_EQ(show["layers"][2]["layer"], show["layers"][4]["layer"]);
  EXPECT_NE(show["layers"][0]["layer"], show["layers"][1]["layer"]);
  EXPECT_THAT(show["layers"][1]["same_as"].get<std::vector<int>>(), ElementsAre(3));
  EXPECT_EQ(show["layers"][1]["same_as_count"], 1);
  EXPECT_EQ(SameAsText(show["layers"][1]), "3");
  EXPECT_TRUE(show["layers"][0]["same_as"].empty());
  EXPECT_EQ(show["layers"][0]["same_as_count"], 0);
  EXPECT_EQ(SameAsText(show["layers"][0]), "");

  // The output tensors of layer 3 are source layer 1's bytes.
  Variant v = LoadVariant(*store_, st.variant);
  std::vector<NamedTensor> out = OutputTensors(*store_, v);
  ASSERT_EQ(out.size(), 1 + 6 * 9 + 2u);
  EXPECT_EQ(out.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(out[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(out[out.size() - 2].name, "model.norm.weight");
  EXPECT_EQ(out.back().name, "lm_head.weight");
  for (const NamedTensor& t : out) {
    if (t.name != "model.layers.3.self_attn.q_proj.weight") continue;
    TensorNode n = ParseTensorNode(store_->GetNode(t.node), t.node);
    ASSERT_EQ(n.op, TensorNode::Op::kBlob);
    const TensorInfo* s = src.Find("model.layers.1.self_attn.q_proj.weight");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(n.blob.Hex(), Xxh3Hex(src.Data(*s), s->nbytes()));
    EXPECT_EQ(n.shape, (std::vector<int64_t>{64, 64}));
    EXPECT_EQ(n.dtype, DType::kBF16);
  }

  // config.json: the source config with the output's layer count.
  Json cfg = Json::parse(store_->ReadBlob(v.config));
  EXPECT_EQ(cfg["num_hidden_layers"], 6);
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  EXPECT_EQ(store_->ReadBlob(v.plan), kDusPlan);
}

TEST_F(CompileTest, SecondPlanOverSameModelReadsNothing) {
  Synth("org/m");
  CompileStats first = Run(PlanFile("dus", kDusPlan));
  ASSERT_EQ(first.blobs_written, 39u);
  const size_t blobs_before = FilesUnder(StorePath("blobs")).size();

  CompileStats second =
      Run(PlanFile("full", OneSlice("org/m", 0, 4, "merge_method: passthrough\n")));
  EXPECT_EQ(second.layers, 4);
  EXPECT_EQ(second.distinct_layers, 4);
  EXPECT_EQ(second.source_tensors, 39u);
  EXPECT_EQ(second.cached_tensors, 39u);
  EXPECT_EQ(second.bytes_read, 0u);
  EXPECT_EQ(second.blobs_written, 0u);
  EXPECT_EQ(second.blob_bytes_written, 0u);
  // Only the new plan text and the new config (4 layers) are new blobs.
  EXPECT_EQ(FilesUnder(StorePath("blobs")).size(), blobs_before + 2);
  // Layers 0..2 of "full" are the very nodes of "dus".
  Json a = ShowVariant(*store_, "dus"), b = ShowVariant(*store_, "full");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a["layers"][i]["layer"], b["layers"][i]["layer"]) << i;
  EXPECT_EQ(b["layers"][3]["layer"], a["layers"][5]["layer"]);
}

TEST_F(CompileTest, SourceCacheIsInvalidatedWhenTheFileChanges) {
  SynthResult m = Synth("org/m");
  Plan plan = PlanFile("full", OneSlice("org/m", 0, 4, "merge_method: passthrough\n"));
  Run(plan);
  // Touch the source: a new mtime is a new identity, so everything is re-read
  // (and, the bytes being the same, nothing new is written).
  fs::path file = fs::canonical(m.dir + "/model.safetensors");
  fs::last_write_time(file, fs::last_write_time(file) + std::chrono::seconds(5));
  CompileStats again = Run(plan);
  EXPECT_EQ(again.cached_tensors, 0u);
  EXPECT_EQ(again.bytes_read, 2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes);
  EXPECT_EQ(again.blobs_written, 0u);
  EXPECT_TRUE(again.ref_unchanged);
}

TEST_F(CompileTest, SamePlanTwiceIsUnchanged) {
  Synth("org/m");
  Plan plan = PlanFile("dus", kDusPlan);
  CompileStats a = Run(plan, "solar");
  size_t nodes = FilesUnder(StorePath("nodes")).size();
  CompileStats b = Run(plan, "solar");
  EXPECT_EQ(a.variant, b.variant);
  EXPECT_FALSE(a.ref_unchanged);
  EXPECT_TRUE(b.ref_unchanged);
  EXPECT_EQ(b.blobs_written, 0u);
  EXPECT_EQ(FilesUnder(StorePath("nodes")).size(), nodes);
  EXPECT_THAT(store_->ListRefs(), ElementsAre("solar"));
}

TEST_F(CompileTest, DifferentPlanSameNameNeedsForce) {
  Synth("org/m");
  CompileStats a = Run(PlanFile("dus", kDusPlan), "v");
  Plan other = PlanFile("other", OneSlice("org/m", 0, 2, "merge_method: passthrough\n"));
  std::string msg = ErrorOf([&] { Run(other, "v"); });
  EXPECT_THAT(msg, HasSubstr("\"v\""));
  EXPECT_THAT(msg, HasSubstr("force"));
  EXPECT_EQ(store_->GetRef("v"), a.variant);  // untouched
  CompileStats forced = Run(other, "v", /*force=*/true);
  EXPECT_NE(forced.variant, a.variant);
  EXPECT_EQ(forced.layers, 2);
  EXPECT_EQ(store_->GetRef("v"), forced.variant);
}

TEST_F(CompileTest, InvalidNameThrows) {
  Synth("org/m");
  std::string msg = ErrorOf([&] { Run(PlanFile("dus", kDusPlan), "../escape"); });
  EXPECT_THAT(msg, HasSubstr("../escape"));
  EXPECT_TRUE(store_->ListRefs().empty());
}

TEST_F(CompileTest, LayerRangePastModel) {
  Synth("org/m");
  Plan plan = PlanFile("past", OneSlice("org/m", 2, 5, "merge_method: passthrough\n"));
  std::string msg = ErrorOf([&] { Run(plan); });
  // "      layer_range: " is 19 characters: the range starts at line 4, column 20.
  EXPECT_THAT(msg, HasSubstr(plan.path + ":4:20"));
  EXPECT_THAT(msg, HasSubstr("past the 4 layers"));
  EXPECT_TRUE(store_->ListRefs().empty());
}

TEST_F(CompileTest, MissingModelListsWhereItLooked) {
  Plan plan = PlanFile("missing", OneSlice("org/name", 0, 2, "merge_method: passthrough\n"));
  std::string msg = ErrorOf([&] { Run(plan); });
  EXPECT_THAT(msg, HasSubstr("org/name"));
  EXPECT_THAT(msg, HasSubstr("models--org--name"));
  EXPECT_THAT(msg, HasSubstr(cache_));
}

TEST_F(CompileTest, ShapesDisagree) {
  Synth("org/narrow", "mistral", 4, 64);
  Synth("org/wide", "mistral", 4, 128);
  Plan plan = PlanFile("mixed",
                       "slices:\n"
                       "  - sources:\n"
                       "    - model: org/narrow\n"
                       "      layer_range: [0, 2]\n"
                       "  - sources:\n"
                       "    - model: org/wide\n"
                       "      layer_range: [2, 4]\n"
                       "merge_method: passthrough\n");
  std::string msg = ErrorOf([&] { Run(plan); });
  EXPECT_THAT(msg, HasSubstr("shapes disagree"));
  EXPECT_THAT(msg, HasSubstr("org/wide"));
  EXPECT_TRUE(store_->ListRefs().empty());
}

TEST_F(CompileTest, Qwen2HasBiases) {
  Synth("org/q", "qwen2", 2);
  CompileStats st = Run(PlanFile("q", OneSlice("org/q", 0, 2, "merge_method: passthrough\n")));
  EXPECT_EQ(st.layers, 2);
  EXPECT_EQ(st.source_tensors, 2u * 12 + 3);
  Variant v = LoadVariant(*store_, st.variant);
  EXPECT_EQ(v.arch->hf_name, "Qwen2ForCausalLM");
  ASSERT_EQ(v.layers.size(), 2u);
  std::map<std::string, Hash> roles = LoadLayer(*store_, v.layers[0].layer);
  EXPECT_EQ(roles.size(), 12u);
  for (const char* b : {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}) {
    ASSERT_EQ(roles.count(b), 1u) << b;
    TensorNode n = ParseTensorNode(store_->GetNode(roles.at(b)), roles.at(b));
    // q bias has hidden (64) entries; k and v biases 2 kv heads x 16.
    EXPECT_EQ(n.shape, (std::vector<int64_t>{std::string(b).find("q_proj") != std::string::npos ? 64 : 32}))
        << b;
  }
  EXPECT_EQ(OutputTensors(*store_, v).size(), 1 + 2 * 12 + 2u);
}

TEST_F(CompileTest, TiedEmbeddingsHaveNoLmHead) {
  Synth("org/tied", "llama", 2, std::nullopt, /*tie=*/true);
  CompileStats st = Run(PlanFile("t", OneSlice("org/tied", 0, 2, "merge_method: passthrough\n")));
  EXPECT_EQ(st.source_tensors, 2u * 9 + 2);
  Json show = ShowVariant(*store_, "t");
  std::vector<std::string> names;
  for (const Json& t : show["tensors"]) names.push_back(t["name"].get<std::string>());
  EXPECT_THAT(names, ElementsAre("model.embed_tokens.weight", "model.norm.weight"));
  Variant v = LoadVariant(*store_, st.variant);
  for (const NamedTensor& t : OutputTensors(*store_, v)) EXPECT_NE(t.name, "lm_head.weight");

  ExportStats ex = Export(*store_, "t", tmp_ / "out", ExportOptions{});
  EXPECT_EQ(ex.tensors, 2u * 9 + 2);
  SafetensorsFile f(tmp_ / "out/model.safetensors");
  EXPECT_EQ(f.Find("lm_head.weight"), nullptr);
  EXPECT_NE(f.Find("model.embed_tokens.weight"), nullptr);
}

TEST_F(CompileTest, Float16CastMatchesHandConversion) {
  SynthResult m = Synth("org/m");
  const std::string text = OneSlice("org/m", 0, 4, "merge_method: passthrough\ndtype: float16\n");
  CompileStats st = Run(PlanFile("half", text));
  // A cast is a node over the source blob: no new tensor bytes are stored.
  EXPECT_EQ(st.blobs_written, 39u);
  EXPECT_EQ(st.logical_bytes, 2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes);  // same size

  Json show = ShowVariant(*store_, "half");
  EXPECT_EQ(show["dtype"], "float16");
  for (const Json& l : show["layers"]) {
    ASSERT_EQ(l["transforms"].size(), 9u);
    for (const Json& t : l["transforms"]) {
      ASSERT_EQ(t["ops"].size(), 2u) << t.dump();
      EXPECT_EQ(t["ops"][0]["op"], "cast");
      EXPECT_EQ(t["ops"][0]["dtype"], "F16");
      EXPECT_EQ(t["ops"][1]["op"], "blob");
      EXPECT_EQ(t["ops"][1]["dtype"], "BF16");
    }
  }
  for (const Json& t : show["tensors"]) {
    EXPECT_EQ(t["dtype"], "F16");
    EXPECT_EQ(t["ops"][0]["op"], "cast");
  }

  Export(*store_, "half", tmp_ / "out", ExportOptions{});
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  SafetensorsFile src(m.dir + "/model.safetensors");
  ASSERT_EQ(out.tensors().size(), 39u);
  size_t checked = 0;
  for (const TensorInfo& o : out.tensors()) {
    EXPECT_EQ(o.dtype, DType::kF16) << o.name;
    const TensorInfo* s = src.Find(o.name);  // 0..4 -> 0..4: same names
    ASSERT_NE(s, nullptr) << o.name;
    ASSERT_EQ(s->dtype, DType::kBF16);
    ASSERT_EQ(o.shape, s->shape);
    const uint64_t n = o.numel();
    for (uint64_t i = 0; i < n; ++i) {
      uint16_t want = FloatToHalfByHand(Bf16ToFloatByHand(Bits16(src.Data(*s), i)));
      uint16_t got = Bits16(out.Data(o), i);
      if (got != want) {
        ADD_FAILURE() << o.name << "[" << i << "]: got 0x" << std::hex << got << ", want 0x" << want;
        break;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, (2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes) / 2);
  Json cfg = Json::parse(testutil::ReadText(tmp_ / "out/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "float16");
  EXPECT_EQ(cfg["num_hidden_layers"], 4);
  EXPECT_EQ(testutil::ReadText(tmp_ / "out/mergekit_config.yml"), text);
}

TEST(HandConversion, KnownHalfValues) {
  // Sanity of the test's own converter on values whose encodings are known.
  EXPECT_EQ(FloatToHalfByHand(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalfByHand(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfByHand(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalfByHand(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalfByHand(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfByHand(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToHalfByHand(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToHalfByHand(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(FloatToHalfByHand(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(FloatToHalfByHand(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even
  EXPECT_EQ(Bf16ToFloatByHand(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloatByHand(0xc040), -3.0f);
}

TEST_F(CompileTest, ScaleZeroKeepsSignOfZero) {
  SynthResult m = Synth("org/m");
  CompileStats st = Run(PlanFile("bx", OneSlice("org/m", 0, 4,
                                                "      parameters:\n"
                                                "        scale:\n"
                                                "          - filter: o_proj\n"
                                                "            value: 0.0\n"
                                                "          - value: 1.0\n"
                                                "merge_method: passthrough\n")));
  EXPECT_EQ(st.blobs_written, 39u);
  Json show = ShowVariant(*store_, "bx");
  for (const Json& l : show["layers"]) {
    ASSERT_EQ(l["transforms"].size(), 1u) << l.dump();
    EXPECT_EQ(l["transforms"][0]["tensor"], "self_attn.o_proj.weight");
    EXPECT_EQ(l["transforms"][0]["ops"][0]["op"], "scale");
    EXPECT_EQ(l["transforms"][0]["ops"][0]["factor"], 0.0);
  }

  Export(*store_, "bx", tmp_ / "out", ExportOptions{});
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  SafetensorsFile src(m.dir + "/model.safetensors");
  size_t negatives = 0;
  for (const TensorInfo& o : out.tensors()) {
    const TensorInfo* s = src.Find(o.name);
    ASSERT_NE(s, nullptr) << o.name;
    ASSERT_EQ(o.dtype, DType::kBF16);
    if (o.name.find("o_proj") == std::string::npos) {
      // Every other tensor is the source's bytes.
      ASSERT_EQ(o.nbytes(), s->nbytes()) << o.name;
      EXPECT_EQ(0, std::memcmp(out.Data(o), src.Data(*s), s->nbytes())) << o.name;
      continue;
    }
    for (uint64_t i = 0; i < o.numel(); ++i) {
      const bool neg = Bits16(src.Data(*s), i) & 0x8000;
      negatives += neg;
      // torch: x * 0.0 is -0.0 for negative x, +0.0 otherwise (no NaN here).
      ASSERT_EQ(Bits16(out.Data(o), i), neg ? 0x8000 : 0x0000) << o.name << "[" << i << "]";
    }
  }
  EXPECT_GT(negatives, 0u);  // the check above really saw negative inputs
}

TEST_F(CompileTest, ZeroSourceTensorIsAZerosNode) {
  // A source tensor whose bytes are all zero is stored as nothing.
  SynthResult m = Synth("org/m", "mistral", 1);
  // Copy the synthetic model into a local directory, zeroing one tensor.
  fs::create_directories(tmp_ / "local/m");
  fs::copy_file(m.dir + "/config.json", tmp_ / "local/m/config.json");
  std::string bytes = testutil::ReadText(m.dir + "/model.safetensors");
  {
    SafetensorsFile f(m.dir + "/model.safetensors");
    const TensorInfo* t = f.Find("model.layers.0.mlp.up_proj.weight");
    ASSERT_NE(t, nullptr);
    std::fill(bytes.begin() + static_cast<long>(f.FileOffset(*t)),
              bytes.begin() + static_cast<long>(f.FileOffset(*t) + t->nbytes()), '\0');
  }
  testutil::WriteText(tmp_ / "local/m/model.safetensors", bytes);
  CompileStats st = Run(PlanFile("z", OneSlice(tmp_ / "local/m", 0, 1, "merge_method: passthrough\n")));
  EXPECT_EQ(st.source_tensors, 12u);
  EXPECT_EQ(st.blobs_written, 11u);
  Variant v = LoadVariant(*store_, st.variant);
  auto roles = LoadLayer(*store_, v.layers[0].layer);
  TensorNode n = ParseTensorNode(store_->GetNode(roles.at("mlp.up_proj.weight")), roles.at("mlp.up_proj.weight"));
  EXPECT_EQ(n.op, TensorNode::Op::kZeros);
  EXPECT_EQ(n.shape, (std::vector<int64_t>{128, 64}));
  // Local models are recorded by path.
  EXPECT_TRUE(v.node["sources"][tmp_ / "local/m"].contains("path"));

  // Compiled again, the zeros come from the source cache like any blob.
  CompileStats again = Run(PlanFile("z2", OneSlice(tmp_ / "local/m", 0, 1, "merge_method: passthrough\n")));
  EXPECT_EQ(again.cached_tensors, 12u);
  EXPECT_EQ(again.bytes_read, 0u);

  Export(*store_, "z", tmp_ / "out", ExportOptions{});
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  const TensorInfo* up = out.Find("model.layers.0.mlp.up_proj.weight");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->nbytes(), 128u * 64 * 2);
  for (uint64_t i = 0; i < up->nbytes(); ++i) ASSERT_EQ(out.Data(*up)[i], 0) << i;
}

TEST_F(CompileTest, ExportRoundTripsSourceBytes) {
  // [0,3]+[1,4] exported: each output layer is its source layer, byte for byte.
  SynthResult m = Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  ExportStats ex = Export(*store_, "dus", tmp_ / "out", ExportOptions{});
  EXPECT_EQ(ex.shards, 1);
  EXPECT_EQ(ex.tensors, 1 + 6 * 9 + 2u);
  EXPECT_EQ(ex.tensor_bytes, 2 * kEmbedBytes + 6 * kLayerBytes + kNormBytes);
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  SafetensorsFile src(m.dir + "/model.safetensors");
  const int source_of[6] = {0, 1, 2, 1, 2, 3};
  for (int l = 0; l < 6; ++l)
    for (const std::string& role : kLlamaRoles) {
      const TensorInfo* o = out.Find("model.layers." + std::to_string(l) + "." + role);
      const TensorInfo* s = src.Find("model.layers." + std::to_string(source_of[l]) + "." + role);
      ASSERT_NE(o, nullptr);
      ASSERT_NE(s, nullptr);
      ASSERT_EQ(o->nbytes(), s->nbytes());
      EXPECT_EQ(0, std::memcmp(out.Data(*o), src.Data(*s), s->nbytes())) << l << " " << role;
    }
  EXPECT_EQ(out.metadata().at("format"), "pt");
  EXPECT_FALSE(fs::exists(tmp_ / "out/model.safetensors.index.json"));
}

TEST_F(CompileTest, ExportShardsLikeMergekit) {
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  // docs/plans.md: tensors reach mergekit's writer sorted by *source* tensor
  // name (lm_head, embed_tokens, layers.0.* with roles alphabetical, ...,
  // norm), and a tensor that would push a non-empty shard past the limit opens
  // a new one. With 40000 bytes per shard, by hand:
  //   shard 1: lm_head (32768)                      + embed would be 65536
  //   shard 2: embed (32768), layers.0.input_layernorm (128) = 32896
  //                                                 + down_proj would be 49280
  //   shard 3: layers.0.mlp.down_proj, mlp.gate_proj (16384 each) = 32768
  //   shard 4: mlp.up_proj 16384, post_attention_layernorm 128, k_proj 4096,
  //            o_proj 8192, q_proj 8192 = 36992     + v_proj would be 41088
  //   shard 5: starts with layers.0.self_attn.v_proj
  ExportOptions o;
  o.shard_size = 40000;
  ExportStats ex = Export(*store_, "dus", tmp_ / "out", o);
  EXPECT_GT(ex.shards, 5);
  Json index = Json::parse(testutil::ReadText(tmp_ / "out/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 2 * kEmbedBytes + 6 * kLayerBytes + kNormBytes);
  const Json& wm = index["weight_map"];
  EXPECT_EQ(wm["lm_head.weight"], ShardName(1, ex.shards));
  EXPECT_EQ(wm["model.embed_tokens.weight"], ShardName(2, ex.shards));
  EXPECT_EQ(wm["model.layers.0.input_layernorm.weight"], ShardName(2, ex.shards));
  EXPECT_EQ(wm["model.layers.0.mlp.down_proj.weight"], ShardName(3, ex.shards));
  EXPECT_EQ(wm["model.layers.0.mlp.gate_proj.weight"], ShardName(3, ex.shards));
  EXPECT_EQ(wm["model.layers.0.mlp.up_proj.weight"], ShardName(4, ex.shards));
  EXPECT_EQ(wm["model.layers.0.self_attn.q_proj.weight"], ShardName(4, ex.shards));
  EXPECT_EQ(wm["model.layers.0.self_attn.v_proj.weight"], ShardName(5, ex.shards));
  EXPECT_EQ(wm["model.norm.weight"], ShardName(ex.shards, ex.shards));
  EXPECT_EQ(wm.size(), 1 + 6 * 9 + 2u);
  uint64_t total = 0;
  for (int i = 1; i <= ex.shards; ++i) {
    std::string name = ShardName(i, ex.shards);
    SafetensorsFile f(tmp_ / ("out/" + name));
    uint64_t bytes = 0;
    for (const TensorInfo& t : f.tensors()) {
      bytes += t.nbytes();
      EXPECT_EQ(wm[t.name], name);
    }
    // Only a single tensor may exceed the limit on its own.
    if (f.tensors().size() > 1) {
      EXPECT_LE(bytes, 40000u) << name;
    }
    total += bytes;
  }
  EXPECT_EQ(total, ex.tensor_bytes);
}

TEST_F(CompileTest, ExportRefusesNonEmptyDir) {
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  const std::string out = tmp_ / "out";
  fs::create_directories(out);
  testutil::WriteText(out + "/keep.txt", "mine");
  std::string msg = ErrorOf([&] { Export(*store_, "dus", out, ExportOptions{}); });
  EXPECT_THAT(msg, HasSubstr("not empty"));
  EXPECT_THAT(testutil::EntriesIn(out), ElementsAre("keep.txt"));
  EXPECT_EQ(testutil::ReadText(out + "/keep.txt"), "mine");
  // Nothing was left beside it either.
  EXPECT_THAT(testutil::EntriesIn(tmp_.path()), ElementsAre("hf", "out", "plans", "store"));

  ExportOptions force;
  force.force = true;
  Export(*store_, "dus", out, force);
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_THAT(testutil::EntriesIn(tmp_.path()), ElementsAre("hf", "out", "plans", "store"));
}

TEST_F(CompileTest, ExportUnknownVariant) {
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  std::string msg = ErrorOf([&] { Export(*store_, "nope", tmp_ / "out", ExportOptions{}); });
  EXPECT_THAT(msg, HasSubstr("dus"));
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

TEST_F(CompileTest, ExportWriteFailureLeavesNothing) {
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  const std::string parent = tmp_ / "exports";
  fs::create_directories(parent);
  {
    testutil::ScopedWriteBudget budget(50000);  // fails inside the safetensors data
    ErrorOf([&] { Export(*store_, "dus", parent + "/out", ExportOptions{}); });
  }
  EXPECT_TRUE(testutil::EntriesIn(parent).empty()) << ::testing::PrintToString(testutil::EntriesIn(parent));
  // The same export works once writes succeed again.
  Export(*store_, "dus", parent + "/out", ExportOptions{});
  EXPECT_THAT(testutil::EntriesIn(parent), ElementsAre("out"));
}

TEST_F(CompileTest, CompileWriteFailureLeavesNoRefNoTemp) {
  Synth("org/m");
  Plan plan = PlanFile("dus", kDusPlan);
  {
    testutil::ScopedWriteBudget budget(100000);  // a fraction of the 361600 source bytes
    ErrorOf([&] { Run(plan, "broken"); });
  }
  EXPECT_EQ(store_->GetRef("broken"), std::nullopt);
  EXPECT_TRUE(store_->ListRefs().empty());
  EXPECT_TRUE(FilesUnder(StorePath("tmp")).empty());
  // Every blob that did become visible is complete: its bytes match its name.
  for (const std::string& rel : FilesUnder(StorePath("blobs"))) {
    std::string bytes = testutil::ReadText(StorePath("blobs/" + rel));
    EXPECT_EQ(rel.substr(3), Xxh3Hex(bytes.data(), bytes.size())) << rel;
  }
  // A retry completes.
  CompileStats st = Run(plan, "broken");
  EXPECT_EQ(store_->GetRef("broken"), st.variant);
}

TEST_F(CompileTest, CompileWriteFailureLateLeavesNoRef) {
  // A budget that lets every blob through but fails on the nodes.
  Synth("org/m");
  Plan plan = PlanFile("dus", kDusPlan);
  {
    testutil::ScopedWriteBudget budget(2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes + 500);
    ErrorOf([&] { Run(plan, "late"); });
  }
  EXPECT_EQ(store_->GetRef("late"), std::nullopt);
  EXPECT_TRUE(FilesUnder(StorePath("tmp")).empty());
}

TEST_F(CompileTest, ModelsFormCoversAllLayers) {
  Synth("org/m", "mistral", 3);
  CompileStats st = Run(PlanFile("mf",
                                 "models:\n"
                                 "  - model: org/m\n"
                                 "merge_method: passthrough\n"));
  EXPECT_EQ(st.layers, 3);
  EXPECT_EQ(st.distinct_layers, 3);
  Json show = ShowVariant(*store_, "mf");
  ASSERT_EQ(show["layers"].size(), 3u);
  EXPECT_EQ(show["layers"][2]["source_layer"], 2);
}

TEST_F(CompileTest, SourceProvenanceIsSnapshotRevision) {
  SynthResult m = Synth("org/m");
  CompileStats st = Run(PlanFile("dus", kDusPlan));
  Variant v = LoadVariant(*store_, st.variant);
  // The synth cache layout: refs/main names the snapshot directory we got.
  std::string rev = testutil::ReadText(cache_ + "/models--org--m/refs/main");
  EXPECT_EQ(fs::path(m.dir).filename().string(), rev);
  EXPECT_EQ(v.node["sources"]["org/m"]["revision"], rev);
}

TEST_F(CompileTest, IdenticalModelsShareBlobsAndLayers) {
  // Same seed: org/a and org/b hold byte-identical tensors in different files.
  Synth("org/a");
  Synth("org/b");
  CompileStats st = Run(PlanFile("ab",
                                 "slices:\n"
                                 "  - sources:\n"
                                 "    - model: org/a\n"
                                 "      layer_range: [0, 4]\n"
                                 "  - sources:\n"
                                 "    - model: org/b\n"
                                 "      layer_range: [0, 4]\n"
                                 "merge_method: passthrough\n"));
  EXPECT_EQ(st.layers, 8);
  // a: embed + 4x9; b: 4x9 + norm + lm_head.
  EXPECT_EQ(st.source_tensors, 37u + 38u);
  EXPECT_EQ(st.bytes_read, 2 * kEmbedBytes + 8 * kLayerBytes + kNormBytes);
  EXPECT_EQ(st.blobs_written, 39u);
  // A layer node does not depend on depth or on which file it came from.
  EXPECT_EQ(st.distinct_layers, 4);
  Json show = ShowVariant(*store_, "ab");
  EXPECT_EQ(show["layers"][0]["layer"], show["layers"][4]["layer"]);
  EXPECT_EQ(show["layers"][0]["source_model"], "org/a");
  EXPECT_EQ(show["layers"][4]["source_model"], "org/b");
  EXPECT_EQ(FilesUnder(StorePath("blobs")).size(), 39u + 2);
}

TEST_F(CompileTest, ZeroLengthLastSliceAddsNoLayersButGivesTheFinalNormAndLmHead) {
  // As in mergekit: [4, 4] of org/b adds no layers, and as the last slice it
  // decides where model.norm and lm_head come from.
  Synth("org/a");
  Synth("org/b", "mistral", 4, std::nullopt, false, /*seed=*/7);
  CompileStats st = Run(PlanFile("a-then-b-head",
                                 "slices:\n"
                                 "  - sources:\n"
                                 "    - model: org/a\n"
                                 "      layer_range: [0, 4]\n"
                                 "  - sources:\n"
                                 "    - model: org/b\n"
                                 "      layer_range: [4, 4]\n"
                                 "merge_method: passthrough\n"));
  EXPECT_EQ(st.layers, 4);
  EXPECT_EQ(st.source_tensors, 37u + 2u);  // a: embed + 4 layers x 9; b: norm + lm_head
  CompileStats sb = Run(PlanFile("b", OneSlice("org/b", 0, 4, "merge_method: passthrough\n")));
  CompileStats sa = Run(PlanFile("a", OneSlice("org/a", 0, 4, "merge_method: passthrough\n")));
  const Variant mixed = LoadVariant(*store_, st.variant);
  const Variant b = LoadVariant(*store_, sb.variant), a = LoadVariant(*store_, sa.variant);
  ASSERT_EQ(mixed.post.size(), b.post.size());
  for (size_t i = 0; i < b.post.size(); ++i) {
    EXPECT_EQ(mixed.post[i].name, b.post[i].name);
    EXPECT_EQ(mixed.post[i].node, b.post[i].node) << b.post[i].name;
    EXPECT_NE(mixed.post[i].node, a.post[i].node) << a.post[i].name;  // the seeds differ
  }
  ASSERT_EQ(mixed.layers.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(mixed.layers[i].layer, a.layers[i].layer);
  EXPECT_EQ(mixed.pre[0].node, a.pre[0].node);
}

TEST_F(CompileTest, APlanOfOnlyEmptySlicesIsRefused) {
  Synth("org/a");
  std::string msg;
  try {
    Run(PlanFile("none", OneSlice("org/a", 2, 2, "merge_method: passthrough\n")), "none");
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("no layers"), std::string::npos) << msg;
  EXPECT_FALSE(store_->GetRef("none").has_value());
}

TEST_F(CompileTest, Float32ThenBfloat16RoundTripsSource) {
  // bf16 -> f32 is exact and f32 -> bf16 of such a value is exact again, so
  // dtype float32 + out_dtype bfloat16 exports the source bytes.
  SynthResult m = Synth("org/m");
  Run(PlanFile("rt", OneSlice("org/m", 0, 4,
                              "merge_method: passthrough\n"
                              "dtype: float32\n"
                              "out_dtype: bfloat16\n")));
  Json show = ShowVariant(*store_, "rt");
  EXPECT_EQ(show["dtype"], "float32");
  EXPECT_EQ(show["out_dtype"], "bfloat16");
  const Json& ops = show["layers"][0]["transforms"][0]["ops"];
  ASSERT_EQ(ops.size(), 3u) << ops.dump();
  EXPECT_EQ(ops[0]["op"], "cast");
  EXPECT_EQ(ops[0]["dtype"], "BF16");
  EXPECT_EQ(ops[1]["op"], "cast");
  EXPECT_EQ(ops[1]["dtype"], "F32");
  EXPECT_EQ(ops[2]["op"], "blob");

  Export(*store_, "rt", tmp_ / "out", ExportOptions{});
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  SafetensorsFile src(m.dir + "/model.safetensors");
  ASSERT_EQ(out.tensors().size(), 39u);
  for (const TensorInfo& o : out.tensors()) {
    const TensorInfo* s = src.Find(o.name);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(o.dtype, DType::kBF16);
    ASSERT_EQ(o.nbytes(), s->nbytes());
    EXPECT_EQ(0, std::memcmp(out.Data(o), src.Data(*s), s->nbytes())) << o.name;
  }
  Json cfg = Json::parse(testutil::ReadText(tmp_ / "out/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");  // out_dtype wins over dtype
}

TEST_F(CompileTest, CastHappensBeforeScale) {
  // mergekit: load as dtype (f32), then tensor * 0.1 in f32. Scaling in bf16
  // first would round twice and differ in the low bits.
  SynthResult m = Synth("org/m", "mistral", 1);
  Run(PlanFile("sc", OneSlice("org/m", 0, 1,
                              "merge_method: passthrough\n"
                              "dtype: float32\n"
                              "parameters:\n"
                              "  scale: 0.1\n")));
  Json show = ShowVariant(*store_, "sc");
  const Json& ops = show["layers"][0]["transforms"][0]["ops"];
  ASSERT_EQ(ops.size(), 3u) << ops.dump();
  EXPECT_EQ(ops[0]["op"], "scale");
  EXPECT_EQ(ops[0]["dtype"], "F32");
  EXPECT_EQ(ops[1]["op"], "cast");
  EXPECT_EQ(ops[1]["dtype"], "F32");

  Export(*store_, "sc", tmp_ / "out", ExportOptions{});
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  SafetensorsFile src(m.dir + "/model.safetensors");
  const float factor = static_cast<float>(0.1);  // torch rounds the Python float to f32
  size_t n = 0;
  for (const TensorInfo& o : out.tensors()) {
    const TensorInfo* s = src.Find(o.name);
    ASSERT_NE(s, nullptr);
    ASSERT_EQ(o.dtype, DType::kF32);
    for (uint64_t i = 0; i < o.numel(); ++i, ++n) {
      float want = Bf16ToFloatByHand(Bits16(src.Data(*s), i)) * factor;
      float got;
      std::memcpy(&got, out.Data(o) + 4 * i, 4);
      uint32_t wb, gb;
      std::memcpy(&wb, &want, 4);
      std::memcpy(&gb, &got, 4);
      ASSERT_EQ(gb, wb) << o.name << "[" << i << "]";
    }
  }
  EXPECT_EQ(n, (2 * kEmbedBytes + kLayerBytes + kNormBytes) / 2);
}

TEST_F(CompileTest, TokenizerFilesAndChatTemplate) {
  // A local model directory with tokenizer files beside the weights.
  SynthResult m = Synth("org/m", "mistral", 1);
  const std::string dir = tmp_ / "local";
  fs::create_directories(dir);
  fs::copy_file(m.dir + "/config.json", dir + "/config.json");
  fs::copy_file(m.dir + "/model.safetensors", dir + "/model.safetensors");  // follows the link
  testutil::WriteText(dir + "/tokenizer.json", "{\"version\":\"1.0\"}");
  testutil::WriteText(dir + "/tokenizer_config.json", "{\"model_max_length\": 4096}");
  testutil::WriteText(dir + "/README.md", "not a tokenizer file");
  Run(PlanFile("tok", OneSlice(dir, 0, 1,
                               "merge_method: passthrough\n"
                               "chat_template: \"{{ messages }}\"\n")));
  Json show = ShowVariant(*store_, "tok");
  EXPECT_THAT(show["files"].get<std::vector<std::string>>(),
              ElementsAre("tokenizer.json", "tokenizer_config.json"));

  Export(*store_, "tok", tmp_ / "out", ExportOptions{});
  EXPECT_THAT(testutil::EntriesIn(tmp_ / "out"),
              ElementsAre("config.json", "mergekit_config.yml", "model.safetensors", "tokenizer.json",
                          "tokenizer_config.json"));
  EXPECT_EQ(testutil::ReadText(tmp_ / "out/tokenizer.json"), "{\"version\":\"1.0\"}");
  Json tc = Json::parse(testutil::ReadText(tmp_ / "out/tokenizer_config.json"));
  EXPECT_EQ(tc["model_max_length"], 4096);
  EXPECT_EQ(tc["chat_template"], "{{ messages }}");
}

TEST_F(CompileTest, ExportIntoPathWithTrailingSlash) {
  // regression: export.cc Export() takes `out.filename()` of
  // "/x/out/" (lexically_normal keeps the trailing separator), which is empty,
  // so the temp dir is made *inside* outdir and the final rename of outdir
  // into its own child fails (filesystem_error EINVAL, not strata::Error),
  // leaving an empty outdir behind. `strata export v out/` (shell completion
  // adds the slash) should work like `out`.
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  const std::string out = tmp_ / "out/";
  try {
    Export(*store_, "dus", out, ExportOptions{});
  } catch (const std::exception& e) {
    ADD_FAILURE() << "Export into \"" << out << "\" threw: " << e.what();
  }
  EXPECT_TRUE(fs::exists(tmp_ / "out/model.safetensors"));
  EXPECT_TRUE(fs::exists(tmp_ / "out/config.json"));
}

TEST_F(CompileTest, SynthToDirWithTrailingSlash) {
  // regression: synth.cc BuildAtomically() has the same trailing-slash
  // problem as Export: the temp dir lands inside the target, fs::remove(p)
  // fails with "Directory not empty" and an empty directory is left.
  SynthSpec s;
  s.layers = 1;
  const std::string out = tmp_ / "synth/model/";
  try {
    SynthToDir(s, out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "SynthToDir(\"" << out << "\") threw: " << e.what();
  }
  EXPECT_TRUE(fs::exists(tmp_ / "synth/model/model.safetensors"));
  EXPECT_TRUE(fs::exists(tmp_ / "synth/model/config.json"));
}

TEST_F(CompileTest, GradientAcrossSliceAndOneLayerSlice) {
  // t = idx/(n-1) inside a slice; t = 1 for a one-layer slice (mergekit).
  Synth("org/m");
  Run(PlanFile("g",
               "slices:\n"
               "  - sources:\n"
               "    - model: org/m\n"
               "      layer_range: [0, 3]\n"
               "  - sources:\n"
               "    - model: org/m\n"
               "      layer_range: [3, 4]\n"
               "merge_method: passthrough\n"
               "parameters:\n"
               "  scale:\n"
               "    - filter: o_proj\n"
               "      value: [0.25, 0.75]\n"));
  Json show = ShowVariant(*store_, "g");
  auto factor_of = [&](int layer) -> std::optional<double> {
    for (const Json& t : show["layers"][layer]["transforms"])
      if (t["tensor"] == "self_attn.o_proj.weight") return t["ops"][0]["factor"].get<double>();
    return std::nullopt;  // no scale node
  };
  EXPECT_EQ(factor_of(0), 0.25);  // t = 0
  EXPECT_EQ(factor_of(1), 0.5);   // t = 0.5: (0.25 + 0.75) / 2
  EXPECT_EQ(factor_of(2), 0.75);  // t = 1
  EXPECT_EQ(factor_of(3), 0.75);  // one-layer slice: t = 1
  // Only o_proj is scaled; the plan-level filter does not touch the rest.
  for (int l = 0; l < 4; ++l) EXPECT_EQ(show["layers"][l]["transforms"].size(), 1u) << l;
}

TEST_F(CompileTest, ListAndUsage) {
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  Json ls = ListVariants(*store_);
  ASSERT_EQ(ls["variants"].size(), 1u);
  const Json& v = ls["variants"][0];
  EXPECT_EQ(v["name"], "dus");
  EXPECT_EQ(v["architecture"], "MistralForCausalLM");
  EXPECT_EQ(v["layers"], 6);
  EXPECT_EQ(v["distinct_layers"], 4);
  EXPECT_EQ(v["tensors"], 1 + 6 * 9 + 2);
  EXPECT_EQ(v["logical_bytes"], 2 * kEmbedBytes + 6 * kLayerBytes + kNormBytes);
  EXPECT_EQ(v["distinct_bytes"], 2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes);

  uint64_t blob_bytes = 0, node_bytes = 0;
  for (const std::string& f : FilesUnder(StorePath("blobs"))) blob_bytes += fs::file_size(StorePath("blobs/" + f));
  for (const std::string& f : FilesUnder(StorePath("nodes"))) node_bytes += fs::file_size(StorePath("nodes/" + f));
  Json du = StoreUsage(*store_);
  EXPECT_EQ(du["variants"], 1);
  EXPECT_EQ(du["blob_count"], 39 + 2);
  EXPECT_EQ(du["blob_bytes"], blob_bytes);
  EXPECT_EQ(du["node_count"], FilesUnder(StorePath("nodes")).size());
  EXPECT_EQ(du["node_bytes"], node_bytes);
  EXPECT_EQ(du["physical_bytes"], blob_bytes + node_bytes);
  EXPECT_EQ(du["logical_bytes"], 2 * kEmbedBytes + 6 * kLayerBytes + kNormBytes);
}

TEST_F(CompileTest, ShowUnknownVariantListsKnown) {
  Synth("org/m");
  Run(PlanFile("dus", kDusPlan));
  std::string msg = ErrorOf([&] { ShowVariant(*store_, "solar"); });
  EXPECT_THAT(msg, HasSubstr("solar"));
  EXPECT_THAT(msg, HasSubstr("dus"));
}

TEST_F(CompileTest, ResolveByRevisionAndLocalDir) {
  SynthResult m = Synth("org/m");
  const std::string rev = fs::path(m.dir).filename().string();
  ResolvedModel byrev = ResolveModel("org/m@" + rev);
  EXPECT_EQ(byrev.dir, m.dir);
  EXPECT_EQ(byrev.revision, rev);
  ResolvedModel main = ResolveModel("org/m@main");
  EXPECT_EQ(main.revision, rev);
  ResolvedModel local = ResolveModel(m.dir);
  EXPECT_EQ(local.revision, "");
  EXPECT_EQ(local.dir, m.dir);
  // A ref naming a snapshot that is not there is reported.
  testutil::WriteText(cache_ + "/models--org--m/refs/broken", "0123abcd");
  std::string msg = ErrorOf([&] { ResolveModel("org/m@broken"); });
  EXPECT_THAT(msg, HasSubstr("0123abcd"));
}

TEST(HubCacheDir, EnvironmentPrecedence) {
  testutil::ScopedEnv home("HOME", "/home/u");
  testutil::ScopedEnv hf_home("HF_HOME", "/hf/home");
  {
    testutil::ScopedEnv hub("HF_HUB_CACHE", "/hub/cache");
    EXPECT_EQ(HfHubCacheDir(), "/hub/cache");
  }
  {
    testutil::ScopedEnv hub("HF_HUB_CACHE", "");  // empty counts as unset
    EXPECT_EQ(HfHubCacheDir(), "/hf/home/hub");
    testutil::ScopedEnv no_home("HF_HOME", "");
    EXPECT_EQ(HfHubCacheDir(), "/home/u/.cache/huggingface/hub");
  }
}

TEST(DefaultVariantNameTest, StemOfPlanFile) {
  EXPECT_EQ(DefaultVariantName("examples/solar-dus.yml"), "solar-dus");
  EXPECT_EQ(DefaultVariantName("/abs/x.v2.yaml"), "x.v2");
  EXPECT_EQ(DefaultVariantName("plain"), "plain");
}

// show, its SVG and its HTML stay linear in the layers when one layer repeats
// n times: each layer lists at most kSameAsShown sharers, not n - 1 (which
// made a 10,000-slice plan's show 490 MB).
TEST_F(CompileTest, ShowOfManyRepeatsIsLinearInTheLayers) {
  Synth("org/m");
  auto plan = [&](int n) {
    std::string text = "slices:\n";
    for (int i = 0; i < n; ++i) text += "  - sources:\n    - model: org/m\n      layer_range: [1, 2]\n";
    return PlanFile("rep" + std::to_string(n), text + "merge_method: passthrough\n");
  };
  auto sizes = [&](int n) {
    Run(plan(n));
    const Json show = ShowVariant(*store_, "rep" + std::to_string(n));
    EXPECT_EQ(show["layers"].size(), static_cast<size_t>(n));
    return std::array<double, 3>{static_cast<double>(show.dump().size()),
                                 static_cast<double>(ProvenanceSvg(show).size()),
                                 static_cast<double>(ProvenanceHtml(show).size())};
  };
  const auto small = sizes(200), large = sizes(2000);
  // Bytes per layer at 2,000 layers within 1.5x of those at 200 (quadratic: ~10x).
  for (int k = 0; k < 3; ++k) EXPECT_LT(large[k] / 2000, 1.5 * small[k] / 200) << "document " << k;

  const Json show = ShowVariant(*store_, "rep2000");
  const Json& last = show["layers"][1999];
  EXPECT_EQ(last["same_as"].size(), kSameAsShown);
  EXPECT_EQ(last["same_as"][0], 0);
  EXPECT_EQ(last["same_as_count"], 1999);
  EXPECT_EQ(SameAsText(last), "0, 1, 2, 3, 4, 5, 6, 7, ... (1,999 layers)");
  EXPECT_EQ(SameAsText(show["layers"][0]), "1, 2, 3, 4, 5, 6, 7, 8, ... (1,999 layers)");
  EXPECT_THAT(ProvenanceHtml(show), HasSubstr("<td>1, 2, 3, 4, 5, 6, 7, 8, ... (1,999 layers)</td>"));
}

TEST(ParseByteSizeTest, MergekitSuffixesAndMore) {
  EXPECT_EQ(ParseByteSize("5B"), 5'000'000'000u);  // mergekit: B is billion
  EXPECT_EQ(ParseByteSize("500M"), 500'000'000u);
  EXPECT_EQ(ParseByteSize("2000000"), 2'000'000u);
  EXPECT_EQ(ParseByteSize("1.5G"), 1'500'000'000u);
  EXPECT_EQ(ParseByteSize("5k"), 5'000u);
  EXPECT_EQ(ParseByteSize("2GB"), 2'000'000'000u);
  EXPECT_EQ(ParseByteSize("2GiB"), 2'147'483'648u);
  EXPECT_EQ(ParseByteSize("1KiB"), 1024u);
  for (const char* bad : {"", "abc", "5X", "-5M", "0", "M"}) ErrorOf([&] { ParseByteSize(bad); });
}

TEST_F(CompileTest, NonLayerWeightsUseGradientStart) {
  // Current mergekit (plan.py, MergePlanner.plan_module) evaluates pre and post
  // weights with one ConfigReader(t=0); older releases used t=1 for the post
  // weights. strata follows the current code, as the issue specifies.
  Synth("org/m");
  Run(PlanFile("grad", OneSlice("org/m", 0, 4,
                                "merge_method: passthrough\n"
                                "parameters:\n"
                                "  scale: [0.5, 2.0]\n")));
  Json show = ShowVariant(*store_, "grad");
  std::map<std::string, Json> ops;
  for (const Json& t : show["tensors"]) ops[t["name"].get<std::string>()] = t["ops"];
  // Pre: t = 0 -> 0.5.
  EXPECT_EQ(ops["model.embed_tokens.weight"][0]["factor"], 0.5);
  // Layers: t = idx/3: first 0.5, last 2.0.
  EXPECT_EQ(show["layers"][0]["transforms"][0]["ops"][0]["factor"], 0.5);
  EXPECT_EQ(show["layers"][3]["transforms"][0]["ops"][0]["factor"], 2.0);
  // Post: t = 0 as well -> 0.5.
  EXPECT_EQ(ops["model.norm.weight"][0]["factor"], 0.5);
  EXPECT_EQ(ops["lm_head.weight"][0]["factor"], 0.5);
}

TEST_F(CompileTest, SourceParametersOverrideSliceAndGlobal) {
  Synth("org/m");
  Run(PlanFile("prec",
               "slices:\n"
               "  - sources:\n"
               "    - model: org/m\n"
               "      layer_range: [0, 2]\n"
               "      parameters:\n"
               "        scale:\n"
               "          - filter: q_proj\n"
               "            value: 0.25\n"
               "    parameters:\n"
               "      scale:\n"
               "        - filter: proj\n"
               "          value: 0.5\n"
               "merge_method: passthrough\n"
               "parameters:\n"
               "  scale: 3.0\n"));
  Json show = ShowVariant(*store_, "prec");
  std::map<std::string, double> factor;
  for (const Json& t : show["layers"][0]["transforms"])
    factor[t["tensor"].get<std::string>()] = t["ops"][0]["factor"].get<double>();
  // q_proj: the source's filter; other *proj: the slice's; norms: the plan's.
  EXPECT_EQ(factor["self_attn.q_proj.weight"], 0.25);
  EXPECT_EQ(factor["self_attn.k_proj.weight"], 0.5);
  EXPECT_EQ(factor["mlp.down_proj.weight"], 0.5);
  EXPECT_EQ(factor["input_layernorm.weight"], 3.0);
  EXPECT_EQ(factor.size(), 9u);
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// The shipped block-expansion plan over a 32-layer base: its 8 appended layers
// are one layer node that differs from layer 31 only in o_proj and down_proj,
// which are scale-0 nodes over layer 31's own tensors; no blob is added.
TEST_F(CompileTest, ExampleBlockExpansionAddsOnlyTwoScaleZeroNodes) {
  Synth("openchat/openchat-3.5-0106", "mistral", 32);
  Run(PlanFile("base", OneSlice("openchat/openchat-3.5-0106", 0, 32, "merge_method: passthrough\ndtype: bfloat16\n")));
  const size_t blobs_before = testutil::FilesUnder(StorePath("blobs")).size();
  CompileStats s = Run(LoadPlan(std::string(STRATA_SOURCE_DIR) + "/examples/block-expansion-40.yml"));
  EXPECT_EQ(s.layers, 40);
  EXPECT_EQ(s.distinct_layers, 33);
  EXPECT_EQ(s.blobs_written, 0u);
  // The plan text is the only new blob (the config differs only in num_hidden_layers: a second).
  EXPECT_LE(testutil::FilesUnder(StorePath("blobs")).size(), blobs_before + 2);

  Variant v = LoadVariant(*store_, *store_->GetRef("block-expansion-40"));
  ASSERT_EQ(v.layers.size(), 40u);
  for (int i = 33; i < 40; ++i) EXPECT_EQ(v.layers[i].layer, v.layers[32].layer) << i;
  EXPECT_NE(v.layers[32].layer, v.layers[31].layer);
  auto l31 = LoadLayer(*store_, v.layers[31].layer), l32 = LoadLayer(*store_, v.layers[32].layer);
  ASSERT_EQ(l31.size(), l32.size());
  for (const auto& [role, h] : l31) {
    if (role == "self_attn.o_proj.weight" || role == "mlp.down_proj.weight") {
      TensorNode n = ParseTensorNode(store_->GetNode(l32.at(role)), l32.at(role));
      EXPECT_EQ(n.op, TensorNode::Op::kScale) << role;
      EXPECT_EQ(n.factor, 0.0) << role;
      EXPECT_EQ(n.src, h) << role << " must scale layer 31's own tensor";
    } else {
      EXPECT_EQ(l32.at(role), h) << role << " must be layer 31's tensor node";
    }
  }
}

// ---------------------------------------------------------------------------
// Merge methods: recipes in the store (docs/merge_methods.md)

// float -> bf16 bits, round to nearest even (finite values only).
uint16_t FloatToBf16ByHand(float f) {
  uint32_t a;
  std::memcpy(&a, &f, 4);
  const uint32_t rest = a & 0xffffu;
  uint32_t h = a >> 16;
  if (rest > 0x8000u || (rest == 0x8000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(h);
}

TEST_F(CompileTest, LinearMergeIsARecipeOverStoredSources) {
  SynthResult a = Synth("org/a", "mistral", 4, std::nullopt, false, 1);
  SynthResult b = Synth("org/b", "mistral", 4, std::nullopt, false, 2);
  Run(PlanFile("a", OneSlice("org/a", 0, 4, "merge_method: passthrough\n")));
  Run(PlanFile("b", OneSlice("org/b", 0, 4, "merge_method: passthrough\n")));
  const size_t blobs_before = testutil::FilesUnder(StorePath("blobs")).size();
  CompileStats st = Run(PlanFile("sum",
                                 "merge_method: linear\n"
                                 "models:\n"
                                 "  - {model: org/a, parameters: {weight: 1}}\n"
                                 "  - {model: org/b, parameters: {weight: 1}}\n"
                                 "parameters: {normalize: false}\n"));
  // Every merged tensor is a node naming the two stored sources: no tensor bytes.
  EXPECT_EQ(st.blobs_written, 0u);
  EXPECT_EQ(st.bytes_read, 0u);
  EXPECT_LE(testutil::FilesUnder(StorePath("blobs")).size(), blobs_before + 2);  // plan text, config
  Variant v = LoadVariant(*store_, *store_->GetRef("sum"));
  for (const auto& [role, h] : LoadLayer(*store_, v.layers[2].layer)) {
    TensorNode n = ParseTensorNode(store_->GetNode(h), h);
    ASSERT_EQ(n.op, TensorNode::Op::kMerge) << role;
    EXPECT_STREQ(n.merge->method->name, "linear");
    EXPECT_EQ(n.merge->inputs.size(), 2u);
    EXPECT_EQ(n.merge->base, -1);
  }

  // Exported: round_bf16(1*a + 1*b), element by element (no normalize).
  Export(*store_, "sum", tmp_ / "out", ExportOptions{});
  SafetensorsFile out(tmp_ / "out/model.safetensors");
  SafetensorsFile sa(a.dir + "/model.safetensors"), sb(b.dir + "/model.safetensors");
  ASSERT_EQ(out.tensors().size(), 39u);
  uint64_t checked = 0;
  for (const TensorInfo& o : out.tensors()) {
    const TensorInfo* x = sa.Find(o.name);
    const TensorInfo* y = sb.Find(o.name);
    ASSERT_TRUE(x && y) << o.name;
    ASSERT_EQ(o.dtype, DType::kBF16);
    for (uint64_t i = 0; i < o.numel(); ++i) {
      const float sum = Bf16ToFloatByHand(Bits16(sa.Data(*x), i)) + Bf16ToFloatByHand(Bits16(sb.Data(*y), i));
      const uint16_t want = FloatToBf16ByHand(sum), got = Bits16(out.Data(o), i);
      if (got != want) {
        ADD_FAILURE() << o.name << "[" << i << "]: got 0x" << std::hex << got << ", want 0x" << want;
        break;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, (2 * kEmbedBytes + 4 * kLayerBytes + kNormBytes) / 2);
}

TEST_F(CompileTest, MergeParameterErrorsNameThePlan) {
  Synth("org/a", "mistral", 2, std::nullopt, false, 1);
  Synth("org/b", "mistral", 2, std::nullopt, false, 2);
  // A density outside (0, 1], where it was written.
  Plan dense = PlanFile("dense",
                        "merge_method: ties\n"
                        "base_model: org/a\n"
                        "models:\n"
                        "  - model: org/a\n"
                        "  - model: org/b\n"
                        "    parameters: {weight: 1, density: 1.5}\n");
  std::string msg = ErrorOf([&] { Run(dense); });
  EXPECT_THAT(msg, HasSubstr(dense.path + ":6:38"));
  EXPECT_THAT(msg, HasSubstr("outside (0, 1]"));
  // Weights that sum to 0 under normalize.
  Plan zero = PlanFile("zero",
                       "merge_method: linear\n"
                       "models:\n"
                       "  - {model: org/a, parameters: {weight: 0.5}}\n"
                       "  - {model: org/b, parameters: {weight: -0.5}}\n");
  msg = ErrorOf([&] { Run(zero); });
  EXPECT_THAT(msg, HasSubstr(zero.path + ":"));
  EXPECT_THAT(msg, HasSubstr("sum to 0"));
  EXPECT_THAT(msg, HasSubstr("normalize: false"));
  // A model's required weight missing: names the parameter, the model and a tensor.
  Plan noweight = PlanFile("noweight",
                           "merge_method: task_arithmetic\n"
                           "base_model: org/a\n"
                           "models:\n"
                           "  - model: org/a\n"
                           "  - model: org/b\n"
                           "    parameters:\n"
                           "      weight:\n"
                           "        - filter: mlp\n"
                           "          value: 1\n");
  msg = ErrorOf([&] { Run(noweight); });
  EXPECT_THAT(msg, HasSubstr("needs parameter \"weight\" for model \"org/b\""));
  EXPECT_THAT(msg, HasSubstr("model.embed_tokens.weight"));  // the first tensor the filter does not reach
  EXPECT_TRUE(store_->ListRefs().empty());
}

TEST_F(CompileTest, OnlyRandomMethodsDependOnTheSeed) {
  Synth("org/a", "mistral", 2, std::nullopt, false, 1);
  Synth("org/b", "mistral", 2, std::nullopt, false, 2);
  auto plan = [&](const std::string& method) {
    return PlanFile(method, "merge_method: " + method +
                                "\n"
                                "base_model: org/a\n"
                                "models:\n"
                                "  - model: org/a\n"
                                "  - {model: org/b, parameters: {weight: 1, density: 0.5}}\n");
  };
  auto compile = [&](const Plan& p, uint64_t seed, const std::string& name) {
    CompileOptions o;
    o.name = name;
    o.random_seed = seed;
    return Compile(*store_, p, o);
  };
  const Plan dare = plan("dare_ties"), ties = plan("ties");
  const Hash d0 = compile(dare, 0, "d0").variant, d7 = compile(dare, 7, "d7").variant;
  EXPECT_NE(d0, d7);
  EXPECT_TRUE(compile(dare, 7, "d7").ref_unchanged);  // same seed, same variant
  EXPECT_EQ(compile(ties, 0, "t0").variant, compile(ties, 7, "t7").variant);
}

TEST_F(CompileTest, BreadcrumbsThatKeepNothingWarn) {
  Synth("org/a", "mistral", 2, std::nullopt, false, 1);
  Synth("org/b", "mistral", 2, std::nullopt, false, 2);
  // gamma 0.01 of a 64-element norm is 0 elements: mergekit keeps none of its task vector.
  CompileStats st = Run(PlanFile("bc",
                                 "merge_method: breadcrumbs\n"
                                 "base_model: org/a\n"
                                 "models:\n"
                                 "  - model: org/a\n"
                                 "  - {model: org/b, parameters: {weight: 1, density: 0.9}}\n"));
  ASSERT_EQ(st.warnings.size(), 1u);
  // Two norms per layer and the final norm (64 elements); the 4096-element q/o
  // projections and up give int(0.01 * n) >= 1.
  EXPECT_THAT(st.warnings[0], HasSubstr("5 tensors (the first \"model.layers.0.input_layernorm.weight\")"));
  EXPECT_THAT(st.warnings[0], HasSubstr("gamma"));
}

TEST_F(CompileTest, MaterializeStoresMergedBytesThatGcKeepsWhileUsed) {
  Synth("org/a", "mistral", 2, std::nullopt, false, 1);
  Synth("org/b", "mistral", 2, std::nullopt, false, 2);
  Run(PlanFile("ties",
               "merge_method: ties\n"
               "base_model: org/a\n"
               "models:\n"
               "  - model: org/a\n"
               "  - {model: org/b, parameters: {weight: 0.5, density: 0.5}}\n"
               "out_dtype: float16\n"));
  Export(*store_, "ties", tmp_ / "recipe", ExportOptions{});
  const std::string recipe = testutil::ReadText(tmp_ / "recipe/model.safetensors");

  const MaterializeStats st = MaterializeVariant(*store_, "ties", MaterializeOptions{});
  EXPECT_EQ(st.tensors, 2 * 9 + 3u);
  EXPECT_EQ(st.derived, st.tensors);  // every tensor is a cast over a merge
  EXPECT_EQ(st.computed, st.derived);
  EXPECT_EQ(st.blob_bytes_written, (2 * kEmbedBytes + 2 * kLayerBytes + kNormBytes));  // f16: as many bytes as bf16
  EXPECT_EQ(MaterializeVariant(*store_, "ties", MaterializeOptions{}).computed, 0u);  // all cached now

  // Export reads the stored bytes: the same file, and every top node has an entry.
  Export(*store_, "ties", tmp_ / "mat", ExportOptions{});
  EXPECT_EQ(testutil::ReadText(tmp_ / "mat/model.safetensors"), recipe);
  Variant v = LoadVariant(*store_, *store_->GetRef("ties"));
  const Hash q = LoadLayer(*store_, v.layers[1].layer).at("self_attn.q_proj.weight");
  const TensorNode qn = ParseTensorNode(store_->GetNode(q), q);
  const std::optional<Hash> qb = store_->LookupMaterialized(q, qn.nbytes());
  ASSERT_TRUE(qb.has_value());
  EXPECT_FALSE(store_->LookupMaterialized(q, qn.nbytes() + 2).has_value());  // a size mismatch is a miss

  // gc keeps the blobs while the variant lives...
  GcOptions o;
  o.grace_s = 0;
  CollectGarbage(*store_, o);
  EXPECT_TRUE(store_->HasBlob(*qb));
  // ...a damaged entry is only a miss (export computes the recipe again)...
  testutil::WriteText(store_->MaterializedCachePath(q), "{not json");
  EXPECT_FALSE(store_->LookupMaterialized(q, qn.nbytes()).has_value());
  Export(*store_, "ties", tmp_ / "damaged", ExportOptions{});
  EXPECT_EQ(testutil::ReadText(tmp_ / "damaged/model.safetensors"), recipe);
  // ...and after rm, gc removes the blobs and the entries.
  RemoveVariants(*store_, {"ties"});
  CollectGarbage(*store_, o);
  EXPECT_FALSE(store_->HasBlob(*qb));
  EXPECT_TRUE(testutil::FilesUnder(store_->MaterializedCacheDir()).empty());
}

}  // namespace
}  // namespace strata
