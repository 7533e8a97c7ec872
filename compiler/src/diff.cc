// strata diff: two variants aligned by layer hash, with shared bytes, streamed
// per-tensor numbers for changed tensors, and config.json differences.
#include "strata/compiler/diff.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "strata/formats/error.h"
#include "strata/formats/materialize.h"
#include "strata/formats/variant.h"

namespace strata {

std::string_view EditOpName(EditStep::Op op) {
  switch (op) {
    case EditStep::Op::kKept: return "kept";
    case EditStep::Op::kChanged: return "changed";
    case EditStep::Op::kInserted: return "inserted";
    case EditStep::Op::kRemoved: return "removed";
  }
  return "?";
}

namespace {

// The raw LCS walk: kept, removed and inserted steps only.
std::vector<EditStep> LcsSteps(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  const size_t n = a.size(), m = b.size();
  // lcs[i*(m+1)+j]: length of the LCS of a[i:] and b[j:].
  std::vector<uint32_t> lcs((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint32_t& { return lcs[i * (m + 1) + j]; };
  for (size_t i = n; i-- > 0;)
    for (size_t j = m; j-- > 0;)
      at(i, j) = a[i] == b[j] ? at(i + 1, j + 1) + 1 : std::max(at(i + 1, j), at(i, j + 1));
  std::vector<EditStep> steps;
  size_t i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] == b[j]) {
      steps.push_back({EditStep::Op::kKept, static_cast<int>(i++), static_cast<int>(j++)});
    } else if (at(i + 1, j) >= at(i, j + 1)) {
      steps.push_back({EditStep::Op::kRemoved, static_cast<int>(i++), -1});
    } else {
      steps.push_back({EditStep::Op::kInserted, -1, static_cast<int>(j++)});
    }
  }
  for (; i < n; ++i) steps.push_back({EditStep::Op::kRemoved, static_cast<int>(i), -1});
  for (; j < m; ++j) steps.push_back({EditStep::Op::kInserted, -1, static_cast<int>(j)});
  return steps;
}

// Emits one gap (the steps between two kept ones): removed and inserted
// elements paired in order as changed, then the surplus.
void FlushGap(std::vector<int>& removed, std::vector<int>& inserted, std::vector<EditStep>& out) {
  size_t pairs = std::min(removed.size(), inserted.size());
  for (size_t k = 0; k < pairs; ++k) out.push_back({EditStep::Op::kChanged, removed[k], inserted[k]});
  for (size_t k = pairs; k < removed.size(); ++k) out.push_back({EditStep::Op::kRemoved, removed[k], -1});
  for (size_t k = pairs; k < inserted.size(); ++k) out.push_back({EditStep::Op::kInserted, -1, inserted[k]});
  removed.clear();
  inserted.clear();
}

}  // namespace

std::vector<EditStep> AlignSequences(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<EditStep> out;
  std::vector<int> removed, inserted;
  for (const EditStep& s : LcsSteps(a, b)) {
    if (s.op == EditStep::Op::kRemoved) {
      removed.push_back(s.a);
    } else if (s.op == EditStep::Op::kInserted) {
      inserted.push_back(s.b);
    } else {
      FlushGap(removed, inserted, out);
      out.push_back(s);
    }
  }
  FlushGap(removed, inserted, out);
  return out;
}

namespace {

// Sums over two tensors read side by side, in double.
struct PairSums {
  double max_abs = 0, diff2 = 0, a2 = 0, b2 = 0, ab = 0;
  void Add(const double* x, const double* y, uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) {
      const double d = x[i] - y[i];
      // A NaN delta must show (as null), not be skipped by max's comparison.
      if (std::isnan(d)) max_abs = d;
      else if (std::fabs(d) > max_abs) max_abs = std::fabs(d);
      diff2 += d * d, a2 += x[i] * x[i], b2 += y[i] * y[i], ab += x[i] * y[i];
    }
  }
  Json ToJson() const {
    const double na = std::sqrt(a2), nb = std::sqrt(b2), nd = std::sqrt(diff2);
    Json rel = na > 0 ? Json(nd / na) : nd == 0 ? Json(0.0) : Json(nullptr);
    Json cos = na > 0 && nb > 0 ? Json(ab / (na * nb)) : Json(nullptr);
    return Json{{"max_abs_delta", max_abs}, {"rel_l2", rel}, {"cosine", cos}};
  }
};

