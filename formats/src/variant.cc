// Typed views of the store's nodes.
#include "strata/formats/variant.h"

#include <cctype>
#include <climits>
#include <cmath>

#include "strata/formats/error.h"

namespace strata {

namespace {

// A string field, "" when missing or of another type (callers then reject it
// with their own message); never throws nlohmann's type errors.
std::string Str(const Json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// An integer field that fits an int, `def` when missing; throws Error otherwise.
int IntField(const Json& j, const char* key, int def, const Hash& node) {
  auto it = j.find(key);
  if (it == j.end()) return def;
  if (!it->is_number_integer() || it->get<int64_t>() < INT32_MIN || it->get<int64_t>() > INT32_MAX)
    throw Error("node " + node.Hex() + ": \"" + key + "\" is " + it->dump() + ", not an integer");
  return static_cast<int>(it->get<int64_t>());
}

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
    if (!ValidTensorName(name))
      throw Error("variant " + node.Hex() + ": \"" + key + "\" names tensor " + Json(name).dump() +
                  ", which is not a valid tensor name");
    out.push_back({name, HashField(e, "tensor", node), name});
  }
  return out;
}

}  // namespace

std::vector<Hash> TensorNode::Children() const {
  if (op == Op::kScale || op == Op::kCast) return {src};
  if (op == Op::kMerge) return merge->inputs;
  return {};
}

uint64_t TensorNode::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t TensorNode::nbytes() const {
  if (op != Op::kQuant) return numel() * DTypeSize(dtype);
  return QuantRowBytes(quant, shape.at(1)) * static_cast<uint64_t>(shape.at(0));
}

std::string_view OpName(TensorNode::Op op) {
  switch (op) {
    case TensorNode::Op::kBlob: return "blob";
    case TensorNode::Op::kZeros: return "zeros";
    case TensorNode::Op::kScale: return "scale";
    case TensorNode::Op::kCast: return "cast";
    case TensorNode::Op::kQuant: return "quant";
    case TensorNode::Op::kMerge: return "merge";
  }
  return "?";
}

Json TensorNode::ToJson() const {
  Json j{{"kind", "tensor"}, {"dtype", DTypeName(dtype)}, {"shape", shape}, {"op", OpName(op)}};
  if (op == Op::kBlob || op == Op::kQuant) j["blob"] = blob.Hex();
  if (op == Op::kQuant) {
    j["quant"] = QuantTypeInfo(quant).name;
    if (from) j["from"] = from->Hex();
  }
  if (op == Op::kScale || op == Op::kCast) j["src"] = src.Hex();
  if (op == Op::kScale) j["factor"] = factor;
  if (op == Op::kMerge) j.update(merge->ToJson());
  return j;
}

