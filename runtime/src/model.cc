// Variant -> Model: shared weight sets, checked against config.json.
#include "strata/runtime/model.h"


#include "strata/formats/error.h"
#include "strata/formats/variant.h"
#include "strata/formats/variant_check.h"

namespace strata {

namespace {

// Shapes and roles were checked by RequireCompleteVariant; the dtypes the
// kernels read are the runtime's own rule.
void CheckDType(const HostTensor& t, const std::string& what) {
  if (!IsComputeFloat(t.dtype) || t.dtype == DType::kF64)
    throw Error(what + " is " + std::string(DTypeName(t.dtype)) + "; the runtime reads BF16, F16 and F32 weights");
}

// REQUIRES: the variant passed RequireCompleteVariant (every role present).
std::unique_ptr<WeightSet> BuildWeightSet(WeightStore& weights, const ModelConfig& c, const Hash& layer,
                                          const std::map<std::string, Hash>& roles) {
  auto ws = std::make_unique<WeightSet>();
  ws->layer = layer;
  for (const RoleName& r : c.arch->layer) {
    const HostTensor* t = &weights.Get(roles.at(std::string(r.name)));
    CheckDType(*t, "layer " + layer.Hex().substr(0, 12) + " " + std::string(r.name));
    (*ws)[r.role] = t;
  }
  return ws;
}

// Bytes a backend reads for `t`: none for an absent or all-zero tensor.
uint64_t ReadBytes(const HostTensor* t) { return t && !t->zero ? t->nbytes() : 0; }

}  // namespace

uint64_t DecodeWeightBytesPerToken(const Model& model, bool elide) {
  uint64_t n = 0;
  for (const WeightSet* ws : model.layers) {
    if (elide && ws->identity()) continue;
    for (const HostTensor* t : ws->by_role) n += ReadBytes(t);
  }
  n += ReadBytes(model.final_norm) + ReadBytes(model.lm_head);
  // The token's embedding: one row of the table (read again when it is the tied LM head).
  if (model.embed && !model.embed->zero) n += model.embed->row_bytes();
  return n;
}

Model AssembleModel(const Store& store, WeightStore& weights, const Hash& variant) {
  Variant v = LoadVariant(store, variant);
  Model m;
  {
    TensorReader reader(store);  // node metadata only: the check reads no tensor bytes
    m.config = RequireCompleteVariant(store, v, reader);
  }
  const ModelConfig& c = m.config;
  std::map<Hash, std::map<std::string, Hash>> roles;  // distinct layer -> role -> tensor
  for (const VariantLayer& l : v.layers)
    if (!roles.count(l.layer)) roles.emplace(l.layer, LoadLayer(store, l.layer));
  // Every blob checked first, in parallel, rather than one by one as loaded.
  std::vector<Hash> nodes;
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) nodes.push_back(t.node);
  for (const auto& [layer, tensors] : roles)
    for (const auto& [role, t] : tensors) nodes.push_back(t);
  weights.VerifyAll(nodes);
  for (const VariantLayer& l : v.layers) {
    auto& ws = m.weight_sets[l.layer];
    if (!ws) ws = BuildWeightSet(weights, c, l.layer, roles.at(l.layer));
    m.layers.push_back(ws.get());
  }
  std::map<std::string, Hash> named;
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) named[t.name] = t.node;
  auto get = [&](const char* name) -> const HostTensor* {
    auto it = named.find(name);
    if (it == named.end()) return nullptr;
    const HostTensor* t = &weights.Get(it->second);
    CheckDType(*t, name);
    return t;
  };
  m.embed = get("model.embed_tokens.weight");
  m.final_norm = get("model.norm.weight");
  m.lm_head = get("lm_head.weight");  // absent only when tied (RequireCompleteVariant)
  if (!m.lm_head) m.lm_head = m.embed;  // tied embeddings
  return m;
}

}  // namespace strata
