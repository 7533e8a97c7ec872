// config.json -> ModelConfig, following transformers' configuration classes,
// with every value strata reads type- and range-checked.
#include "strata/formats/model_config.h"

#include <cmath>
#include <cstdint>

#include "strata/formats/error.h"

namespace strata {

namespace {

using J = nlohmann::ordered_json;

[[noreturn]] void Bad(const char* key, const J& v, const std::string& want) {
  throw Error(std::string("config.json: \"") + key + "\" is " + v.dump() + "; it must be " + want +
              ". Fix config.json of the source model and compile again");
}

// The value of `key`, or nullptr when it is absent or null.
const J* Find(const J& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

int Int(const J& j, const char* key, int64_t lo, int64_t hi, std::optional<int> def = std::nullopt) {
  const J* v = Find(j, key);
  if (!v) {
    if (def) return *def;
    throw Error(std::string("config.json: \"") + key + "\" is missing; it must be an integer from " +
                std::to_string(lo) + " to " + std::to_string(hi));
  }
  bool ok = v->is_number_integer() &&
            (v->is_number_unsigned() ? v->get<uint64_t>() <= static_cast<uint64_t>(hi) &&
                                           v->get<uint64_t>() >= static_cast<uint64_t>(lo)
                                     : v->get<int64_t>() <= hi && v->get<int64_t>() >= lo);
  if (!ok) Bad(key, *v, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return static_cast<int>(v->get<int64_t>());
}

// A finite number > 0 (or >= 0 with `allow_zero`).
double Positive(const J& j, const char* key, double def, bool allow_zero = false) {
  const J* v = Find(j, key);
  if (!v) {
    if (j.contains(key)) Bad(key, J(nullptr), "a positive number (leave it out for the default)");
    return def;
  }
  if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < 0 ||
      (!allow_zero && v->get<double>() == 0))
    Bad(key, *v, allow_zero ? "a finite number >= 0" : "a finite number > 0");
  return v->get<double>();
}

bool Bool(const J& j, const char* key, bool def) {
  const J* v = Find(j, key);
  if (!v) return def;
  if (!v->is_boolean()) Bad(key, *v, "true or false");
  return v->get<bool>();
}

std::string String(const J& j, const char* key, const std::string& def) {
  const J* v = Find(j, key);
  if (!v) return def;
  if (!v->is_string()) Bad(key, *v, "a string");
  return v->get<std::string>();
}

std::vector<int> IdList(const J& j, const char* key) {
  const J* v = Find(j, key);
  std::vector<int> out;
  if (!v) return out;
  auto id = [&](const J& e) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX)
      Bad(key, *v, "a token id or a list of token ids");
    out.push_back(static_cast<int>(e.get<int64_t>()));
  };
  if (v->is_array()) {
    for (const J& e : *v) id(e);
  } else {
    id(*v);
  }
  return out;
}

std::string Architecture(const J& j) {
  const J* v = Find(j, "architectures");
  if (!v || !v->is_array() || v->empty() || !(*v)[0].is_string())
    throw Error("config.json: \"architectures\" is " + (v ? v->dump() : std::string("missing")) +
                "; it must be a list naming the model class, e.g. [\"MistralForCausalLM\"] (supported: " +
                SupportedArchitectures() + ")");
  return (*v)[0].get<std::string>();
}

std::optional<RopeScaling> ParseRopeScaling(const J& j) {
  const J* r = Find(j, "rope_scaling");
  if (!r) return std::nullopt;
  if (!r->is_object()) Bad("rope_scaling", *r, "an object such as {\"rope_type\": \"llama3\", \"factor\": 8.0} or null");
  RopeScaling s;
  s.type = String(*r, "rope_type", String(*r, "type", ""));
  if (s.type == "default") return std::nullopt;
  if (s.type != "llama3" && s.type != "linear")
    throw Error("config.json: rope_scaling type \"" + s.type + "\" is not supported (supported: llama3, linear)");
  s.factor = Positive(*r, "factor", 1.0);
  s.low_freq_factor = Positive(*r, "low_freq_factor", 1.0);
  s.high_freq_factor = Positive(*r, "high_freq_factor", 4.0);
  s.original_max_position_embeddings = Int(*r, "original_max_position_embeddings", 1, 1 << 30, 8192);
  if (s.type == "llama3" && !(s.high_freq_factor > s.low_freq_factor))
    throw Error("config.json: rope_scaling high_freq_factor (" + std::to_string(s.high_freq_factor) +
                ") must be greater than low_freq_factor (" + std::to_string(s.low_freq_factor) + ")");
  return s;
}

// True when `key` is present with the value null (HF tells that apart from a
// key left out for some keys: the config class's default applies only then).
bool IsNull(const J& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_null();
}

// The window of each layer, by the architecture's WindowRule. The keys are
// type-checked whatever the architecture, as before; only the rule reads them.
void SlidingWindow(const J& j, ModelConfig& c) {
  const ConfigDefaults& d = c.arch->defaults;
  c.window.assign(c.layers, 0);
  const int sw = IsNull(j, "sliding_window") ? 0 : Int(j, "sliding_window", 0, 1 << 30, d.sliding_window.value_or(0));
  const bool use = Bool(j, "use_sliding_window", d.use_sliding_window);
  const int from = Int(j, "max_window_layers", 0, 1 << 30, d.max_window_layers);
  switch (c.arch->window) {
    case WindowRule::kNone: return;
    case WindowRule::kAllLayers: c.window.assign(c.layers, sw); return;
    case WindowRule::kQwen2MaxWindowLayers: {
      const int window = use ? sw : 0;  // Qwen2Config: sliding_window = None unless use_sliding_window
      const J* types = Find(j, "layer_types");
      if (!types) {
        for (int l = from; l < c.layers; ++l) c.window[l] = window;
        return;
      }
      if (!types->is_array() || types->size() != static_cast<size_t>(c.layers))
        Bad("layer_types", *types, "a list of " + std::to_string(c.layers) +
                                       " (num_hidden_layers) \"full_attention\" or \"sliding_attention\" entries");
      for (int l = 0; l < c.layers; ++l) {
        const J& t = (*types)[l];
        if (t == "full_attention") continue;
        if (t != "sliding_attention")
          Bad("layer_types", *types, "a list of \"full_attention\" or \"sliding_attention\" entries");
        if (window == 0)
          throw Error("config.json: \"layer_types\" asks for sliding_attention in layer " + std::to_string(l) +
                      " but there is no window (use_sliding_window is false or sliding_window is null or 0)");
        c.window[l] = window;
      }
      return;
    }
  }
}

// Features of these configs that strata does not compute: refusing beats
// running a different model silently.
void Unsupported(const J& j) {
  std::string act = String(j, "hidden_act", "silu");
  if (act != "silu" && act != "swish")
    throw Error("config.json: hidden_act \"" + act + "\" is not supported; strata runs SiLU (\"silu\") MLPs");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (Bool(j, key, false)) throw Error(std::string("config.json: \"") + key + "\": true is not supported by strata");
}

}  // namespace

