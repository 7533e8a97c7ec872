// Parsing mergekit plans with positions, and mergekit's parameter evaluation.
#include "strata/compiler/plan.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "strata/formats/error.h"
#include "strata/formats/file.h"

namespace strata {

std::string SourceLoc::Str() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

namespace {

// Walks the plan's YAML events (aliases unexpanded: linear in the text) for
// what yaml-cpp's Load accepts without a word but mergekit reads differently:
// a key given twice in one mapping (Load keeps the first value, PyYAML the
// last) and a second document (Load reads only the first); and for what would
// make the parser misbehave: a key that is not a plain scalar, and aliases
// that expand to more than kMaxNodes nodes (a "billion laughs" plan). Throws
// Error with the locations.
class PlanShapeCheck : public YAML::EventHandler {
 public:
  explicit PlanShapeCheck(const std::string& path) : path_(path) {}

  void Run(const std::string& text) {
    std::istringstream in(text);
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(*this)) ++documents_;
  }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (documents_ > 0)
      throw Error(Where(mark) + ": a second YAML document starts here; a merge plan is one document and the "
                                "rest would be ignored: remove it, or merge it into the first");
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    NotAKey(mark, "an empty key");
    Leaf(anchor, 1);
    Value(mark, nullptr);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchor_sizes_.find(anchor);
    NotAKey(mark, "an alias");
    Leaf(0, it == anchor_sizes_.end() ? 1 : it->second);
    Value(mark, nullptr);
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, const std::string& value) override {
    Leaf(anchor, 1);
    Value(mark, &value);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(mark, anchor, false);
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    Open(mark, anchor, true);
  }
  void OnMapEnd() override { Close(); }

 private:
  static constexpr uint64_t kMaxNodes = 1'000'000;  // a real plan has hundreds

  struct Collection {
    bool map = false, at_key = true;
    std::map<std::string, YAML::Mark> keys;  // the scalar keys so far, where each first appears
    YAML::anchor_t anchor = 0;
    uint64_t nodes = 1;  // nodes inside, aliases expanded
  };

  // Mapping keys are names: a map, a list, an alias or nothing as a key is a
  // plan mergekit would not read either.
  void NotAKey(const YAML::Mark& mark, const char* what) const {
    if (!open_.empty() && open_.back().map && open_.back().at_key)
      throw Error(Where(mark) + ": " + what + " is used as a key; keys in a plan are plain names");
  }
  // Counts `n` nodes into the innermost collection (or the document).
  void Leaf(YAML::anchor_t anchor, uint64_t n) {
    if (anchor) anchor_sizes_[anchor] = n;
    uint64_t& total = open_.empty() ? top_nodes_ : open_.back().nodes;
    total += n;
    if (total > kMaxNodes)
      throw Error(path_ + ": the plan expands to more than " + std::to_string(kMaxNodes) +
                  " YAML nodes through its aliases (*name); write it out without nested aliases");
  }
  void Open(const YAML::Mark& mark, YAML::anchor_t anchor, bool map) {
    NotAKey(mark, map ? "a map" : "a list");
    open_.push_back({});
    open_.back().map = map;
    open_.back().anchor = anchor;
  }

  std::string Where(const YAML::Mark& m) const {
    return SourceLoc{path_, m.line + 1, m.column + 1}.Str();
  }
  // A complete node: a key or a value of the innermost mapping, if any.
  void Value(const YAML::Mark& mark, const std::string* scalar) {
    if (open_.empty() || !open_.back().map) return;
    Collection& c = open_.back();
    if (c.at_key && scalar) {
      auto [first, fresh] = c.keys.emplace(*scalar, mark);
      if (!fresh)
        throw Error(Where(mark) + ": duplicate key \"" + *scalar + "\" (first at " + Where(first->second) +
                    "); mergekit would silently take the last one: keep only the one you mean");
    }
    c.at_key = !c.at_key;
  }
  void Close() {
    const Collection done = std::move(open_.back());
    open_.pop_back();
    Leaf(done.anchor, done.nodes);
    Value(YAML::Mark(), nullptr);
  }

