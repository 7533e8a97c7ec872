// Variant -> Model: shared weight sets, checked against config.json.
#include "strata/runtime/model.h"

#include <set>

#include "strata/formats/error.h"
#include "strata/formats/hf_checkpoint.h"
#include "strata/formats/variant.h"

namespace strata {

namespace {

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void CheckShape(const HostTensor& t, std::vector<int64_t> want, const std::string& what) {
  if (t.shape != want)
    throw Error(what + " has shape " + ShapeStr(t.shape) + " but config.json implies " + ShapeStr(want));
  if (!IsComputeFloat(t.dtype) || t.dtype == DType::kF64)
    throw Error(what + " is " + std::string(DTypeName(t.dtype)) + "; the runtime reads BF16, F16 and F32 weights");
}

std::unique_ptr<WeightSet> BuildWeightSet(const Store& store, WeightStore& weights, const ModelConfig& c,
                                          const Hash& layer) {
  auto ws = std::make_unique<WeightSet>();
  ws->layer = layer;
  std::map<std::string, Hash> roles = LoadLayer(store, layer);
  for (const RoleName& r : c.arch->layer) {
    auto it = roles.find(std::string(r.name));
    std::string what = "layer " + layer.Hex().substr(0, 12) + " " + std::string(r.name);
    if (it == roles.end()) throw Error(what + " is missing from the layer node");
    const HostTensor* t = &weights.Get(it->second);
    const HostTensor** slot = nullptr;
    switch (r.role) {
      case Role::kAttnNorm: slot = &ws->attn_norm; break;
      case Role::kFfnNorm: slot = &ws->ffn_norm; break;
      case Role::kQ: slot = &ws->q; break;
      case Role::kK: slot = &ws->k; break;
      case Role::kV: slot = &ws->v; break;
      case Role::kO: slot = &ws->o; break;
      case Role::kQBias: slot = &ws->q_bias; break;
      case Role::kKBias: slot = &ws->k_bias; break;
      case Role::kVBias: slot = &ws->v_bias; break;
      case Role::kGate: slot = &ws->gate; break;
      case Role::kUp: slot = &ws->up; break;
      case Role::kDown: slot = &ws->down; break;
    }
    CheckShape(*t, RoleShape(c, r.role), what);
    *slot = t;
  }
  return ws;
}

// Bytes a backend reads for `t`: none for an absent or all-zero tensor.
uint64_t ReadBytes(const HostTensor* t) { return t && !t->zero ? t->numel() * DTypeSize(t->dtype) : 0; }

}  // namespace

uint64_t DecodeWeightBytesPerToken(const Model& model, bool elide) {
  uint64_t n = 0;
  for (const WeightSet* ws : model.layers) {
    if (elide && ws->identity()) continue;
    for (const HostTensor* t : {ws->attn_norm, ws->q, ws->k, ws->v, ws->o, ws->q_bias, ws->k_bias, ws->v_bias,
                                ws->ffn_norm, ws->gate, ws->up, ws->down})
      n += ReadBytes(t);
  }
  n += ReadBytes(model.final_norm) + ReadBytes(model.lm_head);
  // The token's embedding: one row of the table (read again when it is the tied LM head).
  if (model.embed && !model.embed->zero) n += static_cast<uint64_t>(model.embed->cols()) * DTypeSize(model.embed->dtype);
  return n;
}

Model AssembleModel(const Store& store, WeightStore& weights, const Hash& variant) {
  Variant v = LoadVariant(store, variant);
  Model m;
  OrderedJson cfg;
  try {
    cfg = OrderedJson::parse(store.ReadBlob(v.config));
  } catch (const nlohmann::json::exception& e) {
    throw Error("variant " + variant.Hex() + ": config.json is not valid JSON: " + e.what());
  }
  m.config = ParseModelConfig(cfg);
  const ModelConfig& c = m.config;
  if (static_cast<size_t>(c.layers) != v.layers.size())
    throw Error("variant " + variant.Hex() + ": config.json says " + std::to_string(c.layers) + " layers, the variant has " +
                std::to_string(v.layers.size()));
  // Every blob checked first, in parallel, rather than one by one as loaded.
  std::vector<Hash> nodes;
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) nodes.push_back(t.node);
  std::set<Hash> layers;
  for (const VariantLayer& l : v.layers)
    if (layers.insert(l.layer).second)
      for (const auto& [role, t] : LoadLayer(store, l.layer)) nodes.push_back(t);
  weights.VerifyAll(nodes);
  for (const VariantLayer& l : v.layers) {
    auto& ws = m.weight_sets[l.layer];
    if (!ws) ws = BuildWeightSet(store, weights, c, l.layer);
    m.layers.push_back(ws.get());
  }
  std::map<std::string, Hash> named;
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) named[t.name] = t.node;
  auto get = [&](const char* name, std::vector<int64_t> shape) -> const HostTensor* {
    auto it = named.find(name);
    if (it == named.end()) return nullptr;
    const HostTensor* t = &weights.Get(it->second);
    CheckShape(*t, shape, name);
    return t;
  };
  m.embed = get("model.embed_tokens.weight", {c.vocab, c.hidden});
  m.final_norm = get("model.norm.weight", {c.hidden});
  m.lm_head = get("lm_head.weight", {c.vocab, c.hidden});
  if (!m.embed || !m.final_norm) throw Error("variant " + variant.Hex() + " has no embeddings or final norm");
  if (!m.lm_head && !c.tie_word_embeddings)
    throw Error("variant " + variant.Hex() + " has no lm_head.weight but its config.json says tie_word_embeddings: "
                "false; run `strata verify`, then compile its plan again");
  if (!m.lm_head) m.lm_head = m.embed;  // tied embeddings
  return m;
}

}  // namespace strata
