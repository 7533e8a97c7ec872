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
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
};

struct ExportStats {
  uint64_t tensor_bytes = 0;
  uint64_t bytes_written = 0;  // all files
  int shards = 0;
  size_t tensors = 0;
};

// Parses "5B", "500M", "2000000", "1.5G" (decimal k/M/B/G as mergekit's
// parse_kmb, plus GB/GiB spellings). Throws Error on anything else.
uint64_t ParseByteSize(const std::string& s);

// Exports variant `name` into `outdir`: safetensors shards (mergekit's shard
// rule and names), model.safetensors.index.json when sharded, config.json, the
// tokenizer files, and the plan as mergekit_config.yml. Everything is written
// into a temporary directory beside `outdir` and moved into place at the end,
// so a failure leaves `outdir` as it was. Throws Error when `outdir` exists and
// is not empty (unless `force`), the variant is unknown, or the store is damaged.
ExportStats Export(const Store& store, const std::string& name, const std::string& outdir,
                   const ExportOptions& opts);

}  // namespace strata
