// Typed views of the store's nodes.
#include "strata/formats/variant.h"

#include "strata/formats/error.h"

namespace strata {

namespace {

Hash HashField(const Json& j, const char* key, const Hash& node) {
  if (!j.contains(key) || !j[key].is_string())
    throw Error("node " + node.Hex() + " has no \"" + key + "\" hash");
  auto h = Hash::FromHex(j[key].get<std::string>());
  if (!h) throw Error("node " + node.Hex() + ": \"" + key + "\" is not a hash");
  return *h;
}

std::vector<NamedTensor> ParseNamed(const Json& j, const char* key, const Hash& node) {
  std::vector<NamedTensor> out;
  if (!j.contains(key) || !j[key].is_array())
    throw Error("variant " + node.Hex() + " has no \"" + key + "\" list");
  for (const Json& e : j[key]) {
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string())
      throw Error("variant " + node.Hex() + ": malformed \"" + key + "\" entry");
    std::string name = e["name"].get<std::string>();
    out.push_back({name, HashField(e, "tensor", node), name});
  }
  return out;
}

}  // namespace

uint64_t TensorNode::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::string_view OpName(TensorNode::Op op) {
  switch (op) {
    case TensorNode::Op::kBlob: return "blob";
    case TensorNode::Op::kZeros: return "zeros";
    case TensorNode::Op::kScale: return "scale";
    case TensorNode::Op::kCast: return "cast";
  }
  return "?";
}

Json TensorNode::ToJson() const {
  Json j{{"kind", "tensor"}, {"dtype", DTypeName(dtype)}, {"shape", shape}, {"op", OpName(op)}};
  if (op == Op::kBlob) j["blob"] = blob.Hex();
  if (op == Op::kScale || op == Op::kCast) j["src"] = src.Hex();
  if (op == Op::kScale) j["factor"] = factor;
  return j;
}

TensorNode ParseTensorNode(const Json& j, const Hash& h) {
  if (j.value("kind", "") != "tensor") throw Error("node " + h.Hex() + " is not a tensor node");
  TensorNode t;
  auto dt = ParseDTypeName(j.value("dtype", ""));
  if (!dt) throw Error("tensor node " + h.Hex() + " has an unknown dtype");
  t.dtype = *dt;
  if (!j.contains("shape") || !j["shape"].is_array())
    throw Error("tensor node " + h.Hex() + " has no shape");
  for (const Json& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0)
      throw Error("tensor node " + h.Hex() + " has a malformed shape");
    t.shape.push_back(d.get<int64_t>());
  }
  std::string op = j.value("op", "");
  if (op == "blob") {
    t.op = TensorNode::Op::kBlob;
    t.blob = HashField(j, "blob", h);
  } else if (op == "zeros") {
    t.op = TensorNode::Op::kZeros;
  } else if (op == "scale" || op == "cast") {
    t.op = op == "scale" ? TensorNode::Op::kScale : TensorNode::Op::kCast;
    t.src = HashField(j, "src", h);
    if (op == "scale") {
      if (!j.contains("factor") || !j["factor"].is_number())
        throw Error("tensor node " + h.Hex() + " has no factor");
      t.factor = j["factor"].get<double>();
    }
  } else {
    throw Error("tensor node " + h.Hex() + " has unknown op \"" + op + "\"");
  }
  return t;
}

Variant LoadVariant(const Store& store, const Hash& h) {
  Variant v;
  v.hash = h;
  v.node = store.GetNode(h);
  const Json& j = v.node;
  if (j.value("kind", "") != "variant") throw Error("node " + h.Hex() + " is not a variant");
  if (j.value("format", 0) != 1)
    throw Error("variant " + h.Hex() + " has format " + j.value("format", Json(0)).dump() +
                ", which this strata does not read");
  v.arch = FindArch(j.value("architecture", ""));
  if (!v.arch) throw Error("variant " + h.Hex() + " has unsupported architecture " +
                           j.value("architecture", Json("?")).dump());
  v.pre = ParseNamed(j, "pre", h);
  v.post = ParseNamed(j, "post", h);
  if (!j.contains("layers") || !j["layers"].is_array())
    throw Error("variant " + h.Hex() + " has no layer list");
  for (const Json& l : j["layers"]) {
    if (!l.is_object()) throw Error("variant " + h.Hex() + ": malformed layer entry");
    v.layers.push_back({HashField(l, "layer", h), l.value("model", ""),
                        l.value("source_layer", 0), l.value("slice", 0)});
  }
  if (j.contains("files") && j["files"].is_object())
    for (auto& [name, hex] : j["files"].items()) {
      auto fh = hex.is_string() ? Hash::FromHex(hex.get<std::string>()) : std::nullopt;
      if (!fh) throw Error("variant " + h.Hex() + ": file \"" + name + "\" has no blob hash");
      v.files[name] = *fh;
    }
  v.config = HashField(j, "config", h);
  v.plan = HashField(j, "plan", h);
  return v;
}

std::map<std::string, Hash> LoadLayer(const Store& store, const Hash& h) {
  Json j = store.GetNode(h);
  if (j.value("kind", "") != "layer" || !j.contains("tensors") || !j["tensors"].is_object())
    throw Error("node " + h.Hex() + " is not a layer node");
  std::map<std::string, Hash> out;
  for (auto& [role, hex] : j["tensors"].items()) {
    auto th = hex.is_string() ? Hash::FromHex(hex.get<std::string>()) : std::nullopt;
    if (!th) throw Error("layer " + h.Hex() + ": role \"" + role + "\" has no tensor hash");
    out[role] = *th;
  }
  return out;
}

std::vector<NamedTensor> OutputTensors(const Store& store, const Variant& v) {
  std::vector<NamedTensor> out = v.pre;
  std::map<Hash, std::map<std::string, Hash>> layers;
  for (size_t i = 0; i < v.layers.size(); ++i) {
    auto it = layers.find(v.layers[i].layer);
    if (it == layers.end()) it = layers.emplace(v.layers[i].layer, LoadLayer(store, v.layers[i].layer)).first;
    for (const RoleName& r : v.arch->layer) {
      auto t = it->second.find(std::string(r.name));
      if (t == it->second.end()) continue;  // an optional role this layer does not have
      out.push_back({LayerPrefix(static_cast<int>(i)) + std::string(r.name), t->second,
                     LayerPrefix(v.layers[i].source_layer) + std::string(r.name)});
    }
  }
  out.insert(out.end(), v.post.begin(), v.post.end());
  return out;
}

}  // namespace strata
