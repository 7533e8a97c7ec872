// Checking a store against formats/STORE_FORMAT.md: every blob rehashed (in
// parallel, streaming), every node's name, kind and references, tensor sizes,
// refs; each damaged object reported with the variants it breaks.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/formats/store.h"

namespace strata {

struct VerifyOptions {
  // Variants to check (only what they reach); empty: the whole store, including
  // objects no variant references.
  std::vector<std::string> names;
  bool quick = false;  // check blob sizes but do not rehash blob bytes
  // Called once with the blob bytes about to be rehashed; `bytes_done` advances.
  std::function<void(uint64_t total)> on_rehash_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
};

// One damaged object.
struct Damage {
  std::string kind;     // "blob", "node" or "ref"
  std::string hash;     // the object's hash; for a ref, the hash it holds ("" when none)
  std::string path;     // the file, relative to the store root
  std::string problem;  // what is wrong, in words
  std::vector<std::string> variants;  // refs that reach it (sorted)
};

struct VerifyReport {
  uint64_t refs = 0, nodes = 0, blobs = 0;  // objects checked
  uint64_t blob_bytes = 0;                  // bytes of the blobs checked
  uint64_t rehashed_bytes = 0;              // bytes actually read and hashed
  std::vector<Damage> damage;               // sorted by kind, then hash
  bool clean() const { return damage.empty(); }
  // Refs reached by any damage, sorted.
  std::vector<std::string> BrokenVariants() const;
  // {"store","quick","clean","checked":{"refs","nodes","blobs","blob_bytes",
  //  "rehashed_bytes"},"damaged":[{"kind","hash","path","problem","variants"}],
  //  "broken_variants":[...]}
  Json ToJson(const Store& store, bool quick) const;
};

// Checks the store (or what `opts.names` reach) and returns what is damaged;
// damage is reported, never thrown. Takes the store lock shared, so a running
// gc cannot sweep objects from under it. Throws Error only when a name in
// `opts.names` is not a variant in the store, or the store cannot be listed.
VerifyReport Verify(const Store& store, const VerifyOptions& opts);

}  // namespace strata