  const std::string& path_;
  int documents_ = 0;
  std::vector<Collection> open_;
  std::map<YAML::anchor_t, uint64_t> anchor_sizes_;
  uint64_t top_nodes_ = 0;
};

class Parser {
 public:
  explicit Parser(std::string path) : path_(std::move(path)) {}
  Plan Parse(const std::string& text);

 private:
  SourceLoc Loc(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    if (m.is_null()) return SourceLoc{path_, 0, 0};
    return SourceLoc{path_, m.line + 1, m.column + 1};
  }
  [[noreturn]] void Fail(const YAML::Node& n, const std::string& msg) const {
    throw Error(Loc(n).Str() + ": " + msg);
  }
  void CheckKeys(const YAML::Node& map, const std::string& what,
                 std::initializer_list<std::string_view> known) const;
  std::string String(const YAML::Node& n, const std::string& what) const;
  int Int(const YAML::Node& n, const std::string& what) const;
  bool IsNumber(const YAML::Node& n) const;
  double Number(const YAML::Node& n) const;
  Setting ParseSetting(const YAML::Node& n, const std::string& what) const;
  Params ParseParams(const YAML::Node& n, const std::string& what, Plan& plan) const;
  PlanSource ParseSource(const YAML::Node& n, const std::string& what, Plan& plan) const;
  PlanSlice ParseSlice(const YAML::Node& n, size_t index, Plan& plan) const;
  DType ParseDType(const YAML::Node& n, const std::string& key) const;
  void Validate(const Plan& plan, const YAML::Node& root) const;

  std::string path_;
  const MergeMethodInfo* method_ = nullptr;  // set once merge_method is read
};

void Parser::CheckKeys(const YAML::Node& map, const std::string& what,
                       std::initializer_list<std::string_view> known) const {
  for (const auto& kv : map) {
    std::string key = kv.first.as<std::string>();
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list;
    for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    Fail(kv.first, "unknown key \"" + key + "\" in " + what + " (known keys: " + list + ")");
  }
}

std::string Parser::String(const YAML::Node& n, const std::string& what) const {
  if (!n.IsScalar()) Fail(n, what + " must be a string");
  return n.Scalar();
}

int Parser::Int(const YAML::Node& n, const std::string& what) const {
  if (!n.IsScalar()) Fail(n, what + " must be an integer");
  try {
    size_t used = 0;
    long v = std::stol(n.Scalar(), &used);
    if (used != n.Scalar().size() || v < -1'000'000 || v > 1'000'000) throw 0;
    return static_cast<int>(v);
  } catch (...) {
    Fail(n, what + " must be an integer, got \"" + n.Scalar() + "\"");
  }
}

bool Parser::IsNumber(const YAML::Node& n) const {
  if (!n.IsScalar() || n.Tag() == "!") return false;  // quoted: a string
  const std::string& s = n.Scalar();
  if (s == "true" || s == "false" || s == "True" || s == "False") return true;
  try {
    // Finite numbers only: "nan", "inf" (and hex floats) are strings to
    // PyYAML, and a NaN factor could not even be stored (JSON has no NaN).
    size_t used = 0;
    double v = std::stod(s, &used);
    return used == s.size() && std::isfinite(v) && s.find_first_of("xXnN") == std::string::npos;
  } catch (...) {
    return false;
  }
}

double Parser::Number(const YAML::Node& n) const {
  const std::string& s = n.Scalar();
  if (s == "true" || s == "True") return 1.0;  // Python: True * x == x
  if (s == "false" || s == "False") return 0.0;
  return std::stod(s);
}