// Reads `count` elements of `h` from `begin` as doubles.
void ReadAsDouble(TensorReader& r, const Hash& h, DType dt, uint64_t begin, uint64_t count,
                  std::vector<char>& raw, double* out) {
  raw.resize(count * DTypeSize(dt));
  r.Read(h, begin, count, raw.data());
  ConvertElements(dt, raw.data(), DType::kF64, out, count);
}

Json Compare(TensorReader& r, const Hash& a, const Hash& b, const DiffOptions& opts) {
  const TensorNode na = r.Node(a), nb = r.Node(b);  // copies: Read may grow the cache
  if (!IsComputeFloat(na.dtype) || !IsComputeFloat(nb.dtype))
    throw Error("cannot compare tensors " + a.Hex() + " (" + std::string(DTypeName(na.dtype)) + ") and " +
                b.Hex() + " (" + std::string(DTypeName(nb.dtype)) + "): only float tensors have numbers");
  if (na.numel() != nb.numel())
    throw Error("cannot compare tensors " + a.Hex() + " and " + b.Hex() + ": " + std::to_string(na.numel()) +
                " against " + std::to_string(nb.numel()) + " elements");
  const uint64_t chunk = std::max<uint64_t>(1, std::min(opts.chunk_elements, na.numel()));
  std::vector<char> raw;
  std::vector<double> x(chunk), y(chunk);
  PairSums sums;
  for (uint64_t done = 0; done < na.numel();) {
    const uint64_t k = std::min(chunk, na.numel() - done);
    ReadAsDouble(r, a, na.dtype, done, k, raw, x.data());
    ReadAsDouble(r, b, nb.dtype, done, k, raw, y.data());
    sums.Add(x.data(), y.data(), k);
    done += k;
  }
  return sums.ToJson();
}

uint64_t SharedBytes(const std::map<Hash, uint64_t>& a, const std::map<Hash, uint64_t>& b) {
  uint64_t shared = 0;
  for (const auto& [h, n] : a)
    if (b.count(h)) shared += n;
  return shared;
}

uint64_t TotalBytes(const std::map<Hash, uint64_t>& blobs) {
  uint64_t total = 0;
  for (const auto& [h, n] : blobs) total += n;
  return total;
}

// Config.json flattened to "key.sub" -> value; arrays stay whole.
void Flatten(const Json& j, const std::string& prefix, std::map<std::string, Json>& out) {
  if (!j.is_object() || (j.empty() && !prefix.empty())) {
    out[prefix] = j;
    return;
  }
  for (const auto& [k, v] : j.items()) Flatten(v, prefix.empty() ? k : prefix + "." + k, out);
}

Json ConfigDiff(const Store& store, const Variant& a, const Variant& b) {
  std::map<std::string, Json> fa, fb;
  auto parse = [&](const Variant& v) {
    try {
      return Json::parse(store.ReadBlob(v.config));
    } catch (const Json::exception& e) {
      throw Error("config blob " + v.config.Hex() + " of variant " + v.hash.Hex() + " is not JSON: " + e.what());
    }
  };
  Flatten(parse(a), "", fa);
  Flatten(parse(b), "", fb);
  std::set<std::string> keys;
  for (const auto& [k, v] : fa) keys.insert(k);
  for (const auto& [k, v] : fb) keys.insert(k);
  Json out = Json::array();
  for (const std::string& k : keys) {
    auto ia = fa.find(k), ib = fb.find(k);
    if (ia != fa.end() && ib != fb.end() && ia->second == ib->second) continue;
    Json row{{"key", k}};
    if (ia != fa.end()) row["a"] = ia->second;
    if (ib != fb.end()) row["b"] = ib->second;
    out.push_back(row);
  }
  return out;
}

// Everything the diff needs from both variants, with caches shared by rows.
class Differ {
 public:
  Differ(const Store& store, const DiffOptions& opts) : store_(store), opts_(opts), reader_(store, /*verify=*/true) {}

