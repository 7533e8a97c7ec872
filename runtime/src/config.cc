// config.json -> ModelConfig, following transformers' configuration classes.
#include "strata/runtime/config.h"

#include <cmath>

#include "strata/formats/error.h"

namespace strata {

namespace {

int RequireInt(const nlohmann::ordered_json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() <= 0)
    throw Error(std::string("config.json: \"") + key + "\" must be a positive integer");
  return j[key].get<int>();
}

std::vector<int> IdList(const nlohmann::ordered_json& v) {
  std::vector<int> out;
  if (v.is_number_integer()) out.push_back(v.get<int>());
  if (v.is_array())
    for (const auto& e : v)
      if (e.is_number_integer()) out.push_back(e.get<int>());
  return out;
}

}  // namespace

ModelConfig ParseModelConfig(const nlohmann::ordered_json& j) {
  ModelConfig c;
  std::string arch = j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty()
                         ? j["architectures"][0].get<std::string>() : "";
  c.arch = FindArch(arch);
  if (!c.arch) throw Error("config.json: architecture \"" + arch + "\" is not supported; supported: " + SupportedArchitectures());
  c.hidden = RequireInt(j, "hidden_size");
  c.layers = RequireInt(j, "num_hidden_layers");
  c.heads = RequireInt(j, "num_attention_heads");
  c.kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                   ? RequireInt(j, "num_key_value_heads") : c.heads;
  c.intermediate = RequireInt(j, "intermediate_size");
  c.vocab = RequireInt(j, "vocab_size");
  c.max_position_embeddings = RequireInt(j, "max_position_embeddings");
  c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? RequireInt(j, "head_dim") : c.hidden / c.heads;
  if (!j.contains("head_dim") && c.hidden % c.heads != 0)
    throw Error("config.json: hidden_size " + std::to_string(c.hidden) + " is not divisible by num_attention_heads " +
                std::to_string(c.heads));
  if (c.heads % c.kv_heads != 0)
    throw Error("config.json: num_attention_heads " + std::to_string(c.heads) +
                " is not divisible by num_key_value_heads " + std::to_string(c.kv_heads));
  if (c.head_dim % 2 != 0) throw Error("config.json: head_dim must be even for RoPE");
  c.rms_norm_eps = j.value("rms_norm_eps", 1e-6);
  c.rope_theta = j.value("rope_theta", 10000.0);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const auto& r = j["rope_scaling"];
    RopeScaling s;
    s.type = r.value("rope_type", r.value("type", std::string()));
    if (s.type == "default") {
    } else if (s.type == "llama3" || s.type == "linear") {
      s.factor = r.value("factor", 1.0);
      s.low_freq_factor = r.value("low_freq_factor", 1.0);
      s.high_freq_factor = r.value("high_freq_factor", 4.0);
      s.original_max_position_embeddings = r.value("original_max_position_embeddings", 8192);
      c.rope_scaling = s;
    } else {
      throw Error("config.json: rope_scaling type \"" + s.type + "\" is not supported (supported: llama3, linear)");
    }
  }
  c.window.assign(c.layers, 0);
  int sw = j.contains("sliding_window") && j["sliding_window"].is_number_integer() ? j["sliding_window"].get<int>() : 0;
  if (sw > 0 && c.arch->model_type == "mistral") c.window.assign(c.layers, sw);
  if (sw > 0 && c.arch->model_type == "qwen2" && j.value("use_sliding_window", false)) {
    int from = j.value("max_window_layers", c.layers);
    for (int l = from; l < c.layers; ++l) c.window[l] = sw;
  }
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);  // the default of all three configs
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"];
  if (j.contains("eos_token_id")) c.eos_token_ids = IdList(j["eos_token_id"]);
  return c;
}

std::vector<double> RopeInvFreq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (!c.rope_scaling) return inv;
  const RopeScaling& s = *c.rope_scaling;
  if (s.type == "linear") {
    for (double& f : inv) f /= s.factor;
    return inv;
  }
  // llama3: long wavelengths are slowed by `factor`, short ones kept, and a
  // smooth blend between the two bands (transformers' _compute_llama3_parameters).
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (double& f : inv) {
    double wavelen = 2 * M_PI / f;
    if (wavelen > low_wavelen) {
      f = f / s.factor;
    } else if (wavelen >= high_wavelen) {
      double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                      (s.high_freq_factor - s.low_freq_factor);
      f = (1 - smooth) * f / s.factor + smooth * f;
    }
  }
  return inv;
}

}  // namespace strata
