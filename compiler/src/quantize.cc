// QuantizeVariant: pick each tensor's type by the mix, quantize each distinct
// (tensor, type) once in bounded memory (rows in chunks, on every core), and
// write quant nodes, layer nodes, the variant and its ref.
#include "strata/compiler/quantize.h"

#include "strata/compiler/compile.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <set>
#include <vector>

#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/materialize.h"
#include "strata/formats/variant.h"
#include "strata/formats/variant_check.h"

namespace strata {
namespace {

constexpr uint64_t kChunkElements = 1u << 22;  // rows read and quantized at a time (16 MiB of fp32)

struct Job {
  Hash src;
  QuantType type;
  bool operator<(const Job& o) const { return src != o.src ? src < o.src : type < o.type; }
};

class Quantizer {
 public:
  Quantizer(Store& store, const QuantizeOptions& opts) : store_(store), opts_(opts), reader_(store, true) {}
  QuantizeStats Run(const std::string& source);

 private:
  // The job for one output tensor, or nullopt when it stays as it is.
  std::optional<Job> Choose(const Hash& h, QuantRole role, int layer, int n_layers);
  static QuantRole RoleOf(std::string_view layer_role);
  void Execute();
  Hash Quantize(const Job& j);
  Hash Replacement(const Hash& h, const std::optional<Job>& j);
  void Count(const Hash& h);

