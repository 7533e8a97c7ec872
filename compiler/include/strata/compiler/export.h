// Writing a variant back out as the Hugging Face checkpoint mergekit would
// have written: same tensors bit for bit, same shards, same index.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "strata/formats/store.h"

namespace strata {

struct ExportOptions {
  uint64_t shard_size = 5'000'000'000;  // mergekit's default "5B"
  bool force = false;                   // replace a non-empty OUTDIR
  bool verify = true;                   // hash every blob byte read (fail naming a corrupt blob)
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
};

struct ExportStats {
  uint64_t tensor_bytes = 0;
  uint64_t bytes_written = 0;  // all files
  int shards = 0;
  size_t tensors = 0;
};

// Parses "5B", "500M", "2000000", "1.5G", "2e9" (decimal k/M/B/G as mergekit's
// parse_kmb, plus GB/GiB spellings) into a whole number of bytes from 1 to
// 2^63, in exact integer arithmetic. Throws Error saying the valid form for
// anything else (fractions of a byte, 0, overflow, not a number).
uint64_t ParseByteSize(const std::string& s);

// Exports variant `name` into `outdir`: safetensors shards (mergekit's shard
// rule and names), model.safetensors.index.json when sharded, config.json, the
// tokenizer files, and the plan as mergekit_config.yml. Everything is written
// into a temporary directory (inside `outdir` when it exists and is empty, so
// a mount point works; else beside it) and moved into place at the end, so a
// failure or a signal (Interrupted) leaves `outdir` as it was; temporaries of
// exports killed outright are removed by the next export to the same place.
// Throws Error when `outdir` exists and is not empty (unless `force`), the
// variant is unknown or incomplete (RequireCompleteVariant), a blob is corrupt
// (with `verify`), the store is damaged, or the variant was removed meanwhile.
ExportStats Export(const Store& store, const std::string& name, const std::string& outdir,
                   const ExportOptions& opts);
// Export of the variant node `variant`; `into_empty`: `outdir` exists and is
// empty, and the files are moved into it.
ExportStats ExportVariant(const Store& store, const Hash& variant, const std::string& outdir, bool into_empty,
                          const ExportOptions& opts);

}  // namespace strata
