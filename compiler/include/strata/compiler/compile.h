// Compiling a plan into the store: resolve sources, hash each distinct source
// tensor once (streaming, parallel, bounded memory), build tensor/layer/variant
// nodes, and name the variant.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "strata/compiler/plan.h"
#include "strata/compiler/quantize.h"
#include "strata/formats/store.h"

namespace strata {

struct CompileOptions {
  std::string name;    // the ref to write; empty: the plan file's stem
  bool force = false;  // replace a ref that names a different variant
  // --random-seed: the seed of DARE's and DELLA's draws (docs/merge_methods.md).
  uint64_t random_seed = 0;
  // Called once with the number of source bytes that must be read (0 when
  // everything comes from the source cache); `bytes_done` then advances.
  std::function<void(uint64_t total)> on_ingest_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
  // --quantize: the variant named is the plan's output quantized with this
  // mix, each layer as in its source model (QuantizeOptions::by_output_layer
  // false), so a plan over an already quantized base writes no new blob.
  std::optional<QuantMix> quantize;
  std::function<void(uint64_t total)> on_quantize_start;
  std::atomic<uint64_t>* elements_done = nullptr;
};

struct CompileStats {
  Hash variant;
  std::string name;
  int layers = 0, distinct_layers = 0;
  uint64_t logical_bytes = 0;     // bytes of the output model as a checkpoint
  uint64_t source_tensors = 0;    // distinct source tensors referenced
  uint64_t cached_tensors = 0;    // of which the source cache knew the hash
  uint64_t bytes_read = 0;        // source bytes read
  uint64_t blobs_written = 0, blob_bytes_written = 0;
  bool ref_unchanged = false;     // the name already pointed at this variant
  std::vector<std::string> warnings;
  std::optional<QuantizeStats> quantized;  // with CompileOptions::quantize
};

// The default variant name for a plan path: its file name without extension.
std::string DefaultVariantName(const std::string& plan_path);

// Throws Error (saying to pick another with --name) unless `name` is a valid
// variant name (Store::ValidRefName).
void RequireVariantName(const std::string& name);
// Points ref `name` at `variant`. Returns true when it already did (nothing
// is written). Throws Error when it names another variant and `force` is
// not set, or the write fails.
bool WriteVariantRef(Store& store, const std::string& name, const Hash& variant, bool force);

// `strata compile FILE.gguf`: the plan that takes every layer of the GGUF
// file `path` as it is (passthrough), named after the file. Throws Error
// naming the file when it is not a GGUF file or has no block count.
Plan GgufImportPlan(const std::string& path);

// Compiles `plan`. A plan's model may be a GGUF file (a path ending in .gguf):
// its Q/K rows go back to HF's order, quantized tensors stay quantized, and
// F32 norms exact in the model's type are stored in it (docs/gguf.md). On success the store holds every object the variant needs
// and `opts.name` points at it. Throws Error (naming plan:line:col where the
// plan is at fault) when a model cannot be found, a layer_range is past a
// model's layers, tensors are missing or shapes disagree, the name exists for
// another variant without `force`, or a write fails; on failure no ref is
// changed and no partial object is visible.
CompileStats Compile(Store& store, const Plan& plan, const CompileOptions& opts);

}  // namespace strata