Setting Parser::ParseSetting(const YAML::Node& n, const std::string& what) const {
  Setting s;
  s.loc = Loc(n);
  if (n.IsScalar()) {
    if (IsNumber(n)) {
      s.kind = Setting::Kind::kNumber;
      s.number = Number(n);
    } else {
      s.kind = Setting::Kind::kString;
      s.str = n.Scalar();
    }
    return s;
  }
  if (!n.IsSequence() || n.size() == 0)
    Fail(n, what + " must be a number, a list of numbers (a gradient) or a list of "
            "{filter, value} entries");
  bool all_numbers = true, all_scalars = true;
  for (const auto& e : n) {
    all_numbers = all_numbers && IsNumber(e);
    all_scalars = all_scalars && e.IsScalar();
  }
  if (all_numbers) {
    s.kind = Setting::Kind::kGradient;
    for (const auto& e : n) s.gradient.push_back(Number(e));
    return s;
  }
  if (all_scalars) {
    s.kind = Setting::Kind::kStringList;
    for (const auto& e : n) s.strings.push_back(e.Scalar());
    return s;
  }
  s.kind = Setting::Kind::kFilters;
  for (const auto& e : n) {
    if (!e.IsMap() || !e["value"])
      Fail(e, what + ": each entry of a filter list must be a map with a \"value\" "
              "(and optionally a \"filter\"), e.g. {filter: o_proj, value: 0.0}");
    CheckKeys(e, what + " filter entry", {"filter", "value"});
    Setting::Filter f;
    if (e["filter"] && !e["filter"].IsNull()) f.filter = String(e["filter"], "filter");
    f.value = std::make_shared<Setting>(ParseSetting(e["value"], what));
    s.filters.push_back(std::move(f));
  }
  return s;
}

Params Parser::ParseParams(const YAML::Node& n, const std::string& what, Plan& plan) const {
  Params out;
  if (!n || n.IsNull()) return out;
  if (!n.IsMap()) Fail(n, what + " must be a map of parameter names to values");
  for (const auto& kv : n) {
    std::string name = kv.first.as<std::string>();
    bool known = false;
    for (const auto* defs : {&method_->params, &method_->tensor_params})
      for (const MergeParamDef& d : *defs) known = known || name == d.name;
    if (!known)
      plan.warnings.push_back(Loc(kv.first).Str() + ": parameter \"" + name + "\" has no meaning for " +
                              method_->name + " and is ignored");
    out[name] = ParseSetting(kv.second, "parameter \"" + name + "\"");
  }
  return out;
}

PlanSource Parser::ParseSource(const YAML::Node& n, const std::string& what, Plan& plan) const {
  if (!n.IsMap()) Fail(n, what + " must be a map with \"model\" and \"layer_range\"");
  CheckKeys(n, what, {"model", "layer_range", "parameters"});
  PlanSource src;
  src.loc = Loc(n);
  if (!n["model"]) Fail(n, what + " has no \"model\"");
  src.model = String(n["model"], "model");
  if (!n["layer_range"]) Fail(n, what + " has no \"layer_range\" (e.g. layer_range: [0, 24])");
  const YAML::Node r = n["layer_range"];
  src.range_loc = Loc(r);
  if (!r.IsSequence() || r.size() != 2)
    Fail(r, "layer_range must be a list of two integers [begin, end), e.g. [0, 24]");
  src.begin = Int(r[0], "layer_range begin");
  src.end = Int(r[1], "layer_range end");
  // [n, n] is legal, as in mergekit: it adds no layers, and as the last slice
  // it still says where the final norm and lm_head come from.
  if (src.begin < 0 || src.end < src.begin)
    Fail(r, "layer_range [" + std::to_string(src.begin) + ", " + std::to_string(src.end) +
                "] is reversed or negative; it is half-open [begin, end) with 0 <= begin <= end "
                "([n, n] adds no layers)");
  src.params = ParseParams(n["parameters"], "parameters", plan);
  return src;
}

PlanSlice Parser::ParseSlice(const YAML::Node& n, size_t index, Plan& plan) const {
  std::string what = "slice " + std::to_string(index);
  if (!n.IsMap()) Fail(n, what + " must be a map with \"sources\"");
  CheckKeys(n, what, {"sources", "parameters", "base_model", "residual_weight"});
  if (n["residual_weight"]) Fail(n["residual_weight"], "residual_weight is not supported by strata yet");
  PlanSlice slice;
  slice.loc = Loc(n);
  const YAML::Node sources = n["sources"];
  if (!sources || !sources.IsSequence() || sources.size() == 0)
    Fail(n, what + " needs a non-empty \"sources\" list");
  for (size_t i = 0; i < sources.size(); ++i)
    slice.sources.push_back(ParseSource(sources[i], what + " source " + std::to_string(i), plan));
  slice.params = ParseParams(n["parameters"], "parameters", plan);
  if (n["base_model"] && !n["base_model"].IsNull()) {
    slice.base_model = String(n["base_model"], "base_model");
    slice.base_model_loc = Loc(n["base_model"]);
  }
  return slice;
}

