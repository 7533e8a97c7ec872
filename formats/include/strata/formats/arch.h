// The architectures strata understands, one table entry each: the tensor roles
// of a layer and the non-layer tensors in mergekit's order, how config.json is
// read (HF transformers' defaults and sliding-window rule) and what strata
// synth writes. Shared by compiler and runtime so both name tensors the same
// way; every difference between architectures lives here (formats/src/arch.cc)
// and nothing else branches on an architecture's name.
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
inline constexpr int kRoleCount = 12;
// Every role, in enum order (for loops over a layer's tensors).
inline constexpr Role kAllRoles[kRoleCount] = {Role::kAttnNorm, Role::kQ,     Role::kK,      Role::kV,
                                               Role::kO,        Role::kQBias, Role::kKBias,  Role::kVBias,
                                               Role::kFfnNorm,  Role::kGate,  Role::kUp,     Role::kDown};
// The RMSNorm weights (values near 1, one per hidden unit).
constexpr bool IsNormRole(Role r) { return r == Role::kAttnNorm || r == Role::kFfnNorm; }

struct RoleName {
  Role role;
  std::string_view name;  // without the "model.layers.N." prefix
};

struct NonLayerTensor {
  std::string_view name;
  bool optional;  // lm_head.weight: absent when embeddings are tied
  bool norm = false;  // model.norm.weight: an RMSNorm weight
};

// Which layers attend through config.json's sliding window (HF's modeling code).
enum class WindowRule {
  kNone,       // Llama: full causal attention everywhere; sliding_window is ignored
  kAllLayers,  // Mistral: sliding_window (unless null) in every layer
  // Qwen2: only when use_sliding_window is true; then the layers layer_types
  // names "sliding_attention", or without layer_types those >= max_window_layers.
  kQwen2MaxWindowLayers,
};

// The values HF's configuration class (LlamaConfig, ...) gives keys that
// config.json leaves out. A key present as null is not "left out" where HF
// tells them apart (num_key_value_heads: null means num_attention_heads;
// sliding_window: null means no window).
struct ConfigDefaults {
  std::optional<int> kv_heads;  // nullopt: num_attention_heads
  int max_position_embeddings = 0;
  double rope_theta = 10000, rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  std::optional<int> sliding_window;  // for kAllLayers / kQwen2MaxWindowLayers
  bool use_sliding_window = false;    // kQwen2MaxWindowLayers
  int max_window_layers = 0;          // kQwen2MaxWindowLayers
};

// A config.json key strata synth writes for this architecture only.
struct SynthKey {
  enum Kind { kInt, kBool, kLayerCount };  // kLayerCount: num_hidden_layers
  std::string_view key;
  Kind kind;
  int value = 0;  // kInt: the number; kBool: 0 or 1
};

// What strata synth writes into config.json beyond the shape (it follows what
// the architecture's released checkpoints carry, not always HF's defaults).
struct SynthConfig {
  int max_position_embeddings = 0;  // unless the preset sets its own
  double rms_norm_eps = 1e-5, rope_theta = 10000;
  std::vector<SynthKey> extra;  // in this order, after rope_theta
};

struct ArchInfo {
  std::string_view hf_name;     // config.json architectures[0]
  std::string_view model_type;  // config.json model_type; also synth's --arch
  std::vector<RoleName> layer;  // mergekit's template order (export writes in it)
  std::vector<NonLayerTensor> pre;   // before the layers
  std::vector<NonLayerTensor> post;  // after the layers
  bool qkv_bias = false;  // q/k/v projections carry biases (the kQBias.. roles are in `layer`)
  WindowRule window = WindowRule::kNone;
  ConfigDefaults defaults;
  SynthConfig synth;
  // GGUF: llama.cpp's architecture name, and whether its converter permutes
  // the rows of q_proj and k_proj (LlamaModel.permute) for it.
  std::string_view gguf_arch;
  bool gguf_permute_qk = false;
};

// The prefix of layer `index`'s tensors: "model.layers.<index>.".
std::string LayerPrefix(int index);
// Every supported architecture, in table order.
const std::vector<ArchInfo>& AllArchs();
// Returns nullptr when `hf_name` is not a supported architecture.
const ArchInfo* FindArch(std::string_view hf_name);
// By config.json's model_type ("llama", ...); nullptr when none has it.
const ArchInfo* FindArchByModelType(std::string_view model_type);
// "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM", for error messages.
std::string SupportedArchitectures();
// Splits "model.layers.12.mlp.up_proj.weight" into (12, "mlp.up_proj.weight");
// nullopt for a tensor that is not inside a layer.
std::optional<std::pair<int, std::string>> SplitLayerTensorName(std::string_view name);
// Returns the role's name in `arch`, or nullopt when the arch has no such role.
std::optional<std::string_view> RoleTensorName(const ArchInfo& arch, Role role);

}  // namespace strata