TensorNode ParseTensorNode(const Json& j, const Hash& h) {
  if (!j.is_object() || Str(j, "kind") != "tensor") throw Error("node " + h.Hex() + " is not a tensor node");
  TensorNode t;
  auto dt = ParseDTypeName(Str(j, "dtype"));
  if (!dt) throw Error("tensor node " + h.Hex() + " has an unknown dtype");
  t.dtype = *dt;
  if (!j.contains("shape") || !j["shape"].is_array())
    throw Error("tensor node " + h.Hex() + " has no shape");
  // Element counts stay below 2^48 so that byte sizes never overflow.
  uint64_t numel = 1;
  for (const Json& d : j["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t{1} << 48))
      throw Error("tensor node " + h.Hex() + " has a malformed shape");
    t.shape.push_back(d.get<int64_t>());
    numel = d.get<uint64_t>() == 0 ? 0 : numel;
    if (numel > 0 && numel > (uint64_t{1} << 48) / d.get<uint64_t>())
      throw Error("tensor node " + h.Hex() + " has a shape of more than 2^48 elements");
    numel *= d.get<uint64_t>();
  }
  std::string op = Str(j, "op");
  if (op == "blob") {
    t.op = TensorNode::Op::kBlob;
    t.blob = HashField(j, "blob", h);
  } else if (op == "zeros") {
    t.op = TensorNode::Op::kZeros;
  } else if (op == "scale" || op == "cast") {
    t.op = op == "scale" ? TensorNode::Op::kScale : TensorNode::Op::kCast;
    t.src = HashField(j, "src", h);
    if (op == "scale") {
      if (!j.contains("factor") || !j["factor"].is_number() || !std::isfinite(j["factor"].get<double>()))
        throw Error("tensor node " + h.Hex() + " has no factor");
      t.factor = j["factor"].get<double>();
    }
  } else if (op == "quant") {
    t.op = TensorNode::Op::kQuant;
    t.blob = HashField(j, "blob", h);
    const auto q = ParseQuantType(Str(j, "quant"));
    if (!q) throw Error("tensor node " + h.Hex() + " has an unknown quantization type");
    t.quant = *q;
    if (t.shape.size() != 2 || t.shape[1] % QuantTypeInfo(t.quant).block_elems != 0)
      throw Error("tensor node " + h.Hex() + " is quantized but is not a matrix whose rows are whole " +
                  std::string(QuantTypeInfo(t.quant).name) + " blocks");
    if (j.contains("from")) t.from = HashField(j, "from", h);
  } else if (op == "merge") {
    t.op = TensorNode::Op::kMerge;
    t.merge = std::make_shared<const MergeSpec>(ParseMergeSpec(j, h));
  } else {
    throw Error("tensor node " + h.Hex() + " has unknown op \"" + op + "\"");
  }
  return t;
}

bool ValidFileName(std::string_view name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  for (char c : name)
    if (c < 0x21 || c > 0x7e || c == '/' || c == '\\') return false;
  return true;
}

bool ValidTensorName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  size_t start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      std::string_view part = name.substr(start, i - start);
      if (part.empty() || part == "..") return false;
      start = i + 1;
      continue;
    }
    char c = name[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  }
  return true;
}

Variant LoadVariant(const Store& store, const Hash& h) { return ParseVariant(store.GetNode(h), h); }

Variant ParseVariant(const Json& node, const Hash& h) {
  Variant v;
  v.hash = h;
  v.node = node;
  const Json& j = v.node;
  if (!j.is_object() || Str(j, "kind") != "variant") throw Error("node " + h.Hex() + " is not a variant");
  if (!j.contains("format") || j["format"] != 1)
    throw Error("variant " + h.Hex() + " has format " + j.value("format", Json(0)).dump() +
                ", which this strata does not read");
  v.arch = FindArch(Str(j, "architecture"));
  if (!v.arch) throw Error("variant " + h.Hex() + " has unsupported architecture " +
                           j.value("architecture", Json("?")).dump());
  v.pre = ParseNamed(j, "pre", h);
  v.post = ParseNamed(j, "post", h);
  if (!j.contains("layers") || !j["layers"].is_array())
    throw Error("variant " + h.Hex() + " has no layer list");
  for (const Json& l : j["layers"]) {
    if (!l.is_object()) throw Error("variant " + h.Hex() + ": malformed layer entry");
    v.layers.push_back({HashField(l, "layer", h), Str(l, "model"), IntField(l, "source_layer", 0, h),
                        IntField(l, "slice", 0, h)});
  }
  if (j.contains("files") && j["files"].is_object())
    for (auto& [name, hex] : j["files"].items()) {
      if (!ValidFileName(name))
        throw Error("variant " + h.Hex() + " lists file " + Json(name).dump() +
                    ", which is not a plain file name (a path or a control character); the store is damaged "
                    "or was crafted: run `strata verify`");
      auto fh = hex.is_string() ? Hash::FromHex(hex.get<std::string>()) : std::nullopt;
      if (!fh) throw Error("variant " + h.Hex() + ": file \"" + name + "\" has no blob hash");
      v.files[name] = *fh;
    }
  v.config = HashField(j, "config", h);
  v.plan = HashField(j, "plan", h);
  return v;
}

std::map<std::string, Hash> LoadLayer(const Store& store, const Hash& h) { return ParseLayer(store.GetNode(h), h); }

std::map<std::string, Hash> ParseLayer(const Json& j, const Hash& h) {
  if (!j.is_object() || Str(j, "kind") != "layer" || !j.contains("tensors") || !j["tensors"].is_object())
    throw Error("node " + h.Hex() + " is not a layer node");
  std::map<std::string, Hash> out;
  for (auto& [role, hex] : j["tensors"].items()) {
    if (!ValidTensorName(role))
      throw Error("layer " + h.Hex() + " has role " + Json(role).dump() + ", which is not a valid tensor name");
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