  Json Run(const Hash& ha, const std::string& name_a, const Hash& hb, const std::string& name_b) {
    Variant a = LoadVariant(store_, ha), b = LoadVariant(store_, hb);
    std::map<Hash, uint64_t> blobs_a = VariantBlobs(a), blobs_b = VariantBlobs(b);
    Json rows = Json::array();
    Json counts{{"kept", 0}, {"changed", 0}, {"inserted", 0}, {"removed", 0}};
    for (const EditStep& s : AlignSequences(LayerHexes(a), LayerHexes(b))) {
      counts[std::string(EditOpName(s.op))] = counts[std::string(EditOpName(s.op))].get<int>() + 1;
      rows.push_back(Row(a, b, s));
    }
    return Json{{"a", Summary(a, name_a, blobs_a)},
                {"b", Summary(b, name_b, blobs_b)},
                {"counts", counts},
                {"bytes", {{"shared", SharedBytes(blobs_a, blobs_b)},
                           {"a_distinct", TotalBytes(blobs_a)},
                           {"b_distinct", TotalBytes(blobs_b)}}},
                {"rows", rows},
                {"tensors", NonLayerTensors(a, b)},
                {"config", ConfigDiff(store_, a, b)}};
  }

 private:
  static std::vector<std::string> LayerHexes(const Variant& v) {
    std::vector<std::string> out;
    for (const VariantLayer& l : v.layers) out.push_back(l.layer.Hex());
    return out;
  }

  std::map<Hash, uint64_t> VariantBlobs(const Variant& v) {
    std::map<Hash, uint64_t> blobs;
    for (const NamedTensor& t : OutputTensors(store_, v)) reader_.CollectBlobs(t.node, blobs);
    return blobs;
  }

  std::map<Hash, uint64_t> LayerBlobs(const Hash& layer) {
    std::map<Hash, uint64_t> blobs;
    for (const auto& [role, h] : Layer(layer)) reader_.CollectBlobs(h, blobs);
    return blobs;
  }

  const std::map<std::string, Hash>& Layer(const Hash& h) {
    auto it = layers_.find(h);
    if (it == layers_.end()) it = layers_.emplace(h, LoadLayer(store_, h)).first;
    return it->second;
  }

  Json Summary(const Variant& v, const std::string& name, const std::map<Hash, uint64_t>& blobs) {
    std::set<Hash> distinct;
    for (const VariantLayer& l : v.layers) distinct.insert(l.layer);
    return Json{{"name", name},
                {"node", v.hash.Hex()},
                {"architecture", v.arch->hf_name},
                {"layers", v.layers.size()},
                {"distinct_layers", distinct.size()},
                {"distinct_bytes", TotalBytes(blobs)},
                {"sources", v.node.value("sources", Json::object())}};
  }

  Json Side(const Variant& v, int i) {
    if (i < 0) return nullptr;
    const VariantLayer& l = v.layers[static_cast<size_t>(i)];
    return Json{{"index", i},
                {"layer", l.layer.Hex()},
                {"source_model", l.model},
                {"source_layer", l.source_layer},
                {"slice", l.slice},
                {"transforms", Transforms(l.layer)}};
  }

  // As ShowVariant's "transforms": the tensors that are more than their
  // stored bytes, each with its ops outermost first (so pictures can mark
  // zeroed and scaled tensors on both sides).
  Json Transforms(const Hash& layer) {
    Json out = Json::array();
    for (const auto& [role, h] : Layer(layer)) {
      Json ops = Json::array();
      for (Hash cur = h;;) {
        const TensorNode& n = reader_.Node(cur);
        Json op{{"op", OpName(n.op)}, {"dtype", DTypeName(n.dtype)}};
        if (n.op == TensorNode::Op::kScale) op["factor"] = n.factor;
        if (n.op == TensorNode::Op::kQuant) op["quant"] = QuantTypeInfo(n.quant).name;
        if (n.op == TensorNode::Op::kMerge) op["method"] = n.merge->method->name;
        ops.push_back(op);
        if (n.leaf() || n.op == TensorNode::Op::kMerge) break;
        cur = n.src;
      }
      if (ops.size() > 1) out.push_back(Json{{"tensor", role}, {"ops", ops}});
    }
    return out;
  }

  Json Row(const Variant& a, const Variant& b, const EditStep& s) {
    Json row{{"op", EditOpName(s.op)}, {"a", Side(a, s.a)}, {"b", Side(b, s.b)}, {"shared_bytes", 0}};
    if (s.a >= 0 && s.b >= 0) {
      const Hash& la = a.layers[static_cast<size_t>(s.a)].layer;
      const Hash& lb = b.layers[static_cast<size_t>(s.b)].layer;
      row["shared_bytes"] = SharedBytes(LayerBlobs(la), LayerBlobs(lb));
      if (s.op == EditStep::Op::kChanged) row["tensors"] = LayerTensors(a, la, lb);
    }
    return row;
  }

