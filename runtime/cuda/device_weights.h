// Device residency of weights: one device allocation per distinct tensor node
// (keyed by its hash), so a layer repeated at several depths, or a tensor
// shared by several layers or by several variants of one store, is in VRAM
// once. A DeviceWeights is a pool that models are added to one after another
// (Add); each Add uploads only the nodes not yet resident and returns that
// model's bindings (ModelBindings: views into the pool).
//
// - blob nodes are streamed from the store (upload.h: constant host memory);
// - zeros and scale-0 nodes are cudaMemsetAsync;
// - scale and cast nodes: the source is made resident (or uploaded into the
//   destination / a temporary) and the op is applied on the device with
//   PyTorch's arithmetic (convert.cuh), bit for bit what the host computes;
//   a source already resident in the pool (from any model) is read there.
//
// Fused layouts (one GEMM/GEMV over q/k/v, or over gate/up). A weight set's
// group (q, k, v) or (gate, up) -- distinct nodes, one dtype, one column
// count, 2-D -- is bound as one fused view exactly when its members are
// resident back to back, in that order, inside one allocation. An Add lays a
// group out that way when (a) none of its members is resident yet (in the
// pool or earlier in this Add) and (b) within the model being added those
// nodes are used by this group only (possibly in several weight sets that
// share it). So every node stays resident exactly once across the whole pool:
// - a later model whose weight set has the same group reuses the fused view;
// - a node inside another model's fused allocation is a valid standalone
//   tensor (a pointer into that allocation) for any other role;
// - a group whose members are resident but not back to back (unfused by an
//   earlier model, or split across groups) takes the unfused path (three or
//   two products); nothing is copied to make it contiguous.
// A model's layout can thus depend on what was added before it (a private
// pool always gives the one-model rule above).
//
// Threading: Add mutates the pool and is not for concurrent use (backends are
// made one after another on one thread). Resident tensors never move and are
// freed only with the pool, so bindings handed out earlier stay valid, and
// backends already bound may run while another model is added.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "device_memory.h"
#include "strata/formats/materialize.h"
#include "strata/runtime/model.h"
#include "upload.h"

namespace strata::cuda {

struct DeviceTensor {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 1, cols = 1;
  bool zero = false;  // every element is 0 (zeros node, scale-0 node)
  uint64_t numel() const { return static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols); }
  uint64_t nbytes() const { return numel() * DTypeSize(dtype); }
  explicit operator bool() const { return data != nullptr; }
};

struct DeviceLayer {
  DeviceTensor attn_norm, ffn_norm, q, k, v, o, gate, up, down, q_bias, k_bias, v_bias;
  // (Q + 2KV, H): q, k, v rows back to back in one allocation; empty when not fused.
  DeviceTensor qkv;
  // (2I, H): gate rows then up rows; empty when not fused.
  DeviceTensor gate_up;
};

struct DeviceLoadOptions {
  // Called once with the bytes this Add will make resident (the nodes not yet
  // in the pool); `bytes_done` (may be null) then advances to that total (the
  // ProgressBar convention).
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
  bool fuse = true;  // lay out new q/k/v and gate/up contiguously where it keeps residency exact
  size_t staging_slots = kStagingSlots;
  size_t staging_slot_bytes = kStagingSlotBytes;
};

// Figures of one Add (one model).
struct DeviceWeightStats {
  uint64_t tensor_bytes = 0;      // device bytes of the model's distinct tensor nodes (what it binds)
  uint64_t uploaded_bytes = 0;    // of those, the bytes this Add made resident (new to the pool)
  uint64_t blob_bytes_read = 0;   // bytes read from the store's blobs
  uint64_t pinned_bytes = 0;      // host staging memory used while loading
  int distinct_tensors = 0;       // the model's distinct tensor nodes
  int uploaded_tensors = 0;       // of those, the ones new to the pool
  int fused_qkv = 0, fused_gate_up = 0;  // distinct fused views the model binds
  double seconds = 0;
};

// One model's views into a pool; valid while the pool lives.
class ModelBindings {
 public:
  // REQUIRES: `ws` is one of the bound model's weight sets (else throws Error).
  const DeviceLayer& Layer(const WeightSet* ws) const;
  const DeviceTensor& embed() const { return embed_; }
  const DeviceTensor& final_norm() const { return final_norm_; }
  const DeviceTensor& lm_head() const { return lm_head_; }
  const DeviceWeightStats& stats() const { return stats_; }

 private:
  friend class DeviceWeights;
  std::map<const WeightSet*, DeviceLayer> layers_;
  DeviceTensor embed_, final_norm_, lm_head_;
  DeviceWeightStats stats_;
};

class DeviceWeights {
 public:
  // An empty pool over `store`, which must outlive it. Allocates nothing.
  explicit DeviceWeights(const Store& store);
  DeviceWeights(const DeviceWeights&) = delete;
  DeviceWeights& operator=(const DeviceWeights&) = delete;

  // Makes every tensor `model` uses resident on the current device (only the
  // nodes not yet resident are allocated and uploaded) and returns the
  // model's bindings. `model` only needs metadata (WeightStore with host_data
  // false will do): tensors are found by HostTensor::node. Work runs on
  // `stream`, synchronized before returning. Throws Error naming the node
  // when a node or blob is missing or malformed, or device memory runs out;
  // the pool is then as it was before the call.
  // REQUIRES: no other Add on this pool is running (see the file comment).
  ModelBindings Add(const Model& model, const DeviceLoadOptions& opts, cudaStream_t stream);

  // The resident tensor of node `h`, or null.
  const DeviceTensor* Find(const Hash& h) const;
  uint64_t bytes() const { return bytes_; }  // device bytes of all resident tensor nodes
  int tensors() const { return static_cast<int>(tensors_.size()); }

 private:
  struct Resident {
    DeviceTensor t;
    size_t alloc = 0;  // index into allocations_
  };
  struct AddState;
  void Allocate(AddState& st, const std::vector<const HostTensor*>& group, const char* what);
  DeviceTensor FusedView(const std::vector<const HostTensor*>& group) const;
  void Materialize(AddState& st, const Hash& h, void* dst, bool count_chunks);
  void Rollback(const AddState& st);
  DeviceTensor Bind(const HostTensor* t) const;

  const Store& store_;
  TensorReader reader_;
  std::vector<DeviceBuffer> allocations_;
  std::map<Hash, Resident> tensors_;  // allocated (materialized once an Add completes)
  std::set<Hash> resident_;           // materialized so far
  std::set<Hash> memset_zero_;        // scale-0 nodes made by memset (+0.0 where torch may give -0.0)
  uint64_t bytes_ = 0;
};

}  // namespace strata::cuda
