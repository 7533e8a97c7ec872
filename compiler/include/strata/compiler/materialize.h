// `strata materialize`: the bytes of a variant's computed tensors (merges,
// casts, scales) stored once as blobs, so loads map them instead of computing
// them (formats/STORE_FORMAT.md, "Materialized cache").
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "strata/formats/store.h"

namespace strata {

struct MaterializeOptions {
  bool recompute = false;  // compute again what the cache already holds
  // Called once with the bytes to compute; `bytes_done` then advances.
  std::function<void(uint64_t)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
};

struct MaterializeStats {
  std::string name;
  Hash variant;
  uint64_t tensors = 0;   // distinct tensor nodes of the variant
  uint64_t derived = 0;   // of which computed ones (not zeros)
  uint64_t computed = 0;  // materialized now
  uint64_t cached = 0;    // already materialized
  uint64_t bytes = 0;     // of the derived tensors
  uint64_t blobs_written = 0, blob_bytes_written = 0;
  double seconds = 0;
};

// Materializes every distinct derived tensor node the variant `name` names
// (its embeddings, layers' tensors, norm, lm_head). Memory: one tensor at a
// time (a merge of whole-tensor statistics holds its inputs as float32).
// Holds the store's lock shared, as compile does. Throws Error when the
// variant is unknown or a node cannot be computed; what was stored before the
// failure stays valid.
MaterializeStats MaterializeVariant(Store& store, const std::string& name, const MaterializeOptions& opts);

}  // namespace strata
