// Plan -> store: the streaming, deduplicating compiler.
#include "strata/compiler/compile.h"

#include <tbb/parallel_for.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <set>
#include <map>
#include <memory>
#include <optional>

#include "source_model.h"
#include "strata/compiler/resolve.h"
#include "strata/formats/variant.h"
#include "strata/formats/arch.h"
#include "strata/formats/error.h"
#include "strata/formats/hf_checkpoint.h"
#include "strata/formats/model_config.h"

namespace strata {

namespace fs = std::filesystem;

void RequireVariantName(const std::string& name) {
  if (!Store::ValidRefName(name))
    throw Error("\"" + name + "\" is not a valid variant name: use letters, digits, '.', '_' "
                "and '-', starting with a letter or digit; pick one with --name");
}

bool WriteVariantRef(Store& store, const std::string& name, const Hash& variant, bool force) {
  auto existing = store.GetRef(name);
  if (existing && *existing == variant) return true;
  if (existing && !force)
    throw Error("variant \"" + name + "\" already exists in " + store.root() +
                " with different content; choose another --name, or pass --force to replace it");
  store.SetRef(name, variant);
  return false;
}

std::string DefaultVariantName(const std::string& plan_path) {
  return fs::path(plan_path).stem().string();
}

namespace {

struct Model {
  ResolvedModel resolved;
  std::unique_ptr<SourceModel> ckpt;
  ModelConfig config;
  const ArchInfo* arch = nullptr;
  int num_layers = 0;
};

// One source tensor an output tensor is made from.
struct OutInput {
  const Model* model = nullptr;
  std::string src_name;
  const SourceTensor* entry = nullptr;
  std::string source_key;
  Json tensor_params = Json::object();  // the method's per-model parameters, evaluated
};

struct OutTensor {
  std::string name;  // output name
  std::vector<OutInput> in;  // passthrough: one
  int base = -1;             // index of the base model's input, -1 when none
  Json params = Json::object();  // the method's global parameters, evaluated
  std::optional<double> scale;   // passthrough
  int layer = -1;    // output layer, -1 for pre/post tensors
  bool pre = false;  // before the layers (embeddings)
  std::string role;  // for layer tensors
};

struct SourceRange {
  std::string path;
  FileIdentity id;
  uint64_t offset = 0, n = 0;
  const SourceTensor* tensor = nullptr;  // for its transform
  std::string transform;                 // its TransformKey() ("" when none)
  IngestResult result;
  bool cached = false;
};

class Compiler {
 public:
  Compiler(Store& store, const Plan& plan, const CompileOptions& opts)
      : store_(store), plan_(plan), opts_(opts), slices_(plan.slices) {}
  // Everything that reads only the sources: models, tensors, shapes.
  void Prepare();
  // Ingests, writes the nodes and the ref. REQUIRES: Prepare() ran.
  CompileStats Run();

 private:
  void LoadModels();
  const Model& ModelOf(const std::string& ref) const { return *models_.at(ref); }
  // The output tensor `name` made from `srcs` (each with its source tensor
  // name) at position t of `slice`, with the method's parameters evaluated.
  void AddTensor(const PlanSlice& slice, const std::vector<std::pair<const PlanSource*, std::string>>& srcs,
                 OutTensor t, double tpos, bool optional);
  void PlanTensors();
  struct Built {
    Hash h;
    TensorNode node;
    bool quant = false;  // node is a GGUF's quantized blocks (with its dtype changed by casts)
  };
  Built LeafNode(const OutInput& in);
  void Derive(Built& b, const OutInput& in, TensorNode::Op op, DType dtype, double factor);
  DType ComputeDType(const OutTensor& t) const;
  void CheckShapes() const;
  void Ingest();
  IngestResult IngestTransformed(int fd, const SourceRange& s);
  Hash TensorNodeFor(const OutTensor& t);
  Hash ConfigBlob() const;
  std::map<std::string, Hash> TokenizerFiles();
  void WriteRef(const Hash& variant);