DType Parser::ParseDType(const YAML::Node& n, const std::string& key) const {
  std::string s = String(n, key);
  auto t = ParseTorchDType(s);
  if (!t)
    Fail(n, key + " \"" + s + "\" is not supported; use bfloat16, float16 or float32");
  return *t;
}

Plan Parser::Parse(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
    PlanShapeCheck(path_).Run(text);
  } catch (const YAML::Exception& e) {
    SourceLoc loc{path_, e.mark.is_null() ? 0 : e.mark.line + 1,
                  e.mark.is_null() ? 0 : e.mark.column + 1};
    throw Error(loc.Str() + ": malformed YAML: " + e.msg);
  }
  if (!root.IsMap()) throw Error(path_ + ": a merge plan must be a YAML map (slices:, merge_method:, ...)");
  CheckKeys(root, "the plan",
            {"slices", "models", "modules", "merge_method", "base_model", "dtype", "out_dtype",
             "parameters", "tokenizer_source", "tokenizer", "chat_template"});
  Plan plan;
  plan.path = path_;
  plan.text = text;
  if (root["modules"]) Fail(root["modules"], "modules: is not supported by strata yet; use slices: or models:");
  if (root["tokenizer"])
    Fail(root["tokenizer"], "tokenizer: is not supported by strata yet; use tokenizer_source: base or a model");
  int forms = (root["slices"] ? 1 : 0) + (root["models"] ? 1 : 0);
  if (forms != 1) Fail(root, "a plan needs exactly one of \"slices:\" or \"models:\"");
  if (!root["merge_method"]) Fail(root, "the plan has no merge_method (strata supports: " + MergeMethodNames() + ")");
  plan.merge_method = String(root["merge_method"], "merge_method");
  plan.method = FindMergeMethod(plan.merge_method);
  if (!plan.method)
    Fail(root["merge_method"], "merge_method \"" + plan.merge_method + "\" is not supported; supported: " +
                                   MergeMethodNames());
  method_ = plan.method;
  if (root["base_model"] && !root["base_model"].IsNull()) {
    plan.base_model = String(root["base_model"], "base_model");
    plan.base_model_loc = Loc(root["base_model"]);
  }
  if (root["dtype"] && !root["dtype"].IsNull()) plan.dtype = ParseDType(root["dtype"], "dtype");
  if (root["out_dtype"] && !root["out_dtype"].IsNull())
    plan.out_dtype = ParseDType(root["out_dtype"], "out_dtype");
  if (root["chat_template"] && !root["chat_template"].IsNull())
    plan.chat_template = String(root["chat_template"], "chat_template");
  if (root["tokenizer_source"] && !root["tokenizer_source"].IsNull()) {
    plan.tokenizer_source = String(root["tokenizer_source"], "tokenizer_source");
    if (*plan.tokenizer_source == "union")
      Fail(root["tokenizer_source"],
           "tokenizer_source: union is not supported by strata yet; use base or a model id");
  }
  plan.params = ParseParams(root["parameters"], "parameters", plan);

  if (root["slices"]) {
    const YAML::Node slices = root["slices"];
    if (!slices.IsSequence() || slices.size() == 0) Fail(slices, "slices must be a non-empty list");
    for (size_t i = 0; i < slices.size(); ++i) plan.slices.push_back(ParseSlice(slices[i], i, plan));
  } else {
    const YAML::Node models = root["models"];
    if (!models.IsSequence() || models.size() == 0) Fail(models, "models must be a non-empty list");
    plan.models_form = true;
    PlanSlice slice;
    slice.loc = Loc(models);
    for (size_t i = 0; i < models.size(); ++i) {
      const YAML::Node m = models[i];
      std::string what = "models entry " + std::to_string(i);
      if (!m.IsMap() || !m["model"]) Fail(m, what + " must be a map with \"model\"");
      CheckKeys(m, what, {"model", "parameters"});
      PlanSource src;
      src.loc = Loc(m);
      src.range_loc = src.loc;
      src.model = String(m["model"], "model");
      src.params = ParseParams(m["parameters"], "parameters", plan);
      slice.sources.push_back(std::move(src));
    }
    // mergekit adds the base model as one more input when it is not listed.
    if (plan.base_model &&
        std::none_of(slice.sources.begin(), slice.sources.end(),
                     [&](const PlanSource& s) { return s.model == *plan.base_model; })) {
      PlanSource base;
      base.model = *plan.base_model;
      base.loc = base.range_loc = plan.base_model_loc;
      slice.sources.push_back(std::move(base));
    }
    plan.slices.push_back(std::move(slice));
  }
  Validate(plan, root);
  return plan;
}

