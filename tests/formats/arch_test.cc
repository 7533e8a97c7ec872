// The architecture table drives how config.json is read: each entry's
// sliding-window rule, biases and defaults give HF transformers' behaviour.
// The expectations are written from HF's configuration and modeling classes
// (configuration_{llama,mistral,qwen2}.py, Mistral/Qwen2 attention masks),
// not from arch.cc:
//   Llama:   no sliding window whatever the keys say; no q/k/v biases;
//            num_key_value_heads defaults to num_attention_heads;
//            max_position_embeddings 2048.
//   Mistral: sliding_window (default 4096; null: none) in every layer;
//            use_sliding_window / max_window_layers / layer_types are not read;
//            num_key_value_heads defaults to 8; max_position_embeddings 4096*32.
//   Qwen2:   q/k/v biases; the window only with use_sliding_window (default
//            false), then in layers >= max_window_layers (default 28), or in the
//            layers layer_types marks "sliding_attention"; num_key_value_heads
//            defaults to 32; max_position_embeddings 32768.
//   All:     rope_theta 10000, rms_norm_eps 1e-6, tie_word_embeddings false;
//            num_key_value_heads: null means num_attention_heads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "strata/formats/arch.h"
#include "strata/formats/error.h"
#include "strata/formats/model_config.h"

