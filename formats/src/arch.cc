// Architecture tables, written from mergekit's architecture definitions and
// HF transformers' checkpoint layouts.
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
const std::vector<NonLayerTensor> kPost = {{"model.norm.weight", false},
                                           {"lm_head.weight", true}};

const std::vector<ArchInfo>& Archs() {
  static const std::vector<ArchInfo> archs = {
      {"LlamaForCausalLM", "llama", kLlamaLayer, kPre, kPost, false, false},
      {"MistralForCausalLM", "mistral", kLlamaLayer, kPre, kPost, false, true},
      {"Qwen2ForCausalLM", "qwen2", kQwen2Layer, kPre, kPost, true, true},
  };
  return archs;
}

}  // namespace

std::string LayerPrefix(int index) { return "model.layers." + std::to_string(index) + "."; }

const ArchInfo* FindArch(std::string_view hf_name) {
  for (const ArchInfo& a : Archs())
    if (a.hf_name == hf_name) return &a;
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