ModelConfig ParseModelConfig(const J& j) {
  if (!j.is_object()) throw Error("config.json is " + std::string(j.type_name()) + ", not a JSON object");
  ModelConfig c;
  const std::string arch = Architecture(j);
  c.arch = FindArch(arch);
  if (!c.arch) throw Error("config.json: architecture \"" + arch + "\" is not supported; supported: " + SupportedArchitectures());
  Unsupported(j);
  c.hidden = Int(j, "hidden_size", 1, 1 << 20);
  c.layers = Int(j, "num_hidden_layers", 1, 1 << 16);
  c.heads = Int(j, "num_attention_heads", 1, 1 << 14);
  const ConfigDefaults& d = c.arch->defaults;
  // Left out: the config class's default (Mistral 8, ...); null: num_attention_heads.
  c.kv_heads = Int(j, "num_key_value_heads", 1, 1 << 14,
                   IsNull(j, "num_key_value_heads") ? c.heads : d.kv_heads.value_or(c.heads));
  c.intermediate = Int(j, "intermediate_size", 1, 1 << 22);
  c.vocab = Int(j, "vocab_size", 1, 1 << 24);
  c.max_position_embeddings = Int(j, "max_position_embeddings", 1, 1 << 30, d.max_position_embeddings);
  const bool has_head_dim = Find(j, "head_dim") != nullptr;
  c.head_dim = has_head_dim ? Int(j, "head_dim", 1, 1 << 14) : c.hidden / c.heads;
  if (!has_head_dim && c.hidden % c.heads != 0)
    throw Error("config.json: hidden_size " + std::to_string(c.hidden) + " is not divisible by num_attention_heads " +
                std::to_string(c.heads));
  if (c.heads % c.kv_heads != 0)
    throw Error("config.json: num_attention_heads " + std::to_string(c.heads) +
                " is not divisible by num_key_value_heads " + std::to_string(c.kv_heads));
  if (c.head_dim % 2 != 0) throw Error("config.json: head_dim must be even for RoPE");
  c.rms_norm_eps = Positive(j, "rms_norm_eps", d.rms_norm_eps);
  c.rope_theta = Positive(j, "rope_theta", d.rope_theta);
  c.rope_scaling = ParseRopeScaling(j);
  SlidingWindow(j, c);
  c.tie_word_embeddings = Bool(j, "tie_word_embeddings", d.tie_word_embeddings);
  std::vector<int> bos = IdList(j, "bos_token_id");
  if (bos.size() > 1) Bad("bos_token_id", *Find(j, "bos_token_id"), "one token id");
  c.bos_token_id = bos.empty() ? -1 : bos[0];
  c.eos_token_ids = IdList(j, "eos_token_id");
  return c;
}

