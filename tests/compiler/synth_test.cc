// strata synth per architecture: the config.json it writes reads back (through
// the one parser, ParseModelConfig) as the architecture it names, with that
// architecture's window rule and biases, and the tensors are the table's.
#include "strata/compiler/synth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "strata/formats/arch.h"
#include "strata/formats/hf_checkpoint.h"
#include "strata/formats/model_config.h"
#include "strata/formats/safetensors.h"
#include "test_util.h"

namespace strata {
namespace {

using ::testing::HasSubstr;
using testutil::ErrorOf;
using testutil::ScopedTempDir;

struct Synthed {
  OrderedJson config;
  std::vector<std::string> tensors;
};

Synthed SynthTiny(const std::string& arch, int layers, const std::string& preset = "tiny") {
  ScopedTempDir tmp;
  SynthSpec s;
  s.arch = arch;
  s.preset = preset;
  s.layers = layers;
  if (preset != "tiny") s.hidden = 64, s.heads = 4, s.kv_heads = 2, s.intermediate = 128, s.vocab = 256;
  const std::string dir = tmp / "m";
  SynthToDir(s, dir);
  Synthed out{ReadConfigJson(dir + "/config.json"), {}};
  SafetensorsFile f(dir + "/model.safetensors");
  for (const TensorInfo& t : f.tensors()) out.tensors.push_back(t.name);
  return out;
}

bool Has(const Synthed& s, const std::string& name) {
  return std::find(s.tensors.begin(), s.tensors.end(), name) != s.tensors.end();
}

TEST(Synth, EachArchitectureReadsBackWithItsRules) {
  Synthed llama = SynthTiny("llama", 3), mistral = SynthTiny("mistral", 3), qwen = SynthTiny("qwen2", 3);
  ModelConfig l = ParseModelConfig(llama.config), m = ParseModelConfig(mistral.config),
              q = ParseModelConfig(qwen.config);
  EXPECT_EQ(l.arch->hf_name, "LlamaForCausalLM");
  EXPECT_EQ(m.arch->hf_name, "MistralForCausalLM");
  EXPECT_EQ(q.arch->hf_name, "Qwen2ForCausalLM");
  EXPECT_EQ(llama.config["model_type"], "llama");
  EXPECT_EQ(mistral.config["model_type"], "mistral");
  EXPECT_EQ(qwen.config["model_type"], "qwen2");
  // Mistral-7B-v0.1 slides 4096 in every layer; Qwen2 writes the window off.
  EXPECT_EQ(l.window, std::vector<int>(3, 0));
  EXPECT_EQ(m.window, std::vector<int>(3, 4096));
  EXPECT_EQ(q.window, std::vector<int>(3, 0));
  EXPECT_EQ(qwen.config["use_sliding_window"], false);
  EXPECT_EQ(qwen.config["max_window_layers"], 3);
  EXPECT_FALSE(llama.config.contains("sliding_window"));
  EXPECT_EQ(llama.config["attention_bias"], false);
  EXPECT_EQ(q.rope_theta, 1e6);
  EXPECT_EQ(q.rms_norm_eps, 1e-6);
  EXPECT_EQ(m.rms_norm_eps, 1e-5);
  EXPECT_EQ(m.max_position_embeddings, 32768);
  EXPECT_EQ(l.max_position_embeddings, 4096);
  // Biases only where the table has them; every layer holds its table's roles.
  for (const Synthed* s : {&llama, &mistral, &qwen}) {
    const ArchInfo& a = *ParseModelConfig(s->config).arch;
    EXPECT_EQ(s->tensors.size(), 3 * a.layer.size() + 3) << a.hf_name;
    for (int layer = 0; layer < 3; ++layer)
      for (const RoleName& r : a.layer) EXPECT_TRUE(Has(*s, LayerPrefix(layer) + std::string(r.name))) << r.name;
    EXPECT_EQ(Has(*s, "model.layers.0.self_attn.q_proj.bias"), a.qkv_bias) << a.hf_name;
  }
  EXPECT_TRUE(Has(qwen, "model.layers.2.self_attn.v_proj.bias"));
  EXPECT_FALSE(Has(mistral, "model.layers.0.self_attn.k_proj.bias"));
}

TEST(Synth, PresetSetsItsOwnContextLength) {
  // mistral-7b's 32768 positions whatever the architecture (shapes overridden to stay small).
  for (const char* arch : {"llama", "mistral", "qwen2"})
    EXPECT_EQ(SynthTiny(arch, 1, "mistral-7b").config["max_position_embeddings"], 32768) << arch;
  EXPECT_EQ(SynthTiny("qwen2", 1, "small").config["max_position_embeddings"], 4096);
}

TEST(Synth, UnknownArchOrPresetListsTheTables) {
  ScopedTempDir tmp;
  SynthSpec s;
  s.arch = "gpt2";
  EXPECT_THAT(ErrorOf([&] { SynthToDir(s, tmp / "a"); }),
              HasSubstr("unknown --arch \"gpt2\"; use llama, mistral or qwen2"));
  s.arch = "qwen2";
  s.preset = "huge";
  EXPECT_THAT(ErrorOf([&] { SynthToDir(s, tmp / "b"); }),
              HasSubstr("unknown --preset \"huge\"; use tiny, small or mistral-7b"));
}

}  // namespace
}  // namespace strata
