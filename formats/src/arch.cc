// The architecture table, written from mergekit's architecture definitions,
// HF transformers' checkpoint layouts and configuration classes.
#include "strata/formats/arch.h"

#include <charconv>

namespace strata {
namespace {

const std::vector<RoleName> kLlamaLayer = {
    {Role::kAttnNorm, "input_layernorm.weight"},
    {Role::kQ, "self_attn.q_proj.weight"},
    {Role::kK, "self_attn.k_proj.weight"},
    {Role::kV, "self_attn.v_proj.weight"},
    {Role::kO, "self_attn.o_proj.weight"},
    {Role::kFfnNorm, "post_attention_layernorm.weight"},
    {Role::kUp, "mlp.up_proj.weight"},
    {Role::kGate, "mlp.gate_proj.weight"},
    {Role::kDown, "mlp.down_proj.weight"},
};

// mergekit's qwen2 definition lists the roles alphabetically.
const std::vector<RoleName> kQwen2Layer = {
    {Role::kAttnNorm, "input_layernorm.weight"},
    {Role::kDown, "mlp.down_proj.weight"},
    {Role::kGate, "mlp.gate_proj.weight"},
    {Role::kUp, "mlp.up_proj.weight"},
    {Role::kFfnNorm, "post_attention_layernorm.weight"},
    {Role::kKBias, "self_attn.k_proj.bias"},
    {Role::kK, "self_attn.k_proj.weight"},
    {Role::kO, "self_attn.o_proj.weight"},
    {Role::kQBias, "self_attn.q_proj.bias"},
    {Role::kQ, "self_attn.q_proj.weight"},
    {Role::kVBias, "self_attn.v_proj.bias"},
    {Role::kV, "self_attn.v_proj.weight"},
};

const std::vector<NonLayerTensor> kPre = {{"model.embed_tokens.weight", false}};
const std::vector<NonLayerTensor> kPost = {{"model.norm.weight", false, true},
                                           {"lm_head.weight", true}};

// One entry per architecture; adding an architecture is adding an entry.
// `defaults` are HF transformers' configuration-class defaults
// (configuration_llama.py, configuration_mistral.py, configuration_qwen2.py).
const std::vector<ArchInfo>& Archs() {
  static const std::vector<ArchInfo> archs = {
      {
          .hf_name = "LlamaForCausalLM",
          .model_type = "llama",
          .layer = kLlamaLayer, .pre = kPre, .post = kPost,
          .qkv_bias = false,
          .window = WindowRule::kNone,
          .defaults = {.kv_heads = std::nullopt, .max_position_embeddings = 2048, .rope_theta = 10000.0,
                       .rms_norm_eps = 1e-6, .tie_word_embeddings = false, .sliding_window = std::nullopt,
                       .use_sliding_window = false, .max_window_layers = 0},
          .synth = {.max_position_embeddings = 4096, .rms_norm_eps = 1e-5, .rope_theta = 10000.0,
                    .extra = {{"attention_bias", SynthKey::kBool, 0},
                              {"mlp_bias", SynthKey::kBool, 0},
                              {"pretraining_tp", SynthKey::kInt, 1}}},
          .gguf_arch = "llama", .gguf_permute_qk = true,
      },
      {
          .hf_name = "MistralForCausalLM",
          .model_type = "mistral",
          .layer = kLlamaLayer, .pre = kPre, .post = kPost,
          .qkv_bias = false,
          .window = WindowRule::kAllLayers,
          .defaults = {.kv_heads = 8, .max_position_embeddings = 4096 * 32, .rope_theta = 10000.0,
                       .rms_norm_eps = 1e-6, .tie_word_embeddings = false, .sliding_window = 4096,
                       .use_sliding_window = false, .max_window_layers = 0},
          .synth = {.max_position_embeddings = 32768, .rms_norm_eps = 1e-5, .rope_theta = 10000.0,
                    .extra = {{"sliding_window", SynthKey::kInt, 4096}}},
          .gguf_arch = "llama", .gguf_permute_qk = true,
      },
      {
          .hf_name = "Qwen2ForCausalLM",
          .model_type = "qwen2",
          .layer = kQwen2Layer, .pre = kPre, .post = kPost,
          .qkv_bias = true,
          .window = WindowRule::kQwen2MaxWindowLayers,
          .defaults = {.kv_heads = 32, .max_position_embeddings = 32768, .rope_theta = 10000.0,
                       .rms_norm_eps = 1e-6, .tie_word_embeddings = false, .sliding_window = 4096,
                       .use_sliding_window = false, .max_window_layers = 28},
          .synth = {.max_position_embeddings = 4096, .rms_norm_eps = 1e-6, .rope_theta = 1000000.0,
                    .extra = {{"sliding_window", SynthKey::kInt, 4096},
                              {"use_sliding_window", SynthKey::kBool, 0},
                              {"max_window_layers", SynthKey::kLayerCount, 0}}},
          .gguf_arch = "qwen2", .gguf_permute_qk = false,
      },
  };
  return archs;
}

}  // namespace

std::string LayerPrefix(int index) { return "model.layers." + std::to_string(index) + "."; }

const std::vector<ArchInfo>& AllArchs() { return Archs(); }

const ArchInfo* FindArch(std::string_view hf_name) {
  for (const ArchInfo& a : Archs())
    if (a.hf_name == hf_name) return &a;
  return nullptr;
}

const ArchInfo* FindArchByModelType(std::string_view model_type) {
  for (const ArchInfo& a : Archs())
    if (a.model_type == model_type) return &a;
  return nullptr;
}

std::string SupportedArchitectures() {
  std::string out;
  for (const ArchInfo& a : Archs()) {
    if (!out.empty()) out += ", ";
    out += a.hf_name;
  }
  return out;
}

std::optional<std::pair<int, std::string>> SplitLayerTensorName(std::string_view name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (!name.starts_with(kPrefix)) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  int index = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), index);
  if (ec != std::errc() || end == name.data() || *end != '.') return std::nullopt;
  return std::make_pair(index, std::string(end + 1, name.data() + name.size()));
}

std::optional<std::string_view> RoleTensorName(const ArchInfo& arch, Role role) {
  for (const RoleName& r : arch.layer)
    if (r.role == role) return r.name;
  return std::nullopt;
}

}  // namespace strata