  // Roles of both layers in A's architecture order, then any others.
  std::vector<std::string> RoleOrder(const Variant& a, const std::map<std::string, Hash>& ta,
                                     const std::map<std::string, Hash>& tb) {
    std::vector<std::string> roles;
    for (const RoleName& r : a.arch->layer)
      if (ta.count(std::string(r.name)) || tb.count(std::string(r.name))) roles.emplace_back(r.name);
    for (const auto* m : {&ta, &tb})
      for (const auto& [role, h] : *m)
        if (std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(role);
    return roles;
  }

  Json LayerTensors(const Variant& a, const Hash& la, const Hash& lb) {
    const auto& ta = Layer(la);
    const auto& tb = Layer(lb);  // std::map: references survive later insertions
    Json out = Json::array();
    for (const std::string& role : RoleOrder(a, ta, tb)) {
      Json t = TensorPair(ta.count(role) ? &ta.at(role) : nullptr, tb.count(role) ? &tb.at(role) : nullptr);
      t["role"] = role;
      out.push_back(t);
    }
    return out;
  }

  // {"op", "a_shape"?, "b_shape"?, numbers?} for a tensor present in A, B or both.
  Json TensorPair(const Hash* a, const Hash* b) {
    Json t;
    if (a) t["a_shape"] = reader_.Node(*a).shape, t["a_dtype"] = DTypeName(reader_.Node(*a).dtype);
    if (b) t["b_shape"] = reader_.Node(*b).shape, t["b_dtype"] = DTypeName(reader_.Node(*b).dtype);
    if (!a || !b) {
      t["op"] = a ? "only_a" : "only_b";
    } else if (*a == *b) {
      t["op"] = "identical";
    } else if (reader_.Node(*a).shape != reader_.Node(*b).shape) {
      t["op"] = "shape";
    } else {
      t["op"] = "changed";
      if (opts_.tensor_stats && IsComputeFloat(reader_.Node(*a).dtype) && IsComputeFloat(reader_.Node(*b).dtype))
        t.update(Numbers(*a, *b));
    }
    return t;
  }

  // DUS repeats layers: the same pair of tensors is compared once.
  const Json& Numbers(const Hash& a, const Hash& b) {
    auto key = std::make_pair(a, b);
    auto it = numbers_.find(key);
    if (it == numbers_.end()) it = numbers_.emplace(key, Compare(reader_, a, b, opts_)).first;
    return it->second;
  }

  Json NonLayerTensors(const Variant& a, const Variant& b) {
    std::vector<std::string> names;
    std::map<std::string, Hash> ta, tb;
    for (const auto* list : {&a.pre, &a.post, &b.pre, &b.post})
      for (const NamedTensor& t : *list)
        if (std::find(names.begin(), names.end(), t.name) == names.end()) names.push_back(t.name);
    for (const auto* list : {&a.pre, &a.post})
      for (const NamedTensor& t : *list) ta[t.name] = t.node;
    for (const auto* list : {&b.pre, &b.post})
      for (const NamedTensor& t : *list) tb[t.name] = t.node;
    Json out = Json::array();
    for (const std::string& name : names) {
      Json t = TensorPair(ta.count(name) ? &ta.at(name) : nullptr, tb.count(name) ? &tb.at(name) : nullptr);
      t["name"] = name;
      out.push_back(t);
    }
    return out;
  }

  const Store& store_;
  DiffOptions opts_;
  TensorReader reader_;
  std::map<Hash, std::map<std::string, Hash>> layers_;
  std::map<std::pair<Hash, Hash>, Json> numbers_;
};

}  // namespace

Json CompareTensors(const Store& store, const Hash& a, const Hash& b, const DiffOptions& opts) {
  TensorReader r(store, /*verify=*/true);
  return Compare(r, a, b, opts);
}

Json DiffVariants(const Store& store, const Hash& a, const std::string& a_name, const Hash& b,
                  const std::string& b_name, const DiffOptions& opts) {
  return Differ(store, opts).Run(a, a_name, b, b_name);
}

}  // namespace strata
