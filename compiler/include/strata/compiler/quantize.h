// Quantizing a variant in the store: each distinct tensor node is quantized
// once per type (llama-quantize's reference quantizers and its per-tensor
// mix), stored as a `quant` node, and remembered in the quantization cache,
// so that a variant over the same weights (a DUS of a quantized base) writes
// nothing new. docs/quantization.md has the rules.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>

#include "strata/formats/quant.h"
#include "strata/formats/store.h"

namespace strata {

struct QuantizeOptions {
  QuantMix mix = QuantMix::kQ4_K_M;
  std::string name;    // the ref to write; empty: "<source>-<mix in lower case>"
  bool force = false;  // replace a ref that names a different variant
  // The layer index the mix's rules see: false (default) each layer's source
  // layer in its source model, so a layer is quantized the same wherever a
  // plan stacks it; true its position in this variant, as llama-quantize
  // sees a GGUF of it.
  bool by_output_layer = false;
  bool recompute = false;  // quantize even what the quantization cache knows (same bytes; for timing)
  // Called once with the number of elements to quantize (0 when the cache
  // has them all); `elements_done` then advances.
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* elements_done = nullptr;
};

struct QuantizeStats {
  Hash variant;
  std::string name;
  uint64_t tensors = 0;    // distinct (tensor, type) results the variant needs
  uint64_t quantized = 0;  // of which computed now
  uint64_t cached = 0;     // of which found in the quantization cache
  uint64_t kept = 0;       // distinct tensors left as they are (norms, zeros, rows no block divides)
  uint64_t blobs_written = 0, blob_bytes_written = 0;
  uint64_t bytes_before = 0, bytes_after = 0;  // distinct tensor bytes of the source and the result
  std::map<std::string, int> types;            // output tensors by stored type ("Q4_K", "BF16", ...)
  bool ref_unchanged = false;
};

// The name QuantizeVariant writes by default: "<source>-q4_k_m".
std::string DefaultQuantizedName(const std::string& source, QuantMix mix);

// Quantizes variant `source` of `store` with `opts.mix` and names the result
// `opts.name`. Tensors already quantized are kept as they are. Throws Error
// when `source` is not a variant, the variant is incomplete or damaged (a
// missing or corrupt blob), the name is invalid or names another variant
// without `force`, or a write fails; on failure no ref changes and nothing
// partial is visible (objects written before the failure are garbage for gc).
QuantizeStats QuantizeVariant(Store& store, const std::string& source, const QuantizeOptions& opts);

}  // namespace strata
