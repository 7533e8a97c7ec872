// Device residency (see device_weights.h).
#include "device_weights.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "convert.cuh"
#include "cuda_check.h"
#include "strata/formats/error.h"

namespace strata::cuda {

namespace {

using Group = std::vector<const HostTensor*>;

uint64_t Bytes(const HostTensor* t) { return t->numel() * DTypeSize(t->dtype); }

// The groups of a weight set that one product can serve when contiguous.
std::vector<Group> Groups(const WeightSet& ws) {
  return {Group{ws[Role::kQ], ws[Role::kK], ws[Role::kV]}, Group{ws[Role::kGate], ws[Role::kUp]}};
}

// Distinct 2-D members alike in dtype and columns.
bool Eligible(const Group& g) {
  std::set<Hash> distinct;
  for (const HostTensor* t : g) {
    if (!t || t->dtype != g[0]->dtype || t->cols() != g[0]->cols() || t->shape.size() != 2) return false;
    distinct.insert(t->node);
  }
  return distinct.size() == g.size();
}

std::vector<Hash> KeyOf(const Group& g) {
  std::vector<Hash> key;
  for (const HostTensor* t : g) key.push_back(t->node);
  return key;
}

}  // namespace

// What one Add has done so far: enough to undo it.
struct DeviceWeights::AddState {
  AddState(cudaStream_t s, const DeviceLoadOptions& o, size_t allocations)
      : stream(s), opts(o), allocations_before(allocations) {}
  cudaStream_t stream;
  const DeviceLoadOptions& opts;
  StagingUploader* uploader = nullptr;  // valid while uploading
  size_t allocations_before = 0;
  std::vector<Hash> added;  // nodes this Add allocated, in allocation order
  std::vector<Hash> made;   // nodes this Add materialized (resident_, memset_zero_)
};

DeviceWeights::DeviceWeights(const Store& store) : store_(store), reader_(store) {}

const DeviceLayer& ModelBindings::Layer(const WeightSet* ws) const {
  auto it = layers_.find(ws);
  if (it == layers_.end()) throw Error("internal: weight set " + ws->layer.Hex() + " is not resident on the device");
  return it->second;
}

const DeviceTensor* DeviceWeights::Find(const Hash& h) const {
  auto it = tensors_.find(h);
  return it == tensors_.end() ? nullptr : &it->second.t;
}

DeviceTensor DeviceWeights::Bind(const HostTensor* t) const {
  if (!t) return {};
  return tensors_.at(t->node).t;
}

void DeviceWeights::Allocate(AddState& st, const Group& group, const char* what) {
  uint64_t bytes = 0;
  for (const HostTensor* t : group) bytes += Bytes(t);
  allocations_.emplace_back(bytes, what);
  const size_t index = allocations_.size() - 1;
  char* base = allocations_.back().as<char>();
  uint64_t off = 0;
  for (const HostTensor* t : group) {
    tensors_.emplace(t->node, Resident{DeviceTensor{base + off, t->dtype, t->rows(), t->cols(), t->zero}, index});
    st.added.push_back(t->node);
    off += Bytes(t);
  }
}

DeviceTensor DeviceWeights::FusedView(const Group& group) const {
  const Resident* prev = nullptr;
  int64_t rows = 0;
  for (const HostTensor* t : group) {
    if (!t) return {};
    auto it = tensors_.find(t->node);
    if (it == tensors_.end()) return {};
    const Resident& r = it->second;
    if (prev && (r.alloc != prev->alloc || r.t.dtype != prev->t.dtype || r.t.cols != prev->t.cols ||
                 r.t.data != static_cast<const char*>(prev->t.data) + prev->t.nbytes()))
      return {};
    rows += r.t.rows;
    prev = &r;
  }
  const DeviceTensor& first = tensors_.at(group[0]->node).t;
  return DeviceTensor{first.data, first.dtype, rows, first.cols, false};
}

void DeviceWeights::Rollback(const AddState& st) {
  (void)cudaStreamSynchronize(st.stream);  // nothing may still write what is freed
  (void)cudaGetLastError();
  for (const Hash& h : st.made) {
    resident_.erase(h);
    memset_zero_.erase(h);
  }
  for (const Hash& h : st.added) tensors_.erase(h);
  allocations_.erase(allocations_.begin() + static_cast<std::ptrdiff_t>(st.allocations_before), allocations_.end());
}

ModelBindings DeviceWeights::Add(const Model& model, const DeviceLoadOptions& opts, cudaStream_t stream) {
  const auto t0 = std::chrono::steady_clock::now();
  AddState st(stream, opts, allocations_.size());

  // 1. Every distinct tensor node the model uses, and how often (per distinct
  //    weight set and non-layer tensor).
  std::map<Hash, const HostTensor*> needed;
  std::map<Hash, int> uses;
  auto note = [&](const HostTensor* t) {
    if (!t) return;
    needed.emplace(t->node, t);
    ++uses[t->node];
  };
  for (const auto& [h, ws] : model.weight_sets)
    for (const HostTensor* t : ws->by_role) note(t);
  note(model.embed);
  note(model.final_norm);
  if (model.lm_head != model.embed) note(model.lm_head);

  try {
    // 2. Allocations. A group is laid out contiguously when none of its nodes
    //    is resident yet and the model uses them in this group only (possibly
    //    in several weight sets sharing it): then each node is still resident
    //    once. Every other new node gets an allocation of its own.
    if (opts.fuse) {
      std::map<std::vector<Hash>, int> group_count;
      std::vector<Group> candidates;
      for (const auto& [h, ws] : model.weight_sets)
        for (const Group& g : Groups(*ws))
          if (Eligible(g)) {
            ++group_count[KeyOf(g)];
            candidates.push_back(g);
          }
      for (const Group& g : candidates) {
        if (FusedView(g)) continue;  // laid out already (by another weight set or model)
        const std::vector<Hash> key = KeyOf(g);
        bool fresh = true, exclusive = true;
        for (const Hash& h : key) {
          fresh &= tensors_.count(h) == 0;
          exclusive &= uses[h] == group_count[key];
        }
        if (fresh && exclusive) Allocate(st, g, g.size() == 3 ? "fused q/k/v weights" : "fused gate/up weights");
      }
    }
    for (const auto& [h, t] : needed)
      if (!tensors_.count(h)) Allocate(st, {t}, "a weight tensor");
    uint64_t total = 0;
    for (const Hash& h : st.added) total += Bytes(needed.at(h));
    if (opts.on_start) opts.on_start(total);

    // 3. Materialize the new nodes, sources before the scale/cast nodes made
    //    from them, so a derived node whose source is itself resident reads
    //    it on the device.
    std::map<Hash, int> depth_memo;
    std::function<int(const Hash&)> depth = [&](const Hash& h) -> int {
      if (auto it = depth_memo.find(h); it != depth_memo.end()) return it->second;
      const TensorNode n = reader_.Node(h);
      int d = 0;
      for (const Hash& c : n.Children()) d = std::max(d, 1 + depth(c));
      depth_memo[h] = d;
      return d;
    };
    std::vector<std::pair<int, Hash>> order;
    uint64_t max_blob = 0;
    for (const Hash& h : st.added) {
      order.emplace_back(depth(h), h);
      max_blob = std::max<uint64_t>(max_blob, Bytes(needed.at(h)));
    }
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

    // Staging slots no larger than the largest tensor (tiny models pin little;
    // nothing new, nothing pinned).
    StagingUploader uploader(stream, opts.staging_slots,
                             std::min<uint64_t>(opts.staging_slot_bytes, std::max<uint64_t>(max_blob, 4096)));
    st.uploader = &uploader;
    for (const auto& [d, h] : order) {
      Materialize(st, h, const_cast<void*>(tensors_.at(h).t.data), /*count_chunks=*/true);
      resident_.insert(h);
      st.made.push_back(h);
    }
    uploader.Finish();
    st.uploader = nullptr;

    ModelBindings b;
    DeviceWeightStats& s = b.stats_;
    s.blob_bytes_read = uploader.bytes_read();
    s.pinned_bytes = uploader.pinned_bytes();
    s.uploaded_bytes = total;
    s.uploaded_tensors = static_cast<int>(st.added.size());
    s.distinct_tensors = static_cast<int>(needed.size());
    for (const auto& [h, t] : needed) s.tensor_bytes += Bytes(t);
    bytes_ += total;

    // 4. The model's views.
    std::set<const void*> qkv_views, gate_up_views;
    for (const auto& [h, ws] : model.weight_sets) {
      DeviceLayer l;
      l.attn_norm = Bind((*ws)[Role::kAttnNorm]);
      l.ffn_norm = Bind((*ws)[Role::kFfnNorm]);
      l.q = Bind((*ws)[Role::kQ]);
      l.k = Bind((*ws)[Role::kK]);
      l.v = Bind((*ws)[Role::kV]);
      l.o = Bind((*ws)[Role::kO]);
      l.gate = Bind((*ws)[Role::kGate]);
      l.up = Bind((*ws)[Role::kUp]);
      l.down = Bind((*ws)[Role::kDown]);
      l.q_bias = Bind((*ws)[Role::kQBias]);
      l.k_bias = Bind((*ws)[Role::kKBias]);
      l.v_bias = Bind((*ws)[Role::kVBias]);
      if (opts.fuse) {
        const std::vector<Group> g = Groups(*ws);
        if (Eligible(g[0])) l.qkv = FusedView(g[0]);
        if (Eligible(g[1])) l.gate_up = FusedView(g[1]);
        if (l.qkv) qkv_views.insert(l.qkv.data);
        if (l.gate_up) gate_up_views.insert(l.gate_up.data);
      }
      b.layers_.emplace(ws.get(), l);
    }
    s.fused_qkv = static_cast<int>(qkv_views.size());
    s.fused_gate_up = static_cast<int>(gate_up_views.size());
    b.embed_ = Bind(model.embed);
    b.final_norm_ = Bind(model.final_norm);
    b.lm_head_ = Bind(model.lm_head);
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return b;
  } catch (...) {
    Rollback(st);
    throw;
  }
}

void DeviceWeights::Materialize(AddState& st, const Hash& h, void* dst, bool count_chunks) {
  // count_chunks: `h` is one of the model's tensors (not a nested source), and
  // its bytes count towards the progress total.
  const TensorNode n = reader_.Node(h);  // a copy: the recursion may grow the reader's cache
  const uint64_t nbytes = n.nbytes();
  const cudaStream_t stream = st.stream;
  auto advance = [&](uint64_t b) {
    if (st.opts.bytes_done) *st.opts.bytes_done += b;
  };
  // A source already on the device with the host's exact bytes.
  auto resident_src = [&]() -> const DeviceTensor* {
    if (!resident_.count(n.src) || memset_zero_.count(n.src)) return nullptr;
    return &tensors_.at(n.src).t;
  };
  switch (n.op) {
    case TensorNode::Op::kBlob:
      st.uploader->Upload(store_.BlobPath(n.blob), nbytes, dst, "tensor node " + h.Hex(),
                          [&](uint64_t b) { if (count_chunks) advance(b); });
      return;
    case TensorNode::Op::kQuant:
      throw Error("tensor node " + h.Hex() + " is quantized (" + std::string(QuantTypeInfo(n.quant).name) +
                  "); the CUDA backend does not run quantized weights yet: use --device cpu");
    case TensorNode::Op::kMerge: {
      // Computed on the host (formats/src/merge, as export computes it) and
      // uploaded: one tensor's bytes in host memory at a time.
      std::vector<char> host(nbytes);
      reader_.Read(h, 0, n.numel(), host.data());
      CUDA_CHECK(cudaMemcpyAsync(dst, host.data(), nbytes, cudaMemcpyHostToDevice, stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));  // before host is freed
      if (count_chunks) advance(nbytes);
      return;
    }
    case TensorNode::Op::kZeros:
      CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, stream));
      if (count_chunks) advance(nbytes);
      return;
    case TensorNode::Op::kScale: {
      if (n.factor == 0.0 && count_chunks) {
        // A zero tensor of the model (HostTensor::zero: the host callocs it).
        // Nested under a cast it is computed instead, below, so that -0.0
        // (negative source elements) comes out as on the host.
        CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, stream));
        memset_zero_.insert(h);
        st.made.push_back(h);
        advance(nbytes);
        return;
      }
      const TensorNode src = reader_.Node(n.src);
      if (src.dtype != n.dtype || src.numel() != n.numel())
        throw Error("tensor node " + h.Hex() + " scales node " + n.src.Hex() +
                    " of another dtype or size; the store is damaged, run `strata verify`");
      if (const DeviceTensor* s = resident_src()) {
        ScaleOnDevice(n.dtype, s->data, dst, n.numel(), n.factor, stream);
      } else {
        Materialize(st, n.src, dst, false);  // the source in place, then scaled in place
        ScaleOnDevice(n.dtype, dst, dst, n.numel(), n.factor, stream);
      }
      if (count_chunks) advance(nbytes);
      return;
    }
    case TensorNode::Op::kCast: {
      const TensorNode src = reader_.Node(n.src);
      if (src.numel() != n.numel())
        throw Error("tensor node " + h.Hex() + " casts node " + n.src.Hex() +
                    " of another size; the store is damaged, run `strata verify`");
      if (const DeviceTensor* s = resident_src()) {
        CastOnDevice(src.dtype, s->data, n.dtype, dst, n.numel(), stream);
      } else if (src.dtype == n.dtype) {
        Materialize(st, n.src, dst, false);
      } else {
        DeviceBuffer tmp(src.nbytes(), "a cast's source tensor");
        Materialize(st, n.src, tmp.get(), false);
        CastOnDevice(src.dtype, tmp.get(), n.dtype, dst, n.numel(), stream);
        CUDA_CHECK(cudaStreamSynchronize(stream));  // before tmp is freed
      }
      if (count_chunks) advance(nbytes);
      return;
    }
  }
}

}  // namespace strata::cuda
