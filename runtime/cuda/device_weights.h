// Device residency of a variant's weights: one device allocation per distinct
// tensor node (keyed by its hash), so a layer repeated at several depths, or a
// tensor shared by several layers, is in VRAM once and a variant's weight
// bytes on the device equal its distinct bytes.
//
// - blob nodes are streamed from the store (upload.h: constant host memory);
// - zeros and scale-0 nodes are cudaMemsetAsync;
// - scale and cast nodes: the source is made resident (or uploaded into the
//   destination / a temporary) and the op is applied on the device with
//   PyTorch's arithmetic (convert.cuh), bit for bit what the host computes;
// - a weight set's q/k/v and gate/up are laid out contiguously in one
//   allocation (so one GEMM/GEMV serves them) when those tensors are used
//   nowhere else in the model, which keeps every node resident exactly once.
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
  // Called once with the bytes of weights to make resident; `bytes_done`
  // (may be null) then advances to that total (the ProgressBar convention).
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
  bool fuse = true;  // lay out q/k/v and gate/up contiguously where it keeps residency exact
  size_t staging_slots = kStagingSlots;
  size_t staging_slot_bytes = kStagingSlotBytes;
};

struct DeviceWeightStats {
  uint64_t tensor_bytes = 0;     // device bytes of all resident tensor nodes (= distinct bytes)
  uint64_t blob_bytes_read = 0;  // bytes read from the store's blobs
  uint64_t pinned_bytes = 0;     // host staging memory used while loading
  int distinct_tensors = 0, fused_qkv = 0, fused_gate_up = 0;
  double seconds = 0;
};

class DeviceWeights {
 public:
  // Makes every tensor `model` uses resident on the current device. `model`
  // only needs metadata (WeightStore with host_data false will do): tensors
  // are found by HostTensor::node. Synchronizes `stream` before returning.
  // Throws Error naming the node when a node or blob is missing or malformed,
  // or device memory runs out.
  DeviceWeights(const Store& store, const Model& model, const DeviceLoadOptions& opts, cudaStream_t stream);

  const DeviceLayer& Layer(const WeightSet* ws) const;
  const DeviceTensor& embed() const { return embed_; }
  const DeviceTensor& final_norm() const { return final_norm_; }
  const DeviceTensor& lm_head() const { return lm_head_; }
  // The resident tensor of node `h`, or null.
  const DeviceTensor* Find(const Hash& h) const;
  const DeviceWeightStats& stats() const { return stats_; }

 private:
  void Materialize(const Hash& h, void* dst, bool count_chunks);
  DeviceTensor Bind(const HostTensor* t) const;

  const Store& store_;
  TensorReader reader_;
  cudaStream_t stream_;
  DeviceLoadOptions opts_;
  StagingUploader* uploader_ = nullptr;  // valid during construction
  std::vector<DeviceBuffer> allocations_;
  std::map<Hash, DeviceTensor> tensors_;
  std::map<Hash, bool> resident_;  // materialized so far
  std::set<Hash> memset_zero_;     // scale-0 nodes made by memset (+0.0 where torch may give -0.0)
  std::map<const WeightSet*, DeviceLayer> layers_;
  DeviceTensor embed_, final_norm_, lm_head_;
  DeviceWeightStats stats_;
};

}  // namespace strata::cuda
