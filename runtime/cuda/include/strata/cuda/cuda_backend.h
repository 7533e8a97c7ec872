// The CUDA backend: the forward pass of runtime/cpu_backend.cc on one GPU.
// Weights are resident once per distinct tensor node (runtime/cuda/
// device_weights.h), streamed from the store in constant host memory, in a
// pool that several backends (variants of one store) may share; the KV
// cache is paged (one device pool of bf16 blocks, kv_cache.h's block tables);
// a batch runs every item's tokens as one activation matrix through cuBLAS
// GEMMs (cuBLAS dlopen'd on first use) and tiled attention over each item's
// blocks; one sequence decoding one token replays the fused GEMV/split-K
// kernels as one CUDA graph. Only built when STRATA_HAVE_CUDA.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/formats/store.h"
#include "strata/runtime/backend.h"

namespace strata {

// CUDA devices visible to this process; 0 when there is no device or no
// usable driver (never throws).
int CudaDeviceCount();
// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" for the current device, or why
// there is none.
std::string CudaDeviceSummary();
// Throws Error with a clear message when CudaDeviceCount() is 0.
void RequireCudaDevice();
// cudaMemGetInfo of the current device (creates the context). False when it fails.
bool CudaMemInfo(uint64_t* free_bytes, uint64_t* total_bytes);

struct CudaLoadOptions {
  // Progress of the weight upload in bytes (the ProgressBar convention):
  // on_start(total) once, then bytes_done advances to total.
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
  // Contiguous q/k/v and gate/up where residency stays exact (new tensors laid
  // out so; with a shared pool, fused views of earlier backends reused: see
  // runtime/cuda/device_weights.h). false: the unfused products only.
  bool fuse = true;
  size_t staging_slots = 0;  // 0: the defaults of runtime/cuda/upload.h (4 x 64 MiB pinned)
  size_t staging_slot_bytes = 0;
  // Decode (one token) as one CUDA graph replayed per token: captured on the
  // first decode step, the position read from device memory. false: the same
  // kernels launched one by one (for A/B measurements; results are identical).
  bool graphs = true;
  // One sequence decoding one token takes the fused decode kernels above
  // (batch-1 decode speed). false: it takes the batched GEMM path like any
  // other batch (the tests compare batches against items run one at a time
  // through the same arithmetic).
  bool fast_decode = true;
};

struct CudaStats {
  uint64_t weight_bytes = 0;      // device bytes of the weights this backend binds (= the variant's distinct tensor bytes)
  uint64_t weight_bytes_uploaded = 0;  // of those, the bytes this backend made resident (new to its pool)
  uint64_t weight_bytes_read = 0; // bytes read from the store's blobs (by this backend's load)
  uint64_t kv_cache_bytes = 0;    // the KV pool: kv_stats().total_blocks x block_bytes, allocated up front
  uint64_t scratch_bytes = 0;     // activations and workspaces at their current size
  uint64_t device_bytes = 0;      // all of the above as the backend's allocator counts them now
  uint64_t device_bytes_peak = 0; // the allocator's peak (process-wide)
  uint64_t staging_bytes = 0;     // pinned host memory used while loading (freed after)
  int distinct_tensors = 0, fused_qkv = 0, fused_gate_up = 0;
  int tensors_uploaded = 0;       // of distinct_tensors, those new to the pool
  double load_s = 0;              // weight residency: reads, uploads, device-side ops
  bool decode_graph = false;      // decode steps replay a captured CUDA graph
  int decode_graph_nodes = 0;     // kernels and copies in that graph (0: not captured yet)
  int decode_kernels_per_step = 0;// kernels one decode step launches (graph or not)
};

// Bandwidth of plain device-memory reads, in bytes/s: the best of `reps`
// timed runs (CUDA events) of a kernel that reads `bytes` of device memory
// with 16-byte loads and keeps nothing but a checksum. This is the HBM read
// bound the decode figures are compared with. Throws Error without a device
// or when `bytes` cannot be allocated.
double MeasureDeviceReadBandwidth(uint64_t bytes = uint64_t{4} << 30, int reps = 10);

// Backend's interface (ForwardBatch; BatchOutput::kArgmax is taken on the
// device and only the token id comes back) plus the device's own figures.
class CudaBackend : public Backend {
 public:
  virtual CudaStats stats() const = 0;

 protected:
  explicit CudaBackend(const ModelConfig& c) : Backend(c) {}
};

// Device residency of distinct tensor nodes, shared by the CUDA backends of
// one store (e.g. `strata serve` with a base model, its DUS and its block
// expansion in one process): a tensor node two variants share is uploaded
// once and is in VRAM once. Opaque; held through shared_ptr by whoever made it
// and by every backend built on it, so it lives until the last of them goes.
// Not for concurrent use: make its backends one after another on one thread
// (backends already made may run meanwhile). Tensors stay resident until the
// pool is destroyed (nothing is evicted when a backend goes).
class CudaWeightPool;

// An empty pool over `store`, which must outlive it; allocates nothing until a
// backend is made on it. Throws Error when there is no CUDA device.
std::shared_ptr<CudaWeightPool> MakeCudaWeightPool(const Store& store);
// Device bytes of all tensors resident in `pool` (the union of its backends'
// distinct tensors).
uint64_t CudaWeightPoolBytes(const CudaWeightPool& pool);
// Distinct tensor nodes resident in `pool`.
int CudaWeightPoolTensors(const CudaWeightPool& pool);

// Makes `model`'s weights resident on the current CUDA device, reading them
// from `store` by tensor node (the Model may come from a WeightStore without
// host data). With `pool`, they are made resident in that pool: only tensors
// not already there are uploaded (the progress callbacks of `load` count only
// those bytes), and the backend keeps the pool alive; without one, in a pool
// of the backend's own. `model` and `store` must outlive the backend. Throws
// Error when there is no device, memory runs out, a blob is missing, the
// shapes are unsupported (head_dim odd or > 256), or `pool` belongs to another
// store. A failed weight load leaves `pool` as it was; tensors loaded before a
// later failure (the KV pool's allocation) stay resident in it.
std::unique_ptr<CudaBackend> MakeCudaBackend(const Model& model, const BackendOptions& opts, const Store& store,
                                             const CudaLoadOptions& load = {},
                                             std::shared_ptr<CudaWeightPool> pool = nullptr);

}  // namespace strata