  Store& store_;
  const QuantizeOptions& opts_;
  TensorReader reader_;
  ModelConfig config_;
  std::set<Job> jobs_;
  std::set<Hash> kept_;
  std::map<Job, Hash> done_;
  QuantizeStats stats_;
};

QuantRole Quantizer::RoleOf(std::string_view r) {
  if (r == "self_attn.v_proj.weight") return QuantRole::kAttnV;
  if (r == "mlp.down_proj.weight") return QuantRole::kFfnDown;
  return QuantRole::kOther;
}

std::optional<Job> Quantizer::Choose(const Hash& h, QuantRole role, int layer, int n_layers) {
  const TensorNode& n = reader_.Node(h);
  // llama-quantize's choice: 2-D weights only (norms and biases stay), never
  // a tensor twice. Zero tensors stay zeros nodes: they cost nothing and the
  // runtime skips them (block expansion's layers).
  const bool zero = n.op == TensorNode::Op::kZeros || (n.op == TensorNode::Op::kScale && n.factor == 0.0);
  const bool is_70b = config_.layers == 80 && config_.kv_heads != config_.heads;
  if (n.op == TensorNode::Op::kQuant) {
    // Already quantized (an imported GGUF, or a quantized variant): kept when
    // the mix would pick its type; never quantized a second time.
    const QuantType t = MixTensorType(opts_.mix, role, layer, n_layers, n.shape[1], is_70b);
    if (t != n.quant)
      throw Error("the variant holds a tensor quantized already to " + std::string(QuantTypeInfo(n.quant).name) +
                  " where " + QuantMixFlag(opts_.mix) + " would pick " +
                  (t == QuantType::kNone ? std::string("no quantization") : std::string(QuantTypeInfo(t).name)) +
                  "; strata does not quantize a quantized tensor again (the errors would compound): quantize the "
                  "unquantized variant it came from, or import an unquantized GGUF");
  }
  if (n.shape.size() != 2 || n.op == TensorNode::Op::kQuant || zero || !IsComputeFloat(n.dtype) ||
      n.dtype == DType::kF64) {
    kept_.insert(h);
    return std::nullopt;
  }
  const QuantType t = MixTensorType(opts_.mix, role, layer, n_layers, n.shape[1], is_70b);
  if (t == QuantType::kNone) {
    kept_.insert(h);
    return std::nullopt;
  }
  Job j{h, t};
  jobs_.insert(j);
  return j;
}

Hash Quantizer::Quantize(const Job& j) {
  const TensorNode src = reader_.Node(j.src);
  const int64_t rows = src.shape[0], cols = src.shape[1];
  const uint64_t row_bytes = QuantRowBytes(j.type, cols);
  std::string out(row_bytes * rows, '\0');
  const int64_t chunk_rows = std::max<int64_t>(1, static_cast<int64_t>(kChunkElements) / std::max<int64_t>(cols, 1));
  std::vector<char> raw(static_cast<size_t>(std::min(chunk_rows, rows) * cols) * DTypeSize(src.dtype));
  std::vector<float> f(static_cast<size_t>(std::min(chunk_rows, rows) * cols));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    CheckInterrupt();
    const int64_t n = std::min(chunk_rows, rows - r0);
    reader_.Read(j.src, static_cast<uint64_t>(r0 * cols), static_cast<uint64_t>(n * cols), raw.data());
    ConvertElements(src.dtype, raw.data(), DType::kF32, f.data(), static_cast<size_t>(n * cols));
    tbb::parallel_for(int64_t{0}, n, [&](int64_t r) {
      QuantizeRow(j.type, f.data() + r * cols, cols, out.data() + (r0 + r) * row_bytes);
    });
    if (opts_.elements_done) *opts_.elements_done += static_cast<uint64_t>(n * cols);
  }
  TensorNode q;
  q.op = TensorNode::Op::kQuant;
  q.dtype = src.dtype;
  q.shape = src.shape;
  q.quant = j.type;
  q.from = j.src;
  bool wrote = false;
  q.blob = store_.PutBlob(out, &wrote);
  if (wrote) {
    ++stats_.blobs_written;
    stats_.blob_bytes_written += out.size();
  }
  const Hash node = store_.PutNode(q.ToJson());
  store_.RecordQuant(j.src, QuantTypeInfo(j.type).name, node);
  return node;
}

void Quantizer::Execute() {
  std::vector<Job> todo;
  uint64_t total = 0;
  for (const Job& j : jobs_) {
    if (auto hit = opts_.recompute ? std::nullopt : store_.LookupQuant(j.src, QuantTypeInfo(j.type).name)) {
      done_[j] = *hit;
      ++stats_.cached;
    } else {
      todo.push_back(j);
      total += reader_.Node(j.src).numel();
    }
  }
  if (opts_.on_start) opts_.on_start(total);
  for (const Job& j : todo) {
    done_[j] = Quantize(j);
    ++stats_.quantized;
  }
}

Hash Quantizer::Replacement(const Hash& h, const std::optional<Job>& j) {
  const Hash out = j ? done_.at(*j) : h;
  Count(out);
  return out;
}

void Quantizer::Count(const Hash& h) {
  const TensorNode& n = reader_.Node(h);
  ++stats_.types[std::string(n.op == TensorNode::Op::kQuant ? QuantTypeInfo(n.quant).name : DTypeName(n.dtype))];
}

QuantizeStats Quantizer::Run(const std::string& source) {
  stats_.name = opts_.name.empty() ? DefaultQuantizedName(source, opts_.mix) : opts_.name;
  RequireVariantName(stats_.name);
  const Variant v = LoadVariant(store_, store_.ResolveRef(source));
  config_ = RequireCompleteVariant(store_, v, reader_);

  // Layer coordinates for the mix: each source model's layer count is taken
  // as one past the highest of its layers the variant uses.
  std::map<std::string, int> source_layers;
  for (const VariantLayer& l : v.layers) source_layers[l.model] = std::max(source_layers[l.model], l.source_layer + 1);
  const int L = static_cast<int>(v.layers.size());
  std::vector<std::map<std::string, Hash>> layers;
  std::vector<std::map<std::string, std::optional<Job>>> layer_jobs(L);
  for (int i = 0; i < L; ++i) {
    layers.push_back(LoadLayer(store_, v.layers[i].layer));
    const int idx = opts_.by_output_layer ? i : v.layers[i].source_layer;
    const int n = opts_.by_output_layer ? L : source_layers[v.layers[i].model];
    for (const auto& [role, h] : layers[i]) layer_jobs[i][role] = Choose(h, RoleOf(role), idx, n);
  }
  const bool tied = !std::any_of(v.post.begin(), v.post.end(), [](const NamedTensor& t) { return t.name == "lm_head.weight"; });
  auto non_layer = [&](const NamedTensor& t) {
    const QuantRole r = t.name == "lm_head.weight" || (tied && t.name == "model.embed_tokens.weight") ? QuantRole::kOutput
                        : t.name == "model.embed_tokens.weight"                                     ? QuantRole::kTokenEmbd
                                                                                                     : QuantRole::kOther;
    return Choose(t.node, r, 0, L);
  };
  std::vector<std::optional<Job>> pre_jobs, post_jobs;
  for (const NamedTensor& t : v.pre) pre_jobs.push_back(non_layer(t));
  for (const NamedTensor& t : v.post) post_jobs.push_back(non_layer(t));
  stats_.tensors = jobs_.size();
  stats_.kept = kept_.size();

  FileLock lock(store_.LockPath(), /*exclusive=*/false);  // gc must not sweep what we find or write
  if (!jobs_.empty()) store_.RequireVersion(2);  // quant nodes: strata before them must not read this store
  Execute();

  Json node = v.node;
  std::set<Hash> before, after;
  auto named = [&](const std::vector<NamedTensor>& ts, const std::vector<std::optional<Job>>& js) {
    Json out = Json::array();
    for (size_t i = 0; i < ts.size(); ++i) {
      const Hash h = Replacement(ts[i].node, js[i]);
      before.insert(ts[i].node);
      after.insert(h);
      out.push_back(Json{{"name", ts[i].name}, {"tensor", h.Hex()}});
    }
    return out;
  };
  node["pre"] = named(v.pre, pre_jobs);
  node["post"] = named(v.post, post_jobs);
  for (int i = 0; i < L; ++i) {
    Json tensors = Json::object();
    for (const auto& [role, h] : layers[i]) {
      const Hash r = Replacement(h, layer_jobs[i][role]);
      before.insert(h);
      after.insert(r);
      tensors[role] = r.Hex();
    }
    node["layers"][i]["layer"] = store_.PutNode(Json{{"kind", "layer"}, {"tensors", tensors}}).Hex();
  }
  for (const Hash& h : before) stats_.bytes_before += reader_.Node(h).nbytes();
  for (const Hash& h : after) stats_.bytes_after += reader_.Node(h).nbytes();
  node["quantization"] = Json{{"mix", std::string(QuantMixName(opts_.mix))},
                              {"layers", opts_.by_output_layer ? "output" : "source"},
                              {"from", v.hash.Hex()}};
  stats_.variant = store_.PutNode(node);

  stats_.ref_unchanged = WriteVariantRef(store_, stats_.name, stats_.variant, opts_.force);
  return stats_;
}

}  // namespace

std::string DefaultQuantizedName(const std::string& source, QuantMix mix) {
  return source + "-" + QuantMixFlag(mix);
}

QuantizeStats QuantizeVariant(Store& store, const std::string& source, const QuantizeOptions& opts) {
  Quantizer q(store, opts);
  return q.Run(source);
}

}  // namespace strata
