// A variant checked against its architecture's roles and its config.json.
#include "strata/formats/variant_check.h"

#include <set>

#include "strata/formats/error.h"

namespace strata {

namespace {

ModelConfig ParseConfigBytes(const std::string& bytes, const Hash& blob) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error("config.json (blob " + blob.Hex() + ") is not valid JSON");
  return ParseModelConfig(j);
}

class Checker {
 public:
  Checker(const Store& store, const Variant& v, TensorReader& r) : store_(store), v_(v), r_(r) {}
  VariantCheck Run();

 private:
  void Problem(std::string p) { out_.problems.push_back(std::move(p)); }
  void Shape(const std::string& what, const Hash& t, const std::vector<int64_t>& want);
  void Layer(size_t index, const Hash& layer);
  void NonLayer();

  const Store& store_;
  const Variant& v_;
  TensorReader& r_;
  VariantCheck out_;
  std::set<Hash> layers_seen_;
};

void Checker::Shape(const std::string& what, const Hash& t, const std::vector<int64_t>& want) {
  const TensorNode& n = r_.Node(t);
  if (n.shape != want)
    Problem(what + " has shape " + ShapeString(n.shape) + " but config.json implies " + ShapeString(want));
}

void Checker::Layer(size_t index, const Hash& layer) {
  if (!layers_seen_.insert(layer).second) return;
  const std::map<std::string, Hash> roles = LoadLayer(store_, layer);
  const std::string what = "layer " + std::to_string(index) + " (node " + layer.Hex().substr(0, 12) + ")";
  std::set<std::string> known;
  for (const RoleName& rn : v_.arch->layer) {
    const std::string name(rn.name);
    known.insert(name);
    auto it = roles.find(name);
    if (it == roles.end()) {
      Problem(what + " has no " + name + ", which every " + std::string(v_.arch->hf_name) + " layer needs");
      continue;
    }
    if (out_.config) Shape(what + " " + name, it->second, RoleShape(*out_.config, rn.role));
  }
  for (const auto& [role, t] : roles)
    if (!known.count(role))
      Problem(what + " has " + role + ", which is not a tensor of a " + std::string(v_.arch->hf_name) + " layer");
}

void Checker::NonLayer() {
  std::map<std::string, Hash> named;
  for (const auto* list : {&v_.pre, &v_.post})
    for (const NamedTensor& t : *list) {
      if (!named.emplace(t.name, t.node).second) Problem("the variant lists " + t.name + " twice");
    }
  for (const auto* list : {&v_.arch->pre, &v_.arch->post})
    for (const NonLayerTensor& w : *list) {
      const std::string name(w.name);
      auto it = named.find(name);
      const bool tied = out_.config && out_.config->tie_word_embeddings;
      if (it == named.end()) {
        if (!w.optional || !tied)
          Problem("the variant has no " + name + (w.optional ? " and its config.json says tie_word_embeddings: false" : ""));
        continue;
      }
      if (out_.config) Shape(name, it->second, *NonLayerShape(*out_.config, name));
      named.erase(it);
    }
  for (const auto& [name, t] : named)
    Problem("the variant has " + name + ", which is not a tensor of " + std::string(v_.arch->hf_name));
}

VariantCheck Checker::Run() {
  const std::string bytes = store_.ReadBlob(v_.config);  // missing or corrupt: not the variant's defect
  try {
    out_.config = ParseConfigBytes(bytes, v_.config);
  } catch (const Error& e) {
    Problem(e.what());
  }
  if (out_.config && out_.config->arch != v_.arch)
    Problem("config.json says " + std::string(out_.config->arch->hf_name) + " but the variant says " +
            std::string(v_.arch->hf_name));
  if (v_.layers.empty()) Problem("the variant has no layers");
  if (out_.config && static_cast<size_t>(out_.config->layers) != v_.layers.size())
    Problem("config.json says num_hidden_layers " + std::to_string(out_.config->layers) + " but the variant has " +
            std::to_string(v_.layers.size()) + " layers");
  for (size_t i = 0; i < v_.layers.size(); ++i) Layer(i, v_.layers[i].layer);
  NonLayer();
  return std::move(out_);
}

}  // namespace

VariantCheck CheckVariant(const Store& store, const Variant& v, TensorReader& reader) {
  return Checker(store, v, reader).Run();
}

ModelConfig LoadVariantConfig(const Store& store, const Variant& v) {
  return ParseConfigBytes(store.ReadBlob(v.config), v.config);
}

ModelConfig RequireCompleteVariant(const Store& store, const Variant& v, TensorReader& reader) {
  VariantCheck c = CheckVariant(store, v, reader);
  if (c.problems.empty()) return *c.config;
  std::string msg = "variant " + v.hash.Hex().substr(0, 12) + " is not a complete model: ";
  for (size_t i = 0; i < c.problems.size() && i < 5; ++i) msg += (i ? "; " : "") + c.problems[i];
  if (c.problems.size() > 5) msg += "; and " + std::to_string(c.problems.size() - 5) + " more";
  throw Error(msg + ". Run `strata verify`, then compile its plan again");
}

}  // namespace strata