void Parser::Validate(const Plan& plan, const YAML::Node& root) const {
  for (size_t i = 0; i < plan.slices.size(); ++i) {
    const PlanSlice& s = plan.slices[i];
    for (const PlanSource& src : s.sources) {
      if (src.model.find('+') != std::string::npos)
        throw Error(src.loc.Str() + ": model \"" + src.model +
                    "\" applies a LoRA (\"+\"), which strata does not support yet");
      int n0 = s.sources[0].end - s.sources[0].begin, n = src.end - src.begin;
      if (!plan.models_form && n != n0)
        throw Error(src.range_loc.Str() + ": all sources of slice " + std::to_string(i) +
                    " must span the same number of layers (" + std::to_string(n0) +
                    " in the first, " + std::to_string(n) + " here)");
    }
    const std::string what = plan.models_form ? std::string("models:") : "slice " + std::to_string(i);
    if (s.sources.size() > kMaxMergeInputs)
      throw Error(s.loc.Str() + ": " + what + " has " + std::to_string(s.sources.size()) +
                  " sources; strata merges at most " + std::to_string(kMaxMergeInputs) + " models into one tensor");
    for (size_t a = 0; a < s.sources.size(); ++a)
      for (size_t b = 0; b < a; ++b)
        if (s.sources[a].model == s.sources[b].model)
          throw Error(s.sources[a].loc.Str() + ": model \"" + s.sources[a].model + "\" is already a source of " + what +
                      " (at " + s.sources[b].loc.Str() + "); mergekit would silently keep one of them: list it once");
    const MergeMethodInfo& m = *plan.method;
    if (m.models > 0 && static_cast<int>(s.sources.size()) != m.models)
      throw Error(s.loc.Str() + ": " + what + " has " + std::to_string(s.sources.size()) + " source" +
                  (s.sources.size() == 1 ? "" : "s") + "; merge_method " + m.name + " takes exactly " +
                  std::to_string(m.models) + (plan.models_form && plan.base_model ? " (base_model counts as one)" : ""));
    if (m.others > 0) {
      const auto& base = plan.BaseOf(s);
      const bool base_in = base && std::any_of(s.sources.begin(), s.sources.end(),
                                               [&](const PlanSource& x) { return x.model == *base; });
      if (base && !base_in)
        throw Error(s.loc.Str() + ": base_model \"" + *base + "\" is not a source of " + what + "; merge_method " +
                    m.name + " merges " + std::to_string(m.others) + " models onto the base, which must be " +
                    "among the sources (mergekit fails here too): add it with the same layer_range");
      const size_t others = s.sources.size() - (base_in ? 1 : 0);
      if (others != static_cast<size_t>(m.others))
        throw Error(s.loc.Str() + ": " + what + " has " + std::to_string(others) + " model" +
                    (others == 1 ? "" : "s") + (base_in ? " besides the base" : "") + "; merge_method " + m.name +
                    " takes exactly " + std::to_string(m.others) + " (and an optional base_model)");
    }
    if (static_cast<int>(s.sources.size()) < m.min_models)
      throw Error(s.loc.Str() + ": " + what + " has " + std::to_string(s.sources.size()) + " source" +
                  (s.sources.size() == 1 ? "" : "s") + "; merge_method " + m.name + " takes at least " +
                  std::to_string(m.min_models) + " (the base model and " + std::to_string(m.min_models - 1) +
                  " others)");
    if (m.needs_base) {
      const auto& base = plan.BaseOf(s);
      if (!base)
        throw Error(s.loc.Str() + ": merge_method " + std::string(m.name) + " needs a base_model (the model the " +
                    "others are merged onto); add base_model: to the plan or to " + what);
      if (std::none_of(s.sources.begin(), s.sources.end(), [&](const PlanSource& x) { return x.model == *base; }))
        throw Error(s.loc.Str() + ": base_model \"" + *base + "\" is not a source of " + what +
                    "; mergekit needs the base among the sources it merges: add it with the same layer_range");
    }
  }
}

}  // namespace

