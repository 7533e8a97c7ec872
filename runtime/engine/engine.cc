// Engine and Sequence (see engine.h): the one place that chooses a backend.
#include "strata/runtime/engine.h"

#include <chrono>

#include "strata/formats/error.h"
#include "strata/runtime/cpu_kernels.h"
#include "strata/runtime/weights.h"
#ifdef STRATA_HAVE_CUDA
#include "strata/cuda/cuda_backend.h"
#endif

namespace strata {

namespace {

using Clock = std::chrono::steady_clock;
double Secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

bool Greedy(const SamplerOptions& s) { return s.temperature <= 0 && s.repetition_penalty == 1.0; }

}  // namespace

bool CudaBuilt() {
#ifdef STRATA_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::string DeviceProblem(const std::string& device) {
  if (device == "cpu") return "";
  if (device != "cuda") return "unknown device \"" + device + "\": use cpu or cuda";
#ifdef STRATA_HAVE_CUDA
  try {
    RequireCudaDevice();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
#else
  return "this strata was built without the CUDA backend (no nvcc at build time, or STRATA_CUDA=OFF); rebuild with "
         "nvcc available, or use --device cpu";
#endif
}

WeightPool::WeightPool(const Store& store, const std::string& device, bool verify)
    : store_(store), device_(device) {
  if (std::string p = DeviceProblem(device); !p.empty()) throw Error(p);
  // CUDA reads the weights from the store itself: the host keeps metadata only.
  host_ = std::make_unique<WeightStore>(store, /*host_data=*/device != "cuda", verify);
#ifdef STRATA_HAVE_CUDA
  if (device == "cuda") device_pool_ = MakeCudaWeightPool(store);
#endif
}

WeightPool::~WeightPool() = default;

uint64_t WeightPool::resident_bytes() const {
#ifdef STRATA_HAVE_CUDA
  if (device_pool_) return CudaWeightPoolBytes(*std::static_pointer_cast<CudaWeightPool>(device_pool_));
#endif
  return host_->resident_bytes();
}

std::unique_ptr<Engine> Engine::Open(const Store& store, const Hash& variant, const EngineOptions& o) {
  return Open(store, variant, o, std::make_shared<WeightPool>(store, o.device, o.verify_load));
}

std::unique_ptr<Engine> Engine::Open(const Store& store, const Hash& variant, const EngineOptions& o,
                                     std::shared_ptr<WeightPool> pool) {
  if (std::string p = DeviceProblem(o.device); !p.empty()) throw Error(p);
  if (!pool) throw Error("internal: Engine::Open without a weight pool");
  if (pool->device() != o.device)
    throw Error("internal: an engine for " + o.device + " on a weight pool for " + pool->device());
  if (&pool->store_ != &store) throw Error("internal: an engine on a weight pool of another store");
  const bool cuda = o.device == "cuda";
  auto t0 = Clock::now();
  std::unique_ptr<Engine> e(new Engine());
  e->pool_ = std::move(pool);
  e->model_ = std::make_unique<Model>(AssembleModel(store, *e->pool_->host_, variant));
  BackendOptions bo;
  bo.max_context = o.max_context;
  bo.elide = o.elide;
  bo.kv_budget_bytes = o.kv_budget_bytes;
  bo.kv_positions = o.kv_positions;
  bo.kv_block_tokens = o.kv_block_tokens;
  EngineInfo& info = e->info_;
  info.device = o.device;
  if (cuda) {
#ifdef STRATA_HAVE_CUDA
    CudaLoadOptions lo;
    lo.on_start = o.on_load_start;
    lo.bytes_done = o.load_bytes_done;
    lo.graphs = o.cuda_graphs;
    auto cb = MakeCudaBackend(*e->model_, bo, store, lo, std::static_pointer_cast<CudaWeightPool>(e->pool_->device_pool_));
    info.weight_bytes_device = cb->stats().weight_bytes;
    info.device_name = CudaDeviceSummary();
    e->backend_ = std::move(cb);
#endif
  } else {
    e->backend_ = MakeCpuBackend(*e->model_, bo);
    info.device_name = "cpu (" + e->backend_->kernels() + ")";
  }
  info.layers = static_cast<int>(e->model_->layers.size());
  info.distinct_layers = static_cast<int>(e->model_->weight_sets.size());
  info.elided_layers = e->backend_->elided_layers();
  info.decode_weight_bytes_per_token = DecodeWeightBytesPerToken(*e->model_, o.elide);
  info.load_s = Secs(t0, Clock::now());
  const int64_t mpe = e->model_->config.max_position_embeddings;
  e->max_context_ = o.max_context > 0 && (mpe <= 0 || o.max_context < mpe) ? o.max_context : mpe;
  return e;
}

Engine::~Engine() = default;

bool DeviceMemory(const std::string& device, uint64_t* free_bytes, uint64_t* total_bytes) {
#ifdef STRATA_HAVE_CUDA
  if (device == "cuda") return CudaMemInfo(free_bytes, total_bytes);
#endif
  (void)device, (void)free_bytes, (void)total_bytes;
  return false;
}

Json Engine::DeviceStats() const {
  Json j = Json::object();
#ifdef STRATA_HAVE_CUDA
  if (const auto* cb = dynamic_cast<const CudaBackend*>(backend_.get())) {
    const CudaStats st = cb->stats();
    j = Json{{"weight_bytes", st.weight_bytes},
             {"weight_bytes_read", st.weight_bytes_read},
             {"weight_bytes_uploaded", st.weight_bytes_uploaded},
             {"kv_cache_bytes", st.kv_cache_bytes},
             {"scratch_bytes", st.scratch_bytes},
             {"device_bytes", st.device_bytes},
             {"device_bytes_peak", st.device_bytes_peak},
             {"staging_bytes", st.staging_bytes},
             {"distinct_tensors", st.distinct_tensors},
             {"fused_qkv", st.fused_qkv},
             {"fused_gate_up", st.fused_gate_up},
             {"load_s", st.load_s},
             {"decode_graph", st.decode_graph},
             {"decode_graph_nodes", st.decode_graph_nodes},
             {"decode_kernels_per_step", st.decode_kernels_per_step}};
  }
#endif
  return j;
}

double Engine::MeasureReadBandwidth() const {
#ifdef STRATA_HAVE_CUDA
  if (info_.device == "cuda") return MeasureDeviceReadBandwidth();
#endif
  return 0;
}

EngineInfo Engine::info() const {
  EngineInfo i = info_;
  i.weight_bytes_mapped = pool_->host_->mapped_bytes();
  i.weight_bytes_materialized = pool_->host_->materialized_bytes();
  i.weight_bytes_packed = pool_->host_->packed_bytes();
  i.weight_bytes_released = pool_->host_->released_bytes();
  return i;
}

std::unique_ptr<Sequence> Engine::NewSequence(const SamplerOptions& sampler) {
  if (std::string p = SamplerOptionsProblem(sampler); !p.empty()) throw Error(p);
  return std::unique_ptr<Sequence>(new Sequence(*this, sampler));
}

void Engine::Step(const std::vector<Sequence*>& seqs) {
  const int64_t V = config().vocab;
  std::vector<BatchItem> items;
  items.reserve(seqs.size());
  for (Sequence* s : seqs) {
    if (&s->engine_ != this) throw Error("internal: a sequence of another engine in Engine::Step");
    if (s->pending_.empty()) throw Error("internal: a sequence with no pending tokens in Engine::Step");
    BatchItem it;
    it.seq = s->id_;
    it.tokens = s->pending_.data();
    it.n = static_cast<int64_t>(s->pending_.size());
    if (s->skip_next_ && !s->keep_all_) {
      it.output = BatchOutput::kNone;
    } else if (s->keep_all_) {
      it.output = BatchOutput::kAllLogits;
      s->all_logits_.resize(static_cast<size_t>(it.n * V));
      it.logits = s->all_logits_.data();
    } else if (s->NeedsLogits()) {
      it.output = BatchOutput::kLastLogits;
      s->logits_.resize(static_cast<size_t>(V));
      it.logits = s->logits_.data();
    } else {
      it.output = BatchOutput::kArgmax;
      it.argmax = &s->argmax_;
      s->logits_.clear();
    }
    items.push_back(it);
  }
  backend_->ForwardBatch(items);  // throws with nothing changed
  for (Sequence* s : seqs) {
    s->tokens_.insert(s->tokens_.end(), s->pending_.begin(), s->pending_.end());
    s->pending_.clear();
    if (s->keep_all_) s->logits_.assign(s->all_logits_.end() - V, s->all_logits_.end());
    if (s->skip_next_) {
      s->skip_next_ = false;
      s->next_ = -1;
    } else if (s->logits_.empty()) {
      s->next_ = s->argmax_;  // greedy, taken by the backend
    } else if (s->keep_last_ || s->keep_all_) {
      std::vector<float> copy = s->logits_;  // the sampler edits what it is given; keep the raw logits
      s->next_ = s->sampler_.Next(copy, s->tokens_);
    } else {
      s->next_ = s->sampler_.Next(s->logits_, s->tokens_);
    }
  }
}

Sequence::Sequence(Engine& e, const SamplerOptions& s)
    : engine_(e), id_(e.backend().CreateSequence()), sampler_options_(s), sampler_(s) {}

Sequence::~Sequence() {
  try {
    engine_.backend().ReleaseSequence(id_);
  } catch (...) {  // the id is always live: nothing to report from a destructor
  }
}

bool Sequence::NeedsLogits() const { return keep_last_ || !Greedy(sampler_options_); }

void Sequence::Append(const std::vector<int>& tokens) {
  pending_.insert(pending_.end(), tokens.begin(), tokens.end());
  skip_next_ = false;
}

void Sequence::Prefill(const std::vector<int>& tokens) {
  pending_.insert(pending_.end(), tokens.begin(), tokens.end());
  skip_next_ = true;
}

void Sequence::Truncate(int64_t n) {
  engine_.backend().TruncateSequence(id_, n);  // throws for n > length()
  tokens_.resize(static_cast<size_t>(n));
  pending_.clear();
  skip_next_ = false;
}

int64_t Sequence::Continue(const std::vector<int>& prompt) {
  size_t keep = 0;
  const size_t limit = prompt.empty() ? 0 : std::min(tokens_.size(), prompt.size() - 1);
  while (keep < limit && tokens_[keep] == prompt[keep]) ++keep;
  if (keep < tokens_.size()) Truncate(static_cast<int64_t>(keep));
  pending_.assign(prompt.begin() + static_cast<int64_t>(keep), prompt.end());
  skip_next_ = false;
  return static_cast<int64_t>(keep);
}

GenerateStats Sequence::Generate(const std::vector<int>& prompt, int max_new, const std::function<bool(int)>& on_token,
                                 std::vector<float>* prompt_logits) {
  GenerateStats st;
  if (prompt.empty()) throw Error("an empty prompt: nothing to run");
  st.reused_tokens = Continue(prompt);
  st.prefill_tokens = static_cast<int64_t>(pending_.size());
  const bool keep_all = keep_all_;
  if (prompt_logits) keep_all_ = true;
  auto t0 = Clock::now();
  try {
    engine_.Step({this});
  } catch (...) {
    keep_all_ = keep_all;
    pending_.clear();
    throw;
  }
  keep_all_ = keep_all;
  if (prompt_logits) *prompt_logits = all_logits_;
  auto t1 = Clock::now();
  st.prefill_s = Secs(t0, t1);
  const std::vector<int>& eos = engine_.config().eos_token_ids;
  for (int i = 0; i < max_new; ++i) {
    const int tok = next_;
    st.tokens.push_back(tok);
    if (on_token && !on_token(tok)) break;
    if (std::find(eos.begin(), eos.end(), tok) != eos.end()) break;
    if (i + 1 == max_new) break;
    Append({tok});
    engine_.Step({this});
  }
  st.decode_s = Secs(t1, Clock::now());
  return st;
}

}  // namespace strata
