// The architectures strata understands: for each, the tensor roles of a layer
// and the non-layer tensors, in mergekit's order. Shared by compiler and runtime
// so both name tensors the same way; each architecture's differences live here.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

// What a tensor inside a decoder layer does; the runtime binds by role.
enum class Role {
  kAttnNorm, kQ, kK, kV, kO, kQBias, kKBias, kVBias, kFfnNorm, kGate, kUp, kDown,
};

struct RoleName {
  Role role;
  std::string_view name;  // without the "model.layers.N." prefix
};

struct NonLayerTensor {
  std::string_view name;
  bool optional;  // lm_head.weight: absent when embeddings are tied
};

struct ArchInfo {
  std::string_view hf_name;     // config.json architectures[0]
  std::string_view model_type;  // config.json model_type
  std::vector<RoleName> layer;  // mergekit's template order (export writes in it)
  std::vector<NonLayerTensor> pre;   // before the layers
  std::vector<NonLayerTensor> post;  // after the layers
  bool qkv_bias = false;        // Qwen2
  bool sliding_window = false;  // Mistral (when config.sliding_window is set)
};

// The prefix of layer `index`'s tensors: "model.layers.<index>.".
std::string LayerPrefix(int index);
// Returns nullptr when `hf_name` is not a supported architecture.
const ArchInfo* FindArch(std::string_view hf_name);
// "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM", for error messages.
std::string SupportedArchitectures();
// Splits "model.layers.12.mlp.up_proj.weight" into (12, "mlp.up_proj.weight");
// nullopt for a tensor that is not inside a layer.
std::optional<std::pair<int, std::string>> SplitLayerTensorName(std::string_view name);
// Returns the role's name in `arch`, or nullopt when the arch has no such role.
std::optional<std::string_view> RoleTensorName(const ArchInfo& arch, Role role);

}  // namespace strata
