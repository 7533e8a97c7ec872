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

// The roles of a weight set, in a fixed order.
std::vector<const HostTensor*> Tensors(const WeightSet& ws) {
  return std::vector<const HostTensor*>(ws.by_role.begin(), ws.by_role.end());
}

}  // namespace

DeviceWeights::DeviceWeights(const Store& store, const Model& model, const DeviceLoadOptions& opts,
                             cudaStream_t stream)
    : store_(store), reader_(store), stream_(stream), opts_(opts) {
  const auto t0 = std::chrono::steady_clock::now();

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
    for (const HostTensor* t : Tensors(*ws)) note(t);
  note(model.embed);
  note(model.final_norm);
  if (model.lm_head != model.embed) note(model.lm_head);

  // 2. Contiguous groups: q/k/v and gate/up of a weight set whose members are
  //    distinct, alike in dtype and columns, and used by no other tensor role
  //    than this same group (possibly in several weight sets sharing it).
  using Key = std::vector<Hash>;
  auto eligible = [](const std::vector<const HostTensor*>& ts) {
    std::set<Hash> distinct;
    for (const HostTensor* t : ts) {
      if (!t || t->dtype != ts[0]->dtype || t->cols() != ts[0]->cols() || t->shape.size() != 2) return false;
      distinct.insert(t->node);
    }
    return distinct.size() == ts.size();
  };
  std::map<Key, int> group_count;
  std::vector<std::pair<const WeightSet*, std::vector<const HostTensor*>>> candidates;
  if (opts_.fuse) {
    for (const auto& [h, ws] : model.weight_sets) {
      for (std::vector<const HostTensor*> g : {std::vector<const HostTensor*>{(*ws)[Role::kQ], (*ws)[Role::kK], (*ws)[Role::kV]},
                                               std::vector<const HostTensor*>{(*ws)[Role::kGate], (*ws)[Role::kUp]}}) {
        if (!eligible(g)) continue;
        Key key;
        for (const HostTensor* t : g) key.push_back(t->node);
        ++group_count[key];
        candidates.emplace_back(ws.get(), g);
      }
    }
  }
  std::map<Key, DeviceTensor> groups;  // allocated contiguous groups
  std::map<const WeightSet*, std::pair<DeviceTensor, DeviceTensor>> fused_of;  // (qkv, gate_up)

  uint64_t total = 0;
  for (const auto& [h, t] : needed) total += t->numel() * DTypeSize(t->dtype);
  if (opts_.on_start) opts_.on_start(total);

  // 3. Allocations: each contiguous group once, every other node once.
  for (const auto& [ws, g] : candidates) {
    Key key;
    for (const HostTensor* t : g) key.push_back(t->node);
    bool exclusive = true;
    for (const Hash& h : key) exclusive &= uses[h] == group_count[key];
    if (!exclusive) continue;
    auto it = groups.find(key);
    if (it == groups.end()) {
      uint64_t bytes = 0;
      int64_t rows = 0;
      for (const HostTensor* t : g) {
        bytes += t->numel() * DTypeSize(t->dtype);
        rows += t->rows();
      }
      allocations_.emplace_back(bytes, g.size() == 3 ? "fused q/k/v weights" : "fused gate/up weights");
      char* base = allocations_.back().as<char>();
      uint64_t off = 0;
      for (const HostTensor* t : g) {
        DeviceTensor d{base + off, t->dtype, t->rows(), t->cols(), t->zero};
        tensors_.emplace(t->node, d);
        off += t->numel() * DTypeSize(t->dtype);
      }
      DeviceTensor whole{base, g[0]->dtype, rows, g[0]->cols(), false};
      it = groups.emplace(key, whole).first;
      (g.size() == 3 ? stats_.fused_qkv : stats_.fused_gate_up) += 1;
    }
    (g.size() == 3 ? fused_of[ws].first : fused_of[ws].second) = it->second;
  }
  for (const auto& [h, t] : needed) {
    if (tensors_.count(h)) continue;
    allocations_.emplace_back(t->numel() * DTypeSize(t->dtype), "a weight tensor");
    tensors_.emplace(h, DeviceTensor{allocations_.back().get(), t->dtype, t->rows(), t->cols(), t->zero});
  }
  stats_.distinct_tensors = static_cast<int>(needed.size());
  for (const auto& [h, t] : needed) stats_.tensor_bytes += t->numel() * DTypeSize(t->dtype);

  // 4. Materialize, sources before the scale/cast nodes made from them, so a
  //    derived node whose source is itself resident reads it on the device.
  std::map<Hash, int> depth_memo;
  std::function<int(const Hash&)> depth = [&](const Hash& h) -> int {
    if (auto it = depth_memo.find(h); it != depth_memo.end()) return it->second;
    const TensorNode n = reader_.Node(h);
    int d = 0;
    if (n.op == TensorNode::Op::kCast || n.op == TensorNode::Op::kScale) d = 1 + depth(n.src);
    depth_memo[h] = d;
    return d;
  };
  std::vector<std::pair<int, Hash>> order;
  uint64_t max_blob = 0;
  for (const auto& [h, t] : needed) {
    order.emplace_back(depth(h), h);
    max_blob = std::max<uint64_t>(max_blob, t->numel() * DTypeSize(t->dtype));
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

  // Staging slots no larger than the largest tensor (tiny models pin little).
  StagingUploader uploader(stream_, opts_.staging_slots,
                           std::min<uint64_t>(opts_.staging_slot_bytes, std::max<uint64_t>(max_blob, 4096)));
  uploader_ = &uploader;
  for (const auto& [d, h] : order) {
    Materialize(h, const_cast<void*>(tensors_.at(h).data), /*count_chunks=*/true);
    resident_[h] = true;
  }
  uploader.Finish();
  stats_.blob_bytes_read = uploader.bytes_read();
  stats_.pinned_bytes = uploader.pinned_bytes();
  uploader_ = nullptr;

  // 5. Per weight set views.
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
    if (auto it = fused_of.find(ws.get()); it != fused_of.end()) {
      l.qkv = it->second.first;
      l.gate_up = it->second.second;
    }
    layers_.emplace(ws.get(), l);
  }
  embed_ = Bind(model.embed);
  final_norm_ = Bind(model.final_norm);
  lm_head_ = Bind(model.lm_head);
  stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

DeviceTensor DeviceWeights::Bind(const HostTensor* t) const {
  if (!t) return {};
  return tensors_.at(t->node);
}

const DeviceLayer& DeviceWeights::Layer(const WeightSet* ws) const {
  auto it = layers_.find(ws);
  if (it == layers_.end()) throw Error("internal: weight set " + ws->layer.Hex() + " is not resident on the device");
  return it->second;
}

const DeviceTensor* DeviceWeights::Find(const Hash& h) const {
  auto it = tensors_.find(h);
  return it == tensors_.end() ? nullptr : &it->second;
}

void DeviceWeights::Materialize(const Hash& h, void* dst, bool count_chunks) {
  // count_chunks: `h` is one of the model's tensors (not a nested source), and
  // its bytes count towards the progress total.
  const TensorNode n = reader_.Node(h);  // a copy: the recursion may grow the reader's cache
  const uint64_t nbytes = n.nbytes();
  auto advance = [&](uint64_t b) {
    if (opts_.bytes_done) *opts_.bytes_done += b;
  };
  // A source already on the device with the host's exact bytes.
  auto resident_src = [&]() -> const DeviceTensor* {
    auto it = resident_.find(n.src);
    if (it == resident_.end() || !it->second || memset_zero_.count(n.src)) return nullptr;
    return &tensors_.at(n.src);
  };
  switch (n.op) {
    case TensorNode::Op::kBlob:
      uploader_->Upload(store_.BlobPath(n.blob), nbytes, dst, "tensor node " + h.Hex(),
                        [&](uint64_t b) { if (count_chunks) advance(b); });
      return;
    case TensorNode::Op::kZeros:
      CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, stream_));
      if (count_chunks) advance(nbytes);
      return;
    case TensorNode::Op::kScale: {
      if (n.factor == 0.0 && count_chunks) {
        // A zero tensor of the model (HostTensor::zero: the host callocs it).
        // Nested under a cast it is computed instead, below, so that -0.0
        // (negative source elements) comes out as on the host.
        CUDA_CHECK(cudaMemsetAsync(dst, 0, nbytes, stream_));
        memset_zero_.insert(h);
        advance(nbytes);
        return;
      }
      const TensorNode src = reader_.Node(n.src);
      if (src.dtype != n.dtype || src.numel() != n.numel())
        throw Error("tensor node " + h.Hex() + " scales node " + n.src.Hex() +
                    " of another dtype or size; the store is damaged, run `strata verify`");
      if (const DeviceTensor* s = resident_src()) {
        ScaleOnDevice(n.dtype, s->data, dst, n.numel(), n.factor, stream_);
      } else {
        Materialize(n.src, dst, false);  // the source in place, then scaled in place
        ScaleOnDevice(n.dtype, dst, dst, n.numel(), n.factor, stream_);
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
        CastOnDevice(src.dtype, s->data, n.dtype, dst, n.numel(), stream_);
      } else if (src.dtype == n.dtype) {
        Materialize(n.src, dst, false);
      } else {
        DeviceBuffer tmp(src.nbytes(), "a cast's source tensor");
        Materialize(n.src, tmp.get(), false);
        CastOnDevice(src.dtype, tmp.get(), n.dtype, dst, n.numel(), stream_);
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // before tmp is freed
      }
      if (count_chunks) advance(nbytes);
      return;
    }
  }
}

}  // namespace strata::cuda
