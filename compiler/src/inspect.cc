// ls, show and du over the store.
#include "strata/compiler/inspect.h"

#include <set>

#include "strata/formats/error.h"
#include "strata/formats/materialize.h"
#include "strata/formats/variant.h"

namespace strata {

namespace {

// The ops from a tensor node down to its stored bytes, outermost first.
Json Ops(TensorReader& r, const Hash& h) {
  Json ops = Json::array();
  for (Hash cur = h;;) {
    const TensorNode& n = r.Node(cur);
    Json op{{"op", OpName(n.op)}, {"dtype", DTypeName(n.dtype)}};
    if (n.op == TensorNode::Op::kScale) op["factor"] = n.factor;
    if (n.op == TensorNode::Op::kQuant) op["quant"] = QuantTypeInfo(n.quant).name;
    if (n.op == TensorNode::Op::kMerge) {
      op["method"] = n.merge->method->name;
      op["inputs"] = n.merge->inputs.size();
    }
    ops.push_back(op);
    if (n.leaf() || n.op == TensorNode::Op::kMerge) return ops;  // a merge's inputs are tensors of their own
    cur = n.src;
  }
}

struct Sizes {
  uint64_t logical = 0, distinct = 0;
  size_t tensors = 0;
};

Sizes SizesOf(const Store& store, const Variant& v, TensorReader& r) {
  Sizes s;
  std::map<Hash, uint64_t> blobs;
  for (const NamedTensor& t : OutputTensors(store, v)) {
    s.logical += r.Node(t.node).nbytes();
    r.CollectBlobs(t.node, blobs);
    ++s.tensors;
  }
  for (const auto& [h, n] : blobs) s.distinct += n;
  return s;
}

}  // namespace

Json ListVariants(const Store& store) {
  Json list = Json::array();
  TensorReader r(store);
  for (const std::string& name : store.ListRefs()) {
    // One damaged variant is listed as such; the others are listed as usual.
    Variant v;
    Sizes s;
    try {
      v = LoadVariant(store, store.ResolveRef(name));
      s = SizesOf(store, v, r);
    } catch (const Error& e) {
      list.push_back(Json{{"name", name}, {"damaged", true}, {"problem", e.what()}});
      continue;
    }
    std::set<Hash> distinct;
    for (const auto& l : v.layers) distinct.insert(l.layer);
    list.push_back(Json{{"name", name},
                        {"node", v.hash.Hex()},
                        {"architecture", v.arch->hf_name},
                        {"layers", v.layers.size()},
                        {"distinct_layers", distinct.size()},
                        {"tensors", s.tensors},
                        {"logical_bytes", s.logical},
                        {"distinct_bytes", s.distinct}});
  }
  return Json{{"store", store.root()}, {"variants", list}};
}

Json ShowVariant(const Store& store, const std::string& name) {
  Variant v = LoadVariant(store, store.ResolveRef(name));
  TensorReader r(store);
  std::map<Hash, std::vector<int>> uses;
  for (size_t i = 0; i < v.layers.size(); ++i) uses[v.layers[i].layer].push_back(static_cast<int>(i));
  Json layers = Json::array();
  for (size_t i = 0; i < v.layers.size(); ++i) {
    const VariantLayer& l = v.layers[i];
    Json transforms = Json::array();
    for (const auto& [role, h] : LoadLayer(store, l.layer)) {
      Json ops = Ops(r, h);
      if (ops.size() > 1) transforms.push_back(Json{{"tensor", role}, {"ops", ops}});
    }
    // A bounded sample: listing every sharer at every layer made show
    // quadratic (490 MB for a plan of 10,000 copies of one layer).
    const std::vector<int>& sharers = uses[l.layer];
    Json same = Json::array();
    for (size_t k = 0; k < sharers.size() && same.size() < kSameAsShown; ++k)
      if (sharers[k] != static_cast<int>(i)) same.push_back(sharers[k]);
    layers.push_back(Json{{"index", i},
                          {"layer", l.layer.Hex()},
                          {"source_model", l.model},
                          {"source_layer", l.source_layer},
                          {"slice", l.slice},
                          {"transforms", transforms},
                          {"same_as", same},
                          {"same_as_count", sharers.size() - 1}});
  }
  Json tensors = Json::array();
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) {
      const TensorNode& n = r.Node(t.node);
      tensors.push_back(Json{{"name", t.name}, {"node", t.node.Hex()}, {"dtype", DTypeName(n.dtype)},
                             {"shape", n.shape}, {"ops", Ops(r, t.node)}});
    }
  Json files = Json::array();
  for (const auto& [f, h] : v.files) files.push_back(f);
  Sizes s = SizesOf(store, v, r);
  return Json{{"name", name},
              {"node", v.hash.Hex()},
              {"architecture", v.arch->hf_name},
              {"dtype", v.node.value("dtype", Json(nullptr))},
              {"out_dtype", v.node.value("out_dtype", Json(nullptr))},
              {"sources", v.node.value("sources", Json::object())},
              {"logical_bytes", s.logical},
              {"distinct_bytes", s.distinct},
              {"layers", layers},
              {"tensors", tensors},
              {"files", files}};
}

std::string SameAsText(const Json& layer) {
  const Json& same = layer.value("same_as", Json::array());
  std::string t;
  for (const Json& k : same) {
    if (!t.empty()) t += ", ";
    t += std::to_string(k.get<int>());
  }
  const size_t count = layer.value("same_as_count", same.size());
  if (count <= same.size()) return t;
  const std::string digits = std::to_string(count);
  std::string n;  // 9,999
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) n += ',';
    n += digits[i];
  }
  return t + ", ... (" + n + " layers)";
}

Json StoreUsage(const Store& store) {
  TensorReader r(store);
  uint64_t logical = 0;
  auto refs = store.ListRefs();
  Json damaged = Json::array();
  for (const std::string& name : refs) {
    try {
      logical += SizesOf(store, LoadVariant(store, store.ResolveRef(name)), r).logical;
    } catch (const Error& e) {
      damaged.push_back(Json{{"name", name}, {"problem", e.what()}});
    }
  }
  Store::Usage u = store.DiskUsage();
  uint64_t physical = u.blob_bytes + u.node_bytes;
  return Json{{"store", store.root()},
              {"variants", refs.size()},
              {"damaged", damaged},
              {"logical_bytes", logical},
              {"physical_bytes", physical},
              {"blob_bytes", u.blob_bytes},
              {"blob_count", u.blob_count},
              {"node_bytes", u.node_bytes},
              {"node_count", u.node_count},
              {"ratio", physical ? static_cast<double>(logical) / static_cast<double>(physical) : 0.0}};
}

}  // namespace strata
