// The table of merge methods, the merge node's fields, and the dispatch to
// each method's arithmetic.
#include <algorithm>
#include <cmath>

#include "merge_internal.h"
#include "strata/formats/error.h"

namespace strata {

namespace {

using F = MergeMethodInfo::Family;

MergeMethodInfo TaskVector(const char* name, bool consensus, Sparsify s, bool normalize, bool rescale) {
  MergeMethodInfo m{name, F::kTaskVector, consensus, s, /*needs_base=*/true, 0, {}, {}};
  m.casts_to_base = true;
  m.params = {{"int8_mask", 0}, {"normalize", normalize ? 1.0 : 0.0}, {"rescale", rescale ? 1.0 : 0.0},
              {"lambda", 1.0}};
  m.tensor_params = {{"weight", 0, true}, {"density", 1.0}};
  if (s == Sparsify::kMagnitudeOutliers) m.tensor_params.push_back({"gamma", 0.01});
  if (s == Sparsify::kDellaMagprune) m.tensor_params.push_back({"epsilon", 0.15});
  return m;
}

std::vector<MergeMethodInfo> MakeTable() {
  std::vector<MergeMethodInfo> t;
  t.push_back({"passthrough", F::kPassthrough, false, Sparsify::kNone, false, 1, {}, {{"scale", 1.0}}});
  t.back().base_role = false;
  t.push_back({"linear", F::kLinear, false, Sparsify::kNone, false, 0, {{"normalize", 1.0}}, {{"weight", 0, true}}});
  t.back().base_role = false;
  t.back().one_model_as_is = false;
  // mergekit's registry: consensus, sparsification, default normalize and rescale.
  t.push_back(TaskVector("task_arithmetic", false, Sparsify::kNone, false, false));
  t.push_back(TaskVector("ties", true, Sparsify::kMagnitude, true, false));
  t.push_back(TaskVector("dare_ties", true, Sparsify::kRandom, false, true));
  t.push_back(TaskVector("dare_linear", false, Sparsify::kRandom, false, true));
  t.push_back(TaskVector("breadcrumbs", false, Sparsify::kMagnitudeOutliers, false, false));
  t.push_back(TaskVector("breadcrumbs_ties", true, Sparsify::kMagnitudeOutliers, false, false));
  t.push_back(TaskVector("della", true, Sparsify::kDellaMagprune, true, true));
  t.push_back(TaskVector("della_linear", false, Sparsify::kDellaMagprune, false, true));
  t.push_back({"slerp", F::kSlerp, false, Sparsify::kNone, true, 2, {{"t", 0, true}}, {}});
  t.back().whole_tensor = true;
  // nuslerp: two models, onto an optional base; t = w1 / (w0 + w1).
  t.push_back({"nuslerp", F::kNuslerp, false, Sparsify::kNone, false, 0,
               {{"nuslerp_row_wise", 0}, {"nuslerp_flatten", 1}}, {{"weight", 0, true}}});
  t.back().others = 2;
  t.back().whole_tensor = true;
  t.push_back({"multislerp", F::kMultislerp, false, Sparsify::kNone, false, 0,
               {{"normalize_weights", 1}, {"eps", 1e-8}}, {{"weight", 0, true}}});
  t.back().whole_tensor = true;
  // karcher: every model alike (a base_model is one of them), equal weights.
  t.push_back({"karcher", F::kKarcher, false, Sparsify::kNone, false, 0, {{"max_iter", 10}, {"tol", 1e-5}}, {}});
  t.back().base_role = false;
  t.back().whole_tensor = true;
  // mergekit's easy_define methods and model_stock: the base plus the others.
  t.push_back({"model_stock", F::kModelStock, false, Sparsify::kNone, true, 0, {{"filter_wise", 0}}, {}});
  t.back().min_models = 3;
  t.back().whole_tensor = true;
  t.push_back({"sce", F::kSce, false, Sparsify::kNone, true, 0, {{"int8_mask", 0}, {"select_topk", 1.0}}, {}});
  t.back().whole_tensor = true;
  t.push_back({"nearswap", F::kNearswap, false, Sparsify::kNone, true, 2, {{"t", 0, true}}, {}});
  t.push_back({"ram", F::kRam, false, Sparsify::kNone, true, 0, {{"epsilon", 1e-5}}, {}});
  t.push_back({"arcee_fusion", F::kArceeFusion, false, Sparsify::kNone, true, 2, {}, {}});
  t.back().whole_tensor = true;
  t.back().out_f32 = true;
  return t;
}

[[noreturn]] void Bad(const Hash& h, const std::string& what) {
  throw Error("tensor node " + h.Hex() + " (merge): " + what + "; the store was crafted or damaged: run `strata verify`");
}

bool ParamValue(const Json& v) { return v.is_boolean() || (v.is_number() && std::isfinite(v.get<double>())); }

double AsNumber(const Json& v) { return v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>(); }

const MergeParamDef* FindDef(const std::vector<MergeParamDef>& defs, std::string_view name) {
  for (const auto& d : defs)
    if (name == d.name) return &d;
  return nullptr;
}

}  // namespace

const std::vector<MergeMethodInfo>& MergeMethods() {
  static const std::vector<MergeMethodInfo> table = MakeTable();
  return table;
}

const MergeMethodInfo* FindMergeMethod(std::string_view name) {
  for (const auto& m : MergeMethods())
    if (name == m.name) return &m;
  return nullptr;
}

std::string MergeMethodNames() {
  std::string s;
  for (const auto& m : MergeMethods()) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

double MergeSpec::Param(const char* name) const {
  if (auto it = params.find(name); it != params.end()) return AsNumber(*it);
  const MergeParamDef* d = FindDef(method->params, name);
  return d ? d->default_value : 0.0;
}

double MergeSpec::TensorParam(size_t input, const char* name) const {
  const Json& p = tensor_params.at(input);
  if (auto it = p.find(name); it != p.end()) return AsNumber(*it);
  const MergeParamDef* d = FindDef(method->tensor_params, name);
  return d ? d->default_value : 0.0;
}

Json MergeSpec::ToJson() const {
  Json j = Json::object();
  j["method"] = method->name;
  Json ins = Json::array();
  for (const Hash& h : inputs) ins.push_back(h.Hex());
  j["inputs"] = ins;
  if (base >= 0) j["base"] = base;
  j["params"] = params;
  j["tensor_params"] = tensor_params;
  if (seed) {
    j["seed"] = *seed;
    j["salt"] = salt;
  }
  return j;
}

MergeSpec ParseMergeSpec(const Json& j, const Hash& h) {
  MergeSpec m;
  auto method = j.find("method");
  if (method == j.end() || !method->is_string()) Bad(h, "no method");
  m.method = FindMergeMethod(method->get<std::string>());
  if (!m.method || m.method->family == F::kPassthrough)
    Bad(h, "unknown method " + method->dump() + " (this strata computes: " + MergeMethodNames() + ")");
  auto ins = j.find("inputs");
  if (ins == j.end() || !ins->is_array() || ins->empty() || ins->size() > kMaxMergeInputs)
    Bad(h, "\"inputs\" is not a list of 1 to " + std::to_string(kMaxMergeInputs) + " tensor nodes");
  for (const Json& e : *ins) {
    auto x = e.is_string() ? Hash::FromHex(e.get<std::string>()) : std::nullopt;
    if (!x) Bad(h, "an input is not a hash");
    m.inputs.push_back(*x);
  }
  if (auto b = j.find("base"); b != j.end()) {
    if (!b->is_number_integer() || b->get<int64_t>() < 0 || b->get<int64_t>() >= static_cast<int64_t>(m.inputs.size()))
      Bad(h, "\"base\" is not the index of an input");
    m.base = static_cast<int>(b->get<int64_t>());
  }
  if (m.method->needs_base && m.base < 0) Bad(h, std::string(m.method->name) + " needs a base input");
  const size_t most = m.method->models > 0 ? static_cast<size_t>(m.method->models) : kMaxMergeInputs;
  const size_t least = std::max<size_t>(m.method->min_models, m.method->base_role ? 2 : 1);
  if (m.inputs.size() < least || m.inputs.size() > most)
    Bad(h, std::string(m.method->name) + " with " + std::to_string(m.inputs.size()) +
               (m.inputs.size() == 1 ? " input" : " inputs") + " (it takes " +
               std::to_string(least) + (most == least ? "" : " to " + std::to_string(most)) + ")");
  if (const size_t others = m.inputs.size() - (m.base >= 0 ? 1 : 0);
      m.method->others > 0 && others != static_cast<size_t>(m.method->others))
    Bad(h, std::string(m.method->name) + " of " + std::to_string(others) + " models besides the base (it takes " +
               std::to_string(m.method->others) + ")");
  auto check_params = [&](const Json& p, const std::vector<MergeParamDef>& defs, const char* what) {
    if (!p.is_object()) Bad(h, std::string(what) + " is not an object");
    for (const auto& [k, v] : p.items())
      if (!FindDef(defs, k) || !ParamValue(v))
        Bad(h, std::string(what) + " has " + Json(k).dump() + ": " + v.dump() + ", not a parameter of " +
                   m.method->name + " with a finite value");
  };
  auto params = j.find("params");
  if (params == j.end()) Bad(h, "no params");
  check_params(*params, m.method->params, "params");
  m.params = *params;
  auto tp = j.find("tensor_params");
  if (tp == j.end() || !tp->is_array() || tp->size() != m.inputs.size())
    Bad(h, "\"tensor_params\" is not one object per input");
  for (const Json& p : *tp) {
    check_params(p, m.method->tensor_params, "tensor_params");
    m.tensor_params.push_back(p);
  }
  if (auto s = j.find("seed"); s != j.end()) {
    if (!s->is_number_unsigned() && !(s->is_number_integer() && s->get<int64_t>() >= 0))
      Bad(h, "\"seed\" is not a non-negative integer");
    m.seed = s->get<uint64_t>();
    auto salt = j.find("salt");
    if (salt == j.end() || !salt->is_string() || salt->get<std::string>().size() > 255)
      Bad(h, "\"salt\" is not a tensor name");
    m.salt = salt->get<std::string>();
  }
  if (m.method->family == F::kKarcher) {
    const double it = m.Param("max_iter");
    if (it != std::floor(it) || it > kMaxKarcherIterations)
      Bad(h, "karcher's max_iter " + Json(it).dump() + " is not a whole number up to " +
                 std::to_string(kMaxKarcherIterations));
  }
  if (m.method->random() != m.seed.has_value())
    Bad(h, m.method->random() ? "a random method without \"seed\"" : "\"seed\" on a method that draws nothing");
  return m;
}

bool MergeNeedsWholeTensor(const MergeSpec& m) {
  if (m.method->whole_tensor) return true;
  if (m.method->family != F::kTaskVector || m.method->sparsify == Sparsify::kNone) return false;
  for (size_t k = 0; k < m.inputs.size(); ++k)
    if (static_cast<int>(k) != m.base && m.TensorParam(k, "density") < 1.0) return true;
  return false;
}

void ComputeMerge(const MergeSpec& m, DType dtype, const std::vector<int64_t>& shape,
                  const std::vector<const float*>& in, size_t n, float* out, const Hash& node) {
  switch (m.method->family) {
    case F::kLinear: return merge::ComputeLinear(m, dtype, in, n, out);
    case F::kTaskVector: return merge::ComputeTaskVector(m, dtype, shape, in, n, out, node);
    case F::kSlerp: return merge::ComputeSlerp(m, dtype, in, n, out);
    case F::kNearswap: return merge::ComputeNearswap(m, dtype, in, n, out);
    case F::kRam: return merge::ComputeRam(m, dtype, in, n, out);
    case F::kModelStock: return merge::ComputeModelStock(m, dtype, shape, in, n, out);
    case F::kSce: return merge::ComputeSce(m, dtype, in, n, out);
    case F::kNuslerp: return merge::ComputeNuslerp(m, dtype, shape, in, n, out);
    case F::kMultislerp: return merge::ComputeMultislerp(m, dtype, in, n, out, node);
    case F::kKarcher: return merge::ComputeKarcher(m, dtype, in, n, out);
    case F::kArceeFusion: return merge::ComputeArceeFusion(m, dtype, shape, in, n, out);
    case F::kPassthrough: break;
  }
  throw Error("tensor node " + node.Hex() + ": passthrough is not a merge node");
}

}  // namespace strata