std::vector<int64_t> RoleShape(const ModelConfig& c, Role role) {
  const int64_t H = c.hidden, Q = int64_t{c.heads} * c.head_dim, KV = int64_t{c.kv_heads} * c.head_dim,
                I = c.intermediate;
  switch (role) {
    case Role::kAttnNorm: case Role::kFfnNorm: return {H};
    case Role::kQ: return {Q, H};
    case Role::kK: case Role::kV: return {KV, H};
    case Role::kO: return {H, Q};
    case Role::kQBias: return {Q};
    case Role::kKBias: case Role::kVBias: return {KV};
    case Role::kGate: case Role::kUp: return {I, H};
    case Role::kDown: return {H, I};
  }
  return {};
}

std::optional<std::vector<int64_t>> NonLayerShape(const ModelConfig& c, std::string_view name) {
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return std::vector<int64_t>{c.vocab, c.hidden};
  if (name == "model.norm.weight") return std::vector<int64_t>{c.hidden};
  return std::nullopt;
}

std::vector<double> RopeFactors(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> factors(half, 1.0);
  if (!c.rope_scaling) return factors;
  const RopeScaling& s = *c.rope_scaling;
  if (s.type == "linear") return std::vector<double>(half, s.factor);
  // llama3: long wavelengths are slowed by `factor`, short ones kept, and a
  // smooth blend between the two bands (transformers' _compute_llama3_parameters).
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const double wavelen = 2 * M_PI / (1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim));
    if (wavelen > low_wavelen) {
      factors[i] = s.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      factors[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return factors;
}

std::vector<double> RopeInvFreq(const ModelConfig& c) {
  const std::vector<double> factors = RopeFactors(c);
  std::vector<double> inv(factors.size());
  for (size_t i = 0; i < inv.size(); ++i)
    inv[i] = 1.0 / std::pow(c.rope_theta, (2.0 * static_cast<double>(i)) / c.head_dim) / factors[i];
  return inv;
}

}  // namespace strata
