// Host residency of a variant's weights: each distinct tensor node exists once.
// Raw blobs are used in place through mmap (no copy); zeros, scale and cast
// nodes are materialized once per distinct node.
#pragma once

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "strata/formats/materialize.h"
#include "strata/formats/store.h"

namespace strata {

struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // see `quant`
  // All elements are zero (a `zeros` node or a scale-0 node): the runtime may
  // skip work that only adds such a tensor's products.
  bool zero = false;
  Hash node{};  // the tensor node these are the values of (device backends upload by it)
  // kNone: `data` holds numel x DTypeSize(dtype) bytes. Otherwise rows of
  // `quant` blocks (QuantRowBytes(quant, cols) bytes each), read in place.
  QuantType quant = QuantType::kNone;
  // CPU only, or null: the first rows() / 16 * 16 quantized rows again,
  // interleaved in panels of 16 for the VNNI kernels (runtime/src/cpu_quant.h).
  // `data` stays valid (for gathers and the last rows() % 16 rows).
  const void* panels = nullptr;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
  uint64_t numel() const;
  // Bytes of `data`: the quantized rows, or numel x DTypeSize(dtype).
  uint64_t nbytes() const;
  // Bytes of one row (of `cols()` elements).
  uint64_t row_bytes() const;
};

class WeightStore {
 public:
  // With `host_data` false, Get() returns each tensor's dtype, shape, zero
  // flag and node but no data (data == nullptr): nothing is mapped or
  // materialized, for backends that read the store themselves (CUDA).
  // With `verify`, every blob a tensor is made from is hashed once when it is
  // first loaded (docs/design.md, "Verified loads", has the cost).
  explicit WeightStore(const Store& store, bool host_data = true, bool verify = true)
      : store_(store), reader_(store, verify), host_data_(host_data), verify_(verify) {}
  ~WeightStore();
  WeightStore(const WeightStore&) = delete;
  WeightStore& operator=(const WeightStore&) = delete;
  // The tensor for node `h`, resident once however often it is asked for.
  // Throws Error naming the node when it or its blob is missing, corrupt
  // (in size, or with `verify` in its bytes), or malformed.
  const HostTensor& Get(const Hash& h);
  // With `verify`: hashes every blob the tensor nodes `nodes` are made from,
  // on every core, so that the Get()s that follow find them checked. Throws
  // Error naming the first corrupt blob. Without `verify`, does nothing.
  void VerifyAll(const std::vector<Hash>& nodes);
  // Bytes this process holds for weights: mapped blob bytes + materialized bytes.
  uint64_t mapped_bytes() const { return mapped_bytes_; }
  uint64_t materialized_bytes() const { return materialized_bytes_; }
  // Bytes of CPU panels (HostTensor::panels), and mapped bytes given back
  // because a tensor's panels hold all its rows.
  uint64_t packed_bytes() const { return packed_bytes_; }
  uint64_t released_bytes() const { return released_bytes_; }
  // What the weights hold in this process's memory once loaded:
  // mapped - released + materialized + packed.
  uint64_t resident_bytes() const { return mapped_bytes_ - released_bytes_ + materialized_bytes_ + packed_bytes_; }

 private:
  void Pack(HostTensor& t, const Hash& blob_hash, const MappedFile& blob);
  const Store& store_;
  TensorReader reader_;
  std::map<Hash, std::unique_ptr<MappedFile>> blobs_;
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  std::map<Hash, std::unique_ptr<char, FreeDeleter>> owned_;
  std::map<Hash, HostTensor> tensors_;
  std::vector<std::pair<void*, uint64_t>> panels_;  // anonymous mappings
  std::map<std::tuple<Hash, int, int64_t>, const void*> panels_by_blob_;  // (blob, quant, cols)
  uint64_t mapped_bytes_ = 0, materialized_bytes_ = 0, packed_bytes_ = 0, released_bytes_ = 0;
  bool host_data_ = true, verify_ = true;
};

}  // namespace strata