std::optional<double> EvaluateNumber(const Setting& s, std::string_view tensor_name, double t) {
  switch (s.kind) {
    case Setting::Kind::kNumber:
      return s.number;
    case Setting::Kind::kGradient: {
      const auto& g = s.gradient;
      double scaled = t * static_cast<double>(g.size() - 1);
      size_t i0 = static_cast<size_t>(scaled);
      size_t i1 = std::min(g.size() - 1, i0 + 1);
      double frac = scaled - static_cast<double>(i0);
      return (1 - frac) * g[i0] + frac * g[i1];
    }
    case Setting::Kind::kFilters:
      for (const auto& f : s.filters)
        if (!f.filter || *f.filter == "*" || tensor_name.find(*f.filter) != std::string_view::npos)
          return EvaluateNumber(*f.value, tensor_name, t);
      return std::nullopt;
    case Setting::Kind::kString:
    case Setting::Kind::kStringList:
      break;
  }
  throw Error(s.loc.Str() + ": expected a number here (a parameter's value is a number, a list of numbers or a list of {filter, value})");
}

std::optional<ParamValue> LookupParam(const Plan& plan, const PlanSlice& slice, const PlanSource* src,
                                      const std::string& name, std::string_view tensor_name, double t) {
  auto from = [&](const Params& p) -> std::optional<ParamValue> {
    auto it = p.find(name);
    if (it == p.end()) return std::nullopt;
    if (auto v = EvaluateNumber(it->second, tensor_name, t)) return ParamValue{*v, it->second.loc};
    return std::nullopt;
  };
  if (src)
    for (const PlanSource& s : slice.sources)
      if (s.model == src->model)
        if (auto v = from(s.params)) return v;
  if (auto v = from(slice.params)) return v;
  return from(plan.params);
}

std::vector<std::string> Plan::ReferencedModels() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& m) {
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  };
  if (base_model) add(*base_model);
  for (const PlanSlice& s : slices) {
    if (s.base_model) add(*s.base_model);
    for (const PlanSource& src : s.sources) add(src.model);
  }
  if (tokenizer_source && *tokenizer_source != "base") add(*tokenizer_source);
  return out;
}

Plan ParsePlan(const std::string& text, const std::string& path) {
  // Every node is type-checked before it is converted; a conversion missed
  // all the same is said as the plan's error, not an abort.
  try {
    return Parser(path).Parse(text);
  } catch (const YAML::Exception& e) {
    SourceLoc loc{path, e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1};
    throw Error(loc.Str() + ": " + e.msg);
  } catch (const std::invalid_argument&) {
    throw Error(path + ": a value is not the number it looks like");
  } catch (const std::out_of_range&) {
    throw Error(path + ": a number is out of range");
  }
}

Plan LoadPlan(const std::string& path) {
  std::string problem;
  if (PathState state = StatPath(path, &problem); state != PathState::kFile)
    throw Error(state == PathState::kMissing ? path + ": no such plan file" : problem);
  return ParsePlan(ReadFile(path), path);
}

}  // namespace strata
