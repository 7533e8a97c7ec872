// The model hyperparameters the forward pass needs, read from config.json
// with HF transformers' defaults and meanings.
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
  // Sliding window per layer (0: full causal attention), HF's rules: Mistral
  // applies config.sliding_window to every layer; Qwen2 only when
  // use_sliding_window is true, to layers >= max_window_layers.
  std::vector<int> window;
  bool tie_word_embeddings = false;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
};

// Parses config.json. Throws Error naming the key when a required key is
// missing or inconsistent (hidden_size not divisible by heads, ...), or the
// rope_scaling type is not supported.
ModelConfig ParseModelConfig(const nlohmann::ordered_json& j);

// RoPE inverse frequencies (head_dim / 2 of them), with rope_scaling applied,
// in double precision.
std::vector<double> RopeInvFreq(const ModelConfig& c);

}  // namespace strata