  Store& store_;
  const Plan& plan_;
  const CompileOptions& opts_;
  std::vector<PlanSlice> slices_;  // with models:-form ranges filled in
  std::map<std::string, std::unique_ptr<Model>> models_;
  std::vector<OutTensor> tensors_;
  std::map<std::string, SourceRange> sources_;  // by source key
  std::map<std::string, FileIdentity> identities_;
  int total_layers_ = 0;
  size_t empty_crumbs_ = 0;         // tensors whose breadcrumbs keep nothing (a warning)
  std::string first_empty_crumbs_;  // the first of them
  CompileStats stats_;
};

void Compiler::LoadModels() {
  for (const std::string& ref : plan_.ReferencedModels()) {
    auto m = std::make_unique<Model>();
    m->resolved = ResolveModel(ref);
    m->ckpt = SourceModel::Open(m->resolved);
    try {
      m->config = ParseModelConfig(m->ckpt->config());
    } catch (const Error& e) {
      throw Error("model \"" + ref + "\" (" + m->resolved.dir + "): " + e.what());
    }
    m->arch = m->config.arch;
    m->num_layers = m->config.layers;
    models_[ref] = std::move(m);
  }
  // Architectures whose layers hold the same tensors mix (a Mistral GGUF is
  // llama to llama.cpp, so LlamaForCausalLM, beside a Mistral checkpoint).
  const ArchInfo* first = models_.at(plan_.ReferencedModels()[0])->arch;
  auto same_layers = [](const ArchInfo& a, const ArchInfo& b) {
    if (a.layer.size() != b.layer.size()) return false;
    for (size_t k = 0; k < a.layer.size(); ++k)
      if (a.layer[k].role != b.layer[k].role || a.layer[k].name != b.layer[k].name) return false;
    return true;
  };
  for (const auto& [ref, m] : models_)
    if (!same_layers(*m->arch, *first))
      throw Error("the plan mixes architectures: \"" + ref + "\" is " + std::string(m->arch->hf_name) +
                  " but \"" + plan_.ReferencedModels()[0] + "\" is " + std::string(first->hf_name) +
                  "; the models of a plan must share one architecture");
  for (PlanSlice& s : slices_)
    for (PlanSource& src : s.sources) {
      const Model& m = ModelOf(src.model);
      if (src.end < 0) src.end = m.num_layers;
      if (src.end > m.num_layers)
        throw Error(src.range_loc.Str() + ": layer_range [" + std::to_string(src.begin) + ", " +
                    std::to_string(src.end) + "] is past the " + std::to_string(m.num_layers) +
                    " layers of " + src.model + "; the range is half-open, so the last layer is " +
                    std::to_string(m.num_layers - 1));
      const int n0 = s.sources[0].end - s.sources[0].begin;
      if (src.end - src.begin != n0)  // the models: form, models of different depths
        throw Error(src.loc.Str() + ": \"" + src.model + "\" has " + std::to_string(src.end - src.begin) +
                    " layers but \"" + s.sources[0].model + "\" has " + std::to_string(n0) +
                    "; the models merged layer by layer must have the same number of layers");
    }
}

void Compiler::AddTensor(const PlanSlice& slice, const std::vector<std::pair<const PlanSource*, std::string>>& srcs,
                         OutTensor t, double tpos, bool optional) {
  const MergeMethodInfo& m = *plan_.method;
  const auto& base = plan_.BaseOf(slice);
  for (const auto& [src, name] : srcs) {
    OutInput in;
    in.model = &ModelOf(src->model);
    in.src_name = name;
    in.entry = in.model->ckpt->Find(name);
    if (in.entry) {
      if (base && src->model == *base) t.base = static_cast<int>(t.in.size());
      t.in.push_back(std::move(in));
    } else if (!optional) {
      throw Error("model \"" + in.model->resolved.ref + "\" (" + in.model->resolved.dir + ") has no tensor \"" + name +
                  "\", needed for output tensor \"" + t.name + "\"");
    }
  }
  if (t.in.empty()) return;  // mergekit skips an optional weight no source has
  if (t.in.size() != srcs.size())
    throw Error("output tensor \"" + t.name + "\" is optional and only some of the models merged have it; strata "
                "merges it from all of them or from none (mergekit would merge the ones that have it)");
  // Per-model parameters: the source's, the slice's, the plan's, evaluated at
  // the source tensor's name; global ones at the output tensor's name.
  auto need = [&](const std::string& pname, const std::string& tensor, const std::string& model) {
    return Error(slice.loc.Str() + ": merge_method " + std::string(m.name) + " needs parameter \"" + pname + "\"" +
                 (model.empty() ? "" : " for model \"" + model + "\"") + " on tensor \"" + tensor +
                 "\" (give it in the source's, the slice's or the plan's parameters)");
  };
  bool empty_crumbs = false;  // some input's breadcrumbs keep nothing
  for (size_t k = 0; k < t.in.size(); ++k) {
    OutInput& in = t.in[k];
    SourceLoc density_loc = slice.loc;
    // Most methods merge the others onto the base; linear weighs every model,
    // the base too.
    const bool is_base = static_cast<int>(k) == t.base && m.base_role;
    for (const MergeParamDef& d : m.tensor_params) {
      auto v = LookupParam(plan_, slice, srcs[k].first, d.name, in.src_name, tpos);
      if (m.family == MergeMethodInfo::Family::kPassthrough) {
        if (v) t.scale = v->value;
        continue;
      }
      if (is_base) continue;  // the base's own parameters are never used
      if (!v) {
        if (d.required) throw need(d.name, in.src_name, in.model->resolved.ref);
        v = ParamValue{d.default_value, {}};
      }
      if (std::string_view(d.name) == "density" && !is_base && !(v->value > 0 && v->value <= 1))
        throw Error(v->loc.Str() + ": density " + Json(v->value).dump() + " for \"" + in.src_name + "\" of " +
                    in.model->resolved.ref + " is outside (0, 1]: it is the fraction of the task vector kept");
      if (std::string_view(d.name) == "density") density_loc = v->loc;
      in.tensor_params[d.name] = v->value;
    }
    if (is_base || m.family != MergeMethodInfo::Family::kTaskVector) continue;
    // What the sparsifier would refuse when it runs, refused here with the plan's line.
    const double density = in.tensor_params.value("density", 1.0);
    if (density >= 1) continue;
    double numel = 1;
    for (int64_t dim : in.entry->shape) numel *= static_cast<double>(dim);
    // mergekit's magnitude_outliers keeps indices[n_bot:-n_top]: nothing at
    // all when int(gamma * numel) is 0. strata does the same, and says so.
    if (m.sparsify == Sparsify::kMagnitudeOutliers &&
        static_cast<int64_t>(in.tensor_params.value("gamma", 0.01) * numel) == 0)
      empty_crumbs = true;
    if (m.sparsify == Sparsify::kMagnitude && static_cast<int64_t>(density * numel) == 0)
      throw Error(density_loc.Str() + ": density " + Json(density).dump() + " keeps int(density * " +
                  std::to_string(static_cast<int64_t>(numel)) + ") = 0 elements of \"" + in.src_name + "\" of " +
                  in.model->resolved.ref + " (mergekit's top-k of 0 fails); raise it for small tensors with a filter");
    if (m.sparsify == Sparsify::kDellaMagprune) {
      const double eps = in.tensor_params.value("epsilon", 0.15);
      if (density - eps <= 0 || density + eps >= 1)
        throw Error(density_loc.Str() + ": density " + Json(density).dump() + " with epsilon " + Json(eps).dump() +
                    " for \"" + in.src_name + "\" of " + in.model->resolved.ref +
                    ": DELLA keeps each element with a probability in [density - epsilon, density + epsilon], "
                    "which must lie inside (0, 1)");
    }
  }
  // mergekit merges the final norm and lm_head from the last slice's first
  // models (as many as the first slice has); the base must be among them.
  if (m.needs_base && t.base < 0)
    throw Error(slice.loc.Str() + ": merge_method " + std::string(m.name) + " merges \"" + t.name +
                "\" from the first " + std::to_string(t.in.size()) + " source" + (t.in.size() == 1 ? "" : "s") +
                " of this slice (mergekit takes as many as the first slice has), and the base model \"" +
                *plan_.BaseOf(slice) + "\" is not among them (mergekit fails here too); list the base first");
  if (const size_t others = t.in.size() - (t.base >= 0 ? 1 : 0);
      m.others > 0 && others != static_cast<size_t>(m.others))
    throw Error(slice.loc.Str() + ": merge_method " + std::string(m.name) + " merges \"" + t.name + "\" from the first " +
                std::to_string(t.in.size()) + " sources of this slice (mergekit takes as many as the first slice " +
                "has), " + std::to_string(others) + " besides the base; it takes exactly " + std::to_string(m.others));
  for (const MergeParamDef& d : m.params) {
    auto v = LookupParam(plan_, slice, nullptr, d.name, t.name, tpos);
    if (!v && d.required) throw need(d.name, t.name, "");
    t.params[d.name] = v ? v->value : d.default_value;
    if (m.family == MergeMethodInfo::Family::kKarcher && std::string_view(d.name) == "max_iter") {
      const double it = t.params[d.name].get<double>();
      if (it != std::floor(it) || it > kMaxKarcherIterations)
        throw Error((v ? v->loc : slice.loc).Str() + ": karcher's max_iter " + Json(it).dump() + " for \"" + t.name +
                    "\" is not a whole number of iterations up to " + std::to_string(kMaxKarcherIterations) +
                    " (strata's limit)");
    }
  }
  if (empty_crumbs && empty_crumbs_++ == 0) first_empty_crumbs_ = t.name;
  if (m.family == MergeMethodInfo::Family::kLinear && t.params.value("normalize", 1.0) != 0) {
    double sum = 0;
    for (const OutInput& in : t.in) sum += in.tensor_params.value("weight", 0.0);
    if (sum == 0)
      throw Error(slice.loc.Str() + ": the weights of the models merged into \"" + t.name +
                  "\" sum to 0, and linear with normalize: true divides by their sum; change the weights "
                  "or set normalize: false");
  }
  tensors_.push_back(std::move(t));
}

void Compiler::PlanTensors() {
  const ArchInfo& arch = *ModelOf(slices_[0].sources[0].model).arch;
  using Srcs = std::vector<std::pair<const PlanSource*, std::string>>;
  auto non_layer = [&](const NonLayerTensor& w, const PlanSlice& slice, size_t n_models, bool pre) {
    OutTensor t;
    t.pre = pre;
    t.name = std::string(w.name);
    Srcs srcs;
    // mergekit zips the first slice's count of inputs with the last slice's models.
    for (size_t k = 0; k < std::min(n_models, slice.sources.size()); ++k) {
      const PlanSource& src = slice.sources[k];
      const Model& m = ModelOf(src.model);
      // lm_head may only be absent when the model ties it to the embeddings.
      if (w.optional && !m.config.tie_word_embeddings && !m.ckpt->Find(t.name))
        throw Error("model \"" + m.resolved.ref + "\" (" + m.resolved.dir + ") has no \"" + t.name +
                    "\" but its config.json says tie_word_embeddings: false; add the tensor, or set "
                    "tie_word_embeddings to true if the model really ties it to the embeddings");
      srcs.push_back({&src, t.name});
    }
    AddTensor(slice, srcs, std::move(t), 0.0, w.optional);
  };
  const size_t first_models = slices_.front().sources.size();
  for (const NonLayerTensor& w : arch.pre) non_layer(w, slices_.front(), first_models, true);
  int out_layer = 0;
  for (const PlanSlice& slice : slices_) {
    int n = slice.sources[0].end - slice.sources[0].begin;
    for (int idx = 0; idx < n; ++idx, ++out_layer) {
      double t = n > 1 ? static_cast<double>(idx) / (n - 1) : 1.0;
      for (const RoleName& r : arch.layer) {
        OutTensor o;
        o.role = std::string(r.name);
        o.name = LayerPrefix(out_layer) + o.role;
        o.layer = out_layer;
        Srcs srcs;
        for (const PlanSource& src : slice.sources) srcs.push_back({&src, LayerPrefix(src.begin + idx) + o.role});
        AddTensor(slice, srcs, std::move(o), t, false);
      }
    }
  }
  total_layers_ = out_layer;
  if (total_layers_ == 0)
    throw Error("every slice of the plan is empty (layer_range [n, n]): the model would have no layers");
  for (const NonLayerTensor& w : arch.post) non_layer(w, slices_.back(), first_models, false);
}

void Compiler::CheckShapes() const {
  auto shape = [](const OutInput& o) { return Json(o.entry->shape).dump(); };
  std::map<std::string, const OutTensor*> first;
  for (const OutTensor& t : tensors_) {
    for (const OutInput& in : t.in)
      if (in.entry->shape != t.in[0].entry->shape)
        throw Error("shapes disagree: output tensor \"" + t.name + "\" merges \"" + in.src_name + "\" of " +
                    in.model->resolved.ref + " with shape " + shape(in) + " and \"" + t.in[0].src_name + "\" of " +
                    t.in[0].model->resolved.ref + " with shape " + shape(t.in[0]) +
                    "; the models merged must have the same shapes");
    if (t.layer < 0) continue;
    auto [it, inserted] = first.emplace(t.role, &t);
    const OutInput& a = t.in[0];
    const OutInput& b = it->second->in[0];
    if (inserted || a.entry->shape == b.entry->shape) continue;
    throw Error("shapes disagree: output layer " + std::to_string(t.layer) + " takes \"" + a.src_name + "\" of " +
                a.model->resolved.ref + " with shape " + shape(a) + ", but output layer " +
                std::to_string(it->second->layer) + " takes \"" + b.src_name + "\" of " + b.model->resolved.ref +
                " with shape " + shape(b) + "; the models stacked must have the same layer shapes");
  }
}

// A range whose bytes change on the way in: read whole (one tensor: a
// GGUF's q_proj or k_proj, or a norm), transformed, stored.
IngestResult Compiler::IngestTransformed(int fd, const SourceRange& s) {
  std::string raw(s.n, '\0');
  PreadExact(fd, raw.data(), s.n, s.offset, s.path);
  DropCache(fd, s.offset, s.n);
  const std::string stored = s.tensor->Transform(raw);
  if (opts_.bytes_done) *opts_.bytes_done += s.n;
  IngestResult r;
  r.zeros = std::all_of(stored.begin(), stored.end(), [](char c) { return c == 0; });
  if (!r.zeros) r.blob = store_.PutBlob(stored, &r.wrote);
  return r;
}

void Compiler::Ingest() {
  for (OutTensor& o : tensors_)
    for (OutInput& t : o.in) {
      const std::string& path = t.entry->path;
      auto id = identities_.find(path);
      if (id == identities_.end()) id = identities_.emplace(path, IdentifyFile(path)).first;
      const uint64_t offset = t.entry->offset, n = t.entry->nbytes;
      const std::string transform = t.entry->TransformKey();
      t.source_key = id->second.Key() + "@" + std::to_string(offset) + ":" + std::to_string(n) +
                     (transform.empty() ? "" : ":" + transform);
      sources_.try_emplace(t.source_key, SourceRange{path, id->second, offset, n, t.entry, transform, {}, false});
    }
  std::vector<SourceRange*> misses;
  uint64_t miss_bytes = 0;
  for (auto& [key, s] : sources_) {
    if (auto hit = store_.LookupSource(s.id, s.offset, s.n, s.transform)) {
      s.result = *hit;
      s.cached = true;
      ++stats_.cached_tensors;
    } else {
      misses.push_back(&s);
      miss_bytes += s.n;
    }
  }
  stats_.source_tensors = sources_.size();
  if (opts_.on_ingest_start) opts_.on_ingest_start(miss_bytes);
  // Largest first, so the parallel tail is short.
  std::sort(misses.begin(), misses.end(), [](auto* a, auto* b) { return a->n > b->n; });
  tbb::parallel_for(size_t{0}, misses.size(), [&](size_t i) {
    SourceRange& s = *misses[i];
    int fd = OpenReadOnly(s.path);
    try {
      s.result = s.transform.empty() ? store_.IngestRange(fd, s.path, s.offset, s.n, opts_.bytes_done)
                                     : IngestTransformed(fd, s);
    } catch (...) {
      CloseFd(fd);
      throw;
    }
    CloseFd(fd);
  });
  std::map<std::string, std::vector<std::pair<Store::SourceRangeKey, IngestResult>>> by_file;
  for (SourceRange* s : misses) {
    stats_.bytes_read += s->n;
    if (s->result.wrote) {
      ++stats_.blobs_written;
      stats_.blob_bytes_written += s->tensor->stored_nbytes();
    }
    by_file[s->path].push_back({{s->offset, s->n, s->transform}, s->result});
  }
  for (const auto& [path, entries] : by_file) store_.RecordSources(identities_.at(path), entries);
}

// The stored node of input `in` (a blob, zeros, or a GGUF's quantized
// blocks), with the derived nodes mergekit's loading implies on top.
Compiler::Built Compiler::LeafNode(const OutInput& in) {
  const SourceRange& s = sources_.at(in.source_key);
  Built b;
  TensorNode& node = b.node;
  node.dtype = in.entry->dtype;
  node.shape = in.entry->shape;
  node.op = s.result.zeros ? TensorNode::Op::kZeros : TensorNode::Op::kBlob;
  node.blob = s.result.blob;
  // A GGUF's quantized tensor: its blocks, or zeros when every byte is 0
  // (every block's scale is 0, so every value is).
  b.quant = in.entry->quant != QuantType::kNone && !s.result.zeros;
  if (b.quant) {
    node.op = TensorNode::Op::kQuant;
    node.quant = in.entry->quant;
    store_.RequireVersion(2);
  }
  b.h = store_.PutNode(node.ToJson());
  return b;
}

void Compiler::Derive(Built& b, const OutInput& in, TensorNode::Op op, DType dtype, double factor) {
  TensorNode& node = b.node;
  if (b.quant) {
    // Its values are the blocks dequantized in float32 and then rounded
    // once to the node's dtype: a cast only changes that dtype.
    if (op == TensorNode::Op::kScale)
      throw Error("tensor \"" + in.src_name + "\" of " + in.model->resolved.ref + " is " +
                  std::string(QuantTypeInfo(node.quant).name) + "; strata cannot scale a quantized tensor "
                  "(import an unquantized file for a plan with scale)");
    node.dtype = dtype;
    b.h = store_.PutNode(node.ToJson());
    return;
  }
  if (!IsComputeFloat(node.dtype) || !IsComputeFloat(dtype))
    throw Error("tensor \"" + in.src_name + "\" of " + in.model->resolved.ref + " is " +
                std::string(DTypeName(node.dtype)) + "; strata can only cast, scale and merge float tensors");
  node = TensorNode{};
  node.op = op;
  node.src = b.h;
  node.dtype = dtype;
  node.shape = in.entry->shape;
  node.factor = factor;
  b.h = store_.PutNode(node.ToJson());
  b.quant = false;
}

DType Compiler::ComputeDType(const OutTensor& t) const {
  if (plan_.dtype) return *plan_.dtype;
  if (t.base >= 0 && plan_.method->casts_to_base) {
    // The task-vector family casts every model to the base's dtype.
    return t.in[t.base].entry->dtype;
  }
  if (t.base >= 0 && plan_.method->family == MergeMethodInfo::Family::kSlerp) {
    const DType d = t.in[t.base].entry->dtype;
    for (const OutInput& in : t.in)
      if (in.entry->dtype != d)
        throw Error("slerp of \"" + t.name + "\": " + in.model->resolved.ref + " stores it as " +
                    std::string(DTypeName(in.entry->dtype)) + " but the base as " + std::string(DTypeName(d)) +
                    "; give the plan a dtype: (mergekit would compute in float32 from both as stored)");
    return d;
  }
  for (const OutInput& in : t.in)
    if (in.entry->dtype != t.in[0].entry->dtype)
      throw Error(std::string(plan_.method->name) + " of \"" + t.name + "\": the models store it as " +
                  std::string(DTypeName(t.in[0].entry->dtype)) + " and " + std::string(DTypeName(in.entry->dtype)) +
                  "; give the plan a dtype: to compute in");
  return t.in[0].entry->dtype;
}

Hash Compiler::TensorNodeFor(const OutTensor& t) {
  const MergeMethodInfo& m = *plan_.method;
  Built b;
  if (m.family == MergeMethodInfo::Family::kPassthrough || (t.in.size() == 1 && m.one_model_as_is)) {
    // One model: mergekit's methods but linear return it as loaded.
    b = LeafNode(t.in[0]);
    if (plan_.dtype && *plan_.dtype != b.node.dtype) Derive(b, t.in[0], TensorNode::Op::kCast, *plan_.dtype, 1.0);
    if (t.scale && *t.scale != 1.0) Derive(b, t.in[0], TensorNode::Op::kScale, b.node.dtype, *t.scale);
  } else {
    const DType d = ComputeDType(t);
    auto spec = std::make_shared<MergeSpec>();
    spec->method = &m;
    if (m.base_role) spec->base = t.base;
    spec->params = t.params;
    for (const OutInput& in : t.in) {
      Built x = LeafNode(in);
      if (x.node.dtype != d) Derive(x, in, TensorNode::Op::kCast, d, 1.0);
      spec->inputs.push_back(x.h);
      spec->tensor_params.push_back(in.tensor_params);
    }
    if (m.random()) {
      spec->seed = opts_.random_seed;
      spec->salt = t.in[spec->base].src_name;
    }
    b.node = TensorNode{};
    b.node.op = TensorNode::Op::kMerge;
    b.node.dtype = m.out_f32 ? DType::kF32 : d;
    b.node.shape = t.in[0].entry->shape;
    b.node.merge = spec;
    store_.RequireVersion(3);
    b.h = store_.PutNode(b.node.ToJson());
  }
  if (plan_.out_dtype && *plan_.out_dtype != b.node.dtype) Derive(b, t.in[0], TensorNode::Op::kCast, *plan_.out_dtype, 1.0);
  stats_.logical_bytes += b.node.nbytes();
  return b.h;
}

Hash Compiler::ConfigBlob() const {
  const std::string donor = plan_.ReferencedModels()[0];  // base_model when given
  OrderedJson cfg = ModelOf(donor).ckpt->config();
  cfg["num_hidden_layers"] = total_layers_;
  if (auto dt = plan_.out_dtype ? plan_.out_dtype : plan_.dtype)
    cfg["torch_dtype"] = std::string(TorchDTypeName(*dt));
  return store_.PutBlob(DumpConfigJson(cfg));
}

std::map<std::string, Hash> Compiler::TokenizerFiles() {
  std::string donor = plan_.ReferencedModels()[0];
  if (plan_.tokenizer_source) {
    if (*plan_.tokenizer_source != "base") {
      donor = *plan_.tokenizer_source;
    } else if (!plan_.base_model) {
      throw Error(plan_.path + ": tokenizer_source: base needs a base_model");
    }
  }
  const Model& m = ModelOf(donor);
  std::map<std::string, std::string> bytes = m.ckpt->TokenizerFiles();
  if (plan_.tokenizer_source) {
    // strata carries the tokenizer; it does not permute embeddings between
    // different vocabularies as mergekit would, so it insists they agree.
    for (const auto& [ref, other] : models_) {
      const auto theirs = other->ckpt->TokenizerFiles();
      for (const char* f : {"tokenizer.json", "tokenizer.model"}) {
        if (bytes.count(f) && theirs.count(f) && theirs.at(f) != bytes[f])
          throw Error("tokenizer_source " + *plan_.tokenizer_source + ": " + ref +
                      " has a different " + f + "; strata cannot yet merge embeddings across "
                      "different tokenizers");
      }
    }
  }
  if (plan_.chat_template) {
    OrderedJson tc = OrderedJson::object();
    if (bytes.count("tokenizer_config.json")) {
      try {
        tc = OrderedJson::parse(bytes["tokenizer_config.json"]);
      } catch (const std::exception& e) {
        throw Error("model \"" + m.resolved.ref + "\": tokenizer_config.json is not JSON: " + e.what());
      }
      if (!tc.is_object()) throw Error("model \"" + m.resolved.ref + "\": tokenizer_config.json is not a JSON object");
    }
    tc["chat_template"] = *plan_.chat_template;
    bytes["tokenizer_config.json"] = tc.dump(2) + "\n";
  }
  std::map<std::string, Hash> out;
  for (const auto& [name, b] : bytes) out[name] = store_.PutBlob(b);
  return out;
}

void Compiler::WriteRef(const Hash& variant) {
  stats_.ref_unchanged = WriteVariantRef(store_, stats_.name, variant, opts_.force);
}

void Compiler::Prepare() {
  stats_.name = opts_.name.empty() ? DefaultVariantName(plan_.path) : opts_.name;
  RequireVariantName(stats_.name);
  stats_.warnings = plan_.warnings;
  LoadModels();
  PlanTensors();
  CheckShapes();
  if (empty_crumbs_)
    stats_.warnings.push_back(std::to_string(empty_crumbs_) + " tensor" + (empty_crumbs_ == 1 ? "" : "s") +
                              " (the first \"" + first_empty_crumbs_ +
                              "\") keep no task vector at all: int(gamma * elements) is 0, and " + plan_.merge_method +
                              " keeps sorted positions [n_bot, -n_top), empty for n_top = 0, as mergekit does; raise "
                              "gamma or use " +
                              (plan_.method->consensus ? "ties" : "task_arithmetic") + " for small tensors");
}

CompileStats Compiler::Run() {
  Ingest();

  Json pre = Json::array(), post = Json::array(), layers = Json::array();
  std::vector<Json> layer_nodes(total_layers_, Json{{"kind", "layer"}, {"tensors", Json::object()}});
  for (const OutTensor& t : tensors_) {
    Hash h = TensorNodeFor(t);
    if (t.layer >= 0) {
      layer_nodes[t.layer]["tensors"][t.role] = h.Hex();
    } else {
      (t.pre ? pre : post).push_back(Json{{"name", t.name}, {"tensor", h.Hex()}});
    }
  }
  std::set<Hash> distinct;
  int out_layer = 0;
  for (size_t si = 0; si < slices_.size(); ++si) {
    const PlanSlice& slice = slices_[si];
    const int n = slice.sources[0].end - slice.sources[0].begin;
    for (int idx = 0; idx < n; ++idx, ++out_layer) {
      Hash h = store_.PutNode(layer_nodes[out_layer]);
      distinct.insert(h);
      // The source whose layer name sorts last: mergekit's group label for a
      // merge (max of its inputs' names) decides where export writes it.
      const PlanSource* src = &slice.sources[0];
      for (const PlanSource& x : slice.sources)
        if (LayerPrefix(x.begin + idx) > LayerPrefix(src->begin + idx)) src = &x;
      layers.push_back(Json{{"layer", h.Hex()}, {"model", src->model}, {"source_layer", src->begin + idx},
                            {"slice", static_cast<int>(si)}});
    }
  }
  Json sources = Json::object();
  // Provenance that does not depend on where the cache lives: the snapshot
  // revision for hub models, the path for local directories.
  for (const auto& [ref, m] : models_)
    sources[ref] = m->resolved.revision.empty() ? Json{{"path", m->resolved.dir}}
                                                : Json{{"revision", m->resolved.revision}};
  Json files = Json::object();
  for (const auto& [name, h] : TokenizerFiles()) files[name] = h.Hex();
  auto dtype_json = [](const std::optional<DType>& d) {
    return d ? Json(std::string(TorchDTypeName(*d))) : Json(nullptr);
  };
  Json variant{{"kind", "variant"},
               {"format", 1},
               {"architecture", std::string(ModelOf(slices_[0].sources[0].model).arch->hf_name)},
               {"config", ConfigBlob().Hex()},
               {"pre", pre},
               {"post", post},
               {"layers", layers},
               {"files", files},
               {"plan", store_.PutBlob(plan_.text).Hex()},
               {"dtype", dtype_json(plan_.dtype)},
               {"out_dtype", dtype_json(plan_.out_dtype)},
               {"sources", sources}};
  stats_.variant = store_.PutNode(variant);
  stats_.layers = total_layers_;
  stats_.distinct_layers = static_cast<int>(distinct.size());
  WriteRef(stats_.variant);
  return stats_;
}

}  // namespace

namespace {

// The plan compiled under a temporary name, quantized into the name asked
// for; the temporary name is removed whatever happens (its objects that the
// quantized variant does not use are garbage for gc).
CompileStats CompileQuantized(Store& store, const Plan& plan, const CompileOptions& opts) {
  const std::string name = opts.name.empty() ? DefaultVariantName(plan.path) : opts.name;
  RequireVariantName(name);
  CompileOptions inner = opts;
  inner.quantize.reset();
  inner.name = "tmp.compile-" + std::to_string(getpid()) + "-" + std::to_string(std::time(nullptr));
  inner.force = true;
  CompileStats s;
  try {
    s = Compile(store, plan, inner);
    QuantizeOptions q;
    q.mix = *opts.quantize;
    q.name = name;
    q.force = opts.force;
    q.on_start = opts.on_quantize_start;
    q.elements_done = opts.elements_done;
    s.quantized = QuantizeVariant(store, inner.name, q);
  } catch (...) {
    store.RemoveRef(inner.name);
    throw;
  }
  store.RemoveRef(inner.name);
  s.name = name;
  s.variant = s.quantized->variant;
  s.ref_unchanged = s.quantized->ref_unchanged;
  return s;
}

}  // namespace

CompileStats Compile(Store& store, const Plan& plan, const CompileOptions& opts) {
  if (opts.quantize) return CompileQuantized(store, plan, opts);
  // Sources are opened and checked before the lock is taken, so a source that
  // cannot be read (or would block) never holds up a gc.
  Compiler c(store, plan, opts);
  c.Prepare();
  // Shared from the first source-cache lookup on: gc (exclusive) must not
  // sweep the blobs this compile finds in the source cache or the objects it
  // writes before its ref names them. Other compiles share the store freely.
  FileLock lock(store.LockPath(), /*exclusive=*/false);
  return c.Run();
}

}  // namespace strata
