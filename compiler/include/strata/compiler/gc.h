// Garbage collection of a store: mark everything the refs reach, sweep the
// rest (nodes before the blobs they name), old temporaries, and source-cache
// entries whose blobs are gone. Runs under the store's exclusive lock.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/formats/store.h"

namespace strata {

struct GcOptions {
  bool dry_run = false;    // report what would go, remove nothing
  int64_t grace_s = 3600;  // files in tmp/ younger than this are kept
  // Called once when the lock is not granted within a second (compiles or a
  // verify are running), to say why gc waits.
  std::function<void()> on_lock_wait;
};

struct GcRemoved {
  std::string kind;  // "blob", "node" or "tmp"
  std::string hash;  // "" for tmp files
  std::string path;  // relative to the store root
  uint64_t bytes = 0;
};

struct GcReport {
  std::vector<GcRemoved> removed;  // in the order removed: nodes, blobs, tmp
  uint64_t blobs = 0, blob_bytes = 0, nodes = 0, node_bytes = 0, tmp_files = 0, tmp_bytes = 0;
  uint64_t kept_blobs = 0, kept_nodes = 0;
  uint64_t cache_entries = 0;  // source-cache tensor entries dropped (their blob is gone)
  uint64_t cache_files = 0;    // source-cache files rewritten or removed
  uint64_t BytesFreed() const { return blob_bytes + node_bytes + tmp_bytes; }
  // {"dry_run","bytes_freed","blobs","blob_bytes","nodes","node_bytes",
  //  "tmp_files","tmp_bytes","kept_blobs","kept_nodes","cache_entries",
  //  "cache_files","removed":[{"kind","hash","path","bytes"}]}
  Json ToJson(bool dry_run) const;
};

// Takes the store lock exclusively (waiting for running compiles), marks every
// object reachable from a ref, and removes the rest, then tmp/ files older than
// the grace period, then source-cache entries naming removed or absent blobs.
// With `dry_run` the report is the same and nothing is removed. Throws Error
// before removing anything when a ref is garbage or a reachable node is corrupt
// (what it references cannot be known, so nothing is safe to sweep); throws
// Error when a removal fails, leaving the store consistent (a later gc
// finishes the job).
GcReport CollectGarbage(Store& store, const GcOptions& opts);

// Removes the refs `names` (all or none: every name is checked first). The
// objects stay until gc. Throws Error listing the variants when a name is not
// one of them, or on an I/O failure.
void RemoveVariants(Store& store, const std::vector<std::string>& names);

}  // namespace strata
