// config.json validation: every value strata reads is type- and range-checked
// with an Error that names the key; nothing else escapes (no nlohmann
// type_error, no NaN-producing values accepted).
#include "strata/formats/model_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "strata/formats/error.h"

namespace strata {
namespace {

using J = nlohmann::ordered_json;
using ::testing::HasSubstr;

J Mistral() {
  return J::parse(R"({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": false,
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})");
}

// The message of the Error ParseModelConfig throws for `j`, "" when it accepts.
std::string Problem(const J& j) {
  try {
    ParseModelConfig(j);
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a strata::Error: " << e.what();
    return e.what();
  }
  return "";
}

TEST(ModelConfig, RealConfigsAreAccepted) {
  ModelConfig c = ParseModelConfig(Mistral());
  EXPECT_EQ(c.layers, 4);
  EXPECT_EQ(c.window, std::vector<int>(4, 4096));
  J llama3 = Mistral();
  llama3["architectures"] = {"LlamaForCausalLM"};
  llama3["rope_scaling"] = J::parse(
      R"({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192, "rope_type": "llama3"})");
  llama3["eos_token_id"] = {128001, 128008, 128009};
  llama3["attention_bias"] = false;
  llama3["sliding_window"] = nullptr;
  EXPECT_EQ(Problem(llama3), "");
  J qwen = Mistral();
  qwen["architectures"] = {"Qwen2ForCausalLM"};
  qwen["use_sliding_window"] = false;
  qwen["max_window_layers"] = 28;
  qwen["rope_scaling"] = nullptr;
  EXPECT_EQ(Problem(qwen), "");
}

struct Case {
  const char* key;
  const char* value;  // JSON; "DELETE" removes the key
  const char* expect;  // substring of the message
};

class BadConfig : public ::testing::TestWithParam<Case> {};

TEST_P(BadConfig, IsAnErrorNamingTheKey) {
  const Case& c = GetParam();
  J j = Mistral();
  std::string key = c.key;
  J* target = &j;
  if (auto dot = key.find('.'); dot != std::string::npos) {
    j[key.substr(0, dot)] = J::parse(R"({"rope_type": "llama3", "factor": 8.0})");
    target = &j[key.substr(0, dot)];
    key = key.substr(dot + 1);
  }
  if (std::string(c.value) == "DELETE") target->erase(key);
  else (*target)[key] = J::parse(c.value);
  std::string p = Problem(j);
  EXPECT_THAT(p, HasSubstr(c.expect)) << c.key << " = " << c.value;
  EXPECT_THAT(p, HasSubstr("config.json")) << c.key << " = " << c.value;
}

INSTANTIATE_TEST_SUITE_P(
    Hostile, BadConfig,
    ::testing::Values(
        Case{"rope_theta", R"("abc")", "\"rope_theta\" is \"abc\"; it must be a finite number > 0"},
        Case{"rope_theta", "null", "\"rope_theta\" is null"},
        Case{"rope_theta", "0", "finite number > 0"},
        Case{"rope_theta", "-5", "finite number > 0"},
        Case{"rms_norm_eps", R"("tiny")", "\"rms_norm_eps\""},
        Case{"rms_norm_eps", "-1e-6", "\"rms_norm_eps\""},
        Case{"tie_word_embeddings", R"("yes")", "must be true or false"},
        Case{"rope_scaling", R"("linear")", "\"rope_scaling\" is \"linear\"; it must be an object"},
        Case{"rope_scaling.factor", R"("8")", "\"factor\""},
        Case{"rope_scaling.factor", "0", "\"factor\""},
        Case{"rope_scaling.low_freq_factor", R"("1")", "\"low_freq_factor\""},
        Case{"rope_scaling.high_freq_factor", "0.5", "must be greater than low_freq_factor"},
        Case{"rope_scaling.rope_type", R"("yarn")", "\"yarn\" is not supported"},
        Case{"hidden_act", R"("gelu")", "hidden_act \"gelu\" is not supported"},
        Case{"hidden_act", "3", "\"hidden_act\" is 3"},
        Case{"sliding_window", R"("4096")", "\"sliding_window\" is \"4096\""},
        Case{"sliding_window", "-1", "\"sliding_window\""},
        Case{"num_hidden_layers", "1000000000000000000", "from 1 to 65536"},
        Case{"num_hidden_layers", "1e18", "from 1 to 65536"},
        Case{"num_hidden_layers", "0", "from 1 to 65536"},
        Case{"num_hidden_layers", "DELETE", "\"num_hidden_layers\" is missing"},
        Case{"hidden_size", "4.5", "\"hidden_size\" is 4.5"},
        Case{"num_key_value_heads", "3", "not divisible by num_key_value_heads"},
        Case{"architectures", R"("MistralForCausalLM")", "must be a list naming the model class"},
        Case{"architectures", "[]", "must be a list naming the model class"},
        Case{"architectures", R"(["GPT2LMHeadModel"])", "not supported"},
        Case{"attention_bias", "true", "not supported"},
        Case{"eos_token_id", R"("</s>")", "\"eos_token_id\""},
        Case{"bos_token_id", "[1, 2]", "one token id"},
        Case{"use_sliding_window", R"("no")", "\"use_sliding_window\""}));

TEST(ModelConfig, NotAnObject) {
  EXPECT_THAT(Problem(J::parse("[1]")), HasSubstr("not a JSON object"));
  EXPECT_THAT(Problem(J::parse("\"x\"")), HasSubstr("not a JSON object"));
}

TEST(ModelConfig, RoleShapesFollowTheConfig) {
  ModelConfig c = ParseModelConfig(Mistral());
  EXPECT_EQ(RoleShape(c, Role::kQ), (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(RoleShape(c, Role::kK), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(RoleShape(c, Role::kDown), (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(*NonLayerShape(c, "lm_head.weight"), (std::vector<int64_t>{256, 64}));
  EXPECT_FALSE(NonLayerShape(c, "model.other.weight"));
}

}  // namespace
}  // namespace strata