namespace strata {
namespace {

using J = nlohmann::ordered_json;
using ::testing::HasSubstr;

// A config with only the keys without a default: everything else is the
// architecture's to fill in. 64 heads so every kv-head default divides them.
J Minimal(const std::string& arch, int layers = 4) {
  J j;
  j["architectures"] = {arch};
  j["hidden_size"] = 64 * 16;
  j["intermediate_size"] = 128;
  j["num_hidden_layers"] = layers;
  j["num_attention_heads"] = 64;
  j["vocab_size"] = 256;
  return j;
}

J With(J j, const J& keys) {
  for (auto& [k, v] : keys.items()) j[k] = v;
  return j;
}

std::vector<int> Window(const J& j) { return ParseModelConfig(j).window; }

std::string Problem(const J& j) {
  try {
    ParseModelConfig(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::set<Role> Roles(const ArchInfo& a) {
  std::set<Role> out;
  for (const RoleName& r : a.layer) out.insert(r.role);
  return out;
}

TEST(ArchTable, HoldsTheThreeArchitectures) {
  ASSERT_EQ(AllArchs().size(), 3u);
  for (const char* name : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}) {
    const ArchInfo* a = FindArch(name);
    ASSERT_NE(a, nullptr) << name;
    EXPECT_EQ(FindArchByModelType(a->model_type), a);
    EXPECT_THAT(SupportedArchitectures(), HasSubstr(name));
  }
  EXPECT_EQ(FindArch("llama"), nullptr);
  EXPECT_EQ(FindArchByModelType("LlamaForCausalLM"), nullptr);
  EXPECT_EQ(FindArch("MistralForCausalLM")->model_type, "mistral");
  EXPECT_EQ(FindArch("Qwen2ForCausalLM")->model_type, "qwen2");
  EXPECT_EQ(FindArch("LlamaForCausalLM")->model_type, "llama");
}

TEST(ArchTable, EachLayerRoleOnceAndBiasesWhereTheFlagSaysSo) {
  const std::set<Role> base = {Role::kAttnNorm, Role::kQ, Role::kK, Role::kV, Role::kO,
                               Role::kFfnNorm, Role::kGate, Role::kUp, Role::kDown};
  std::set<Role> biased = base;
  biased.insert({Role::kQBias, Role::kKBias, Role::kVBias});
  for (const ArchInfo& a : AllArchs()) {
    EXPECT_EQ(Roles(a).size(), a.layer.size()) << a.hf_name << ": a role listed twice";
    EXPECT_EQ(Roles(a), a.qkv_bias ? biased : base) << a.hf_name;
    std::set<std::string_view> names;
    for (const RoleName& r : a.layer) names.insert(r.name);
    EXPECT_EQ(names.size(), a.layer.size()) << a.hf_name << ": a tensor name listed twice";
  }
  EXPECT_FALSE(FindArch("LlamaForCausalLM")->qkv_bias);
  EXPECT_FALSE(FindArch("MistralForCausalLM")->qkv_bias);
  EXPECT_TRUE(FindArch("Qwen2ForCausalLM")->qkv_bias);
  EXPECT_EQ(*RoleTensorName(*FindArch("Qwen2ForCausalLM"), Role::kKBias), "self_attn.k_proj.bias");
  EXPECT_FALSE(RoleTensorName(*FindArch("MistralForCausalLM"), Role::kKBias));
}

TEST(ArchTable, AllRolesIsEveryRoleInEnumOrder) {
  for (int i = 0; i < kRoleCount; ++i) EXPECT_EQ(static_cast<int>(kAllRoles[i]), i);
  EXPECT_EQ(static_cast<int>(Role::kDown), kRoleCount - 1);
  EXPECT_TRUE(IsNormRole(Role::kAttnNorm));
  EXPECT_TRUE(IsNormRole(Role::kFfnNorm));
  EXPECT_FALSE(IsNormRole(Role::kQ));
}

TEST(ArchConfig, BiasShapesFollowTheHeads) {
  J q = With(Minimal("Qwen2ForCausalLM"), {{"num_key_value_heads", 16}});
  ModelConfig c = ParseModelConfig(q);
  EXPECT_EQ(RoleShape(c, Role::kQBias), (std::vector<int64_t>{64 * 16}));
  EXPECT_EQ(RoleShape(c, Role::kKBias), (std::vector<int64_t>{16 * 16}));
  EXPECT_EQ(RoleShape(c, Role::kVBias), (std::vector<int64_t>{16 * 16}));
}

TEST(ArchConfig, LlamaNeverSlides) {
  const J llama = Minimal("LlamaForCausalLM");
  EXPECT_EQ(Window(llama), std::vector<int>(4, 0));
  EXPECT_EQ(Window(With(llama, {{"sliding_window", 8}, {"use_sliding_window", true}, {"max_window_layers", 0}})),
            std::vector<int>(4, 0));
}

TEST(ArchConfig, MistralSlidesInEveryLayer) {
  const J m = Minimal("MistralForCausalLM");
  EXPECT_EQ(Window(m), std::vector<int>(4, 4096));  // MistralConfig's default
  EXPECT_EQ(Window(With(m, {{"sliding_window", 8}})), std::vector<int>(4, 8));
  EXPECT_EQ(Window(With(m, {{"sliding_window", nullptr}})), std::vector<int>(4, 0));  // v0.2+: null
  // Qwen2's keys mean nothing to Mistral.
  EXPECT_EQ(Window(With(m, {{"sliding_window", 8}, {"use_sliding_window", false}, {"max_window_layers", 2}})),
            std::vector<int>(4, 8));
  EXPECT_EQ(Window(With(m, {{"sliding_window", 8},
                            {"layer_types", {"full_attention", "full_attention", "full_attention", "full_attention"}}})),
            std::vector<int>(4, 8));
}

TEST(ArchConfig, Qwen2SlidesOnlyWhenAskedAndFromMaxWindowLayers) {
  const J q = With(Minimal("Qwen2ForCausalLM"), {{"sliding_window", 8}});
  EXPECT_EQ(Window(Minimal("Qwen2ForCausalLM")), std::vector<int>(4, 0));  // use_sliding_window defaults to false
  EXPECT_EQ(Window(With(q, {{"use_sliding_window", false}, {"max_window_layers", 0}})), std::vector<int>(4, 0));
  EXPECT_EQ(Window(With(q, {{"use_sliding_window", true}, {"max_window_layers", 2}})), (std::vector<int>{0, 0, 8, 8}));
  EXPECT_EQ(Window(With(q, {{"use_sliding_window", true}, {"max_window_layers", 0}})), std::vector<int>(4, 8));
  EXPECT_EQ(Window(With(q, {{"use_sliding_window", true}, {"max_window_layers", 4}})), std::vector<int>(4, 0));
  EXPECT_EQ(Window(With(q, {{"use_sliding_window", true}, {"sliding_window", nullptr}, {"max_window_layers", 0}})),
            std::vector<int>(4, 0));
  // Left out, max_window_layers is 28 and sliding_window 4096.
  std::vector<int> want(30, 0);
  want[28] = want[29] = 8;
  EXPECT_EQ(Window(With(Minimal("Qwen2ForCausalLM", 30), {{"sliding_window", 8}, {"use_sliding_window", true}})), want);
  want[28] = want[29] = 4096;
  EXPECT_EQ(Window(With(Minimal("Qwen2ForCausalLM", 30), {{"use_sliding_window", true}})), want);
}

TEST(ArchConfig, Qwen2LayerTypesOverrideMaxWindowLayers) {
  const J q = With(Minimal("Qwen2ForCausalLM"), {{"sliding_window", 8}, {"use_sliding_window", true},
                                                 {"max_window_layers", 0}});
  const J types = {"full_attention", "sliding_attention", "full_attention", "sliding_attention"};
  EXPECT_EQ(Window(With(q, {{"layer_types", types}})), (std::vector<int>{0, 8, 0, 8}));
  EXPECT_EQ(Window(With(q, {{"layer_types", nullptr}})), std::vector<int>(4, 8));
  EXPECT_THAT(Problem(With(q, {{"use_sliding_window", false}, {"layer_types", types}})),
              HasSubstr("sliding_attention in layer 1"));
  EXPECT_THAT(Problem(With(q, {{"layer_types", {"full_attention"}}})), HasSubstr("\"layer_types\""));
  EXPECT_THAT(Problem(With(q, {{"layer_types", {"full_attention", "x", "full_attention", "full_attention"}}})),
              HasSubstr("\"layer_types\""));
}

TEST(ArchConfig, KvHeadsDefaultPerArchitectureAndNullMeansHeads) {
  EXPECT_EQ(ParseModelConfig(Minimal("LlamaForCausalLM")).kv_heads, 64);
  EXPECT_EQ(ParseModelConfig(Minimal("MistralForCausalLM")).kv_heads, 8);
  EXPECT_EQ(ParseModelConfig(Minimal("Qwen2ForCausalLM")).kv_heads, 32);
  for (const char* a : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}) {
    EXPECT_EQ(ParseModelConfig(With(Minimal(a), {{"num_key_value_heads", nullptr}})).kv_heads, 64) << a;
    EXPECT_EQ(ParseModelConfig(With(Minimal(a), {{"num_key_value_heads", 4}})).kv_heads, 4) << a;
  }
}

TEST(ArchConfig, OtherDefaults) {
  struct Want {
    const char* arch;
    int max_position_embeddings;
  };
  for (const Want& w : {Want{"LlamaForCausalLM", 2048}, Want{"MistralForCausalLM", 131072},
                        Want{"Qwen2ForCausalLM", 32768}}) {
    ModelConfig c = ParseModelConfig(Minimal(w.arch));
    EXPECT_EQ(c.arch, FindArch(w.arch));
    EXPECT_EQ(c.max_position_embeddings, w.max_position_embeddings) << w.arch;
    EXPECT_EQ(c.rope_theta, 10000.0) << w.arch;
    EXPECT_EQ(c.rms_norm_eps, 1e-6) << w.arch;
    EXPECT_FALSE(c.tie_word_embeddings) << w.arch;
    EXPECT_EQ(c.head_dim, 16) << w.arch;
    ModelConfig set = ParseModelConfig(With(Minimal(w.arch), {{"max_position_embeddings", 77},
                                                               {"rope_theta", 5e5},
                                                               {"rms_norm_eps", 1e-5},
                                                               {"tie_word_embeddings", true}}));
    EXPECT_EQ(set.max_position_embeddings, 77);
    EXPECT_EQ(set.rope_theta, 5e5);
    EXPECT_EQ(set.rms_norm_eps, 1e-5);
    EXPECT_TRUE(set.tie_word_embeddings);
  }
}

}  // namespace
}  // namespace strata
