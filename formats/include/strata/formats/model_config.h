// The model hyperparameters the forward pass needs, read from config.json
// with HF transformers' defaults and meanings. The one validation of
// config.json: compile, verify, export and the runtime all parse through it.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "strata/formats/arch.h"

namespace strata {

struct RopeScaling {
  std::string type;  // "llama3" or "linear"
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  const ArchInfo* arch = nullptr;
  int hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6, rope_theta = 10000;
  std::optional<RopeScaling> rope_scaling;
  // Sliding window per layer (0: full causal attention), by the architecture's
  // WindowRule (arch.h): Mistral applies config.sliding_window to every layer;
  // Qwen2 only when use_sliding_window is true, to the layers layer_types
  // marks "sliding_attention" or else to layers >= max_window_layers.
  std::vector<int> window;
  bool tie_word_embeddings = false;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
};

// Parses config.json; a key left out takes the architecture's HF default
// (ArchInfo::defaults: num_key_value_heads, max_position_embeddings,
// rope_theta, rms_norm_eps, tie_word_embeddings and the window keys). Throws Error ("config.json: ...") naming the key, the
// value found and the valid range when a key strata reads is missing, of the
// wrong type or out of range (rope_theta <= 0, rms_norm_eps <= 0, a rope
// factor of 0, 1e18 layers, ...), when keys are inconsistent (hidden_size not
// divisible by heads, ...), or when it asks for something strata does not run
// (an architecture, hidden_act or rope_scaling type it does not implement).
// Never throws anything but Error.
ModelConfig ParseModelConfig(const nlohmann::ordered_json& j);

// The shape config.json implies for a layer tensor of `role`, and for the
// non-layer tensors (nullopt for a name the architecture does not have).
std::vector<int64_t> RoleShape(const ModelConfig& c, Role role);
std::optional<std::vector<int64_t>> NonLayerShape(const ModelConfig& c, std::string_view name);

// What rope_scaling divides each of the head_dim / 2 RoPE frequencies by (all
// 1 without it), in double precision: llama.cpp's rope_freqs factors.
std::vector<double> RopeFactors(const ModelConfig& c);
// RoPE inverse frequencies (head_dim / 2 of them), with rope_scaling applied
// (divided by RopeFactors), in double precision.
std::vector<double> RopeInvFreq(const ModelConfig& c);

}  // namespace strata
