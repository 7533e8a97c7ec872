// Producing a tensor node's bytes (blob, zeros, scale, cast; quant nodes
// dequantized into their dtype) in bounded memory,
// with PyTorch's arithmetic so that exports match mergekit bit for bit.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "strata/formats/safetensors.h"
#include "strata/formats/variant.h"

namespace strata {

// The longest chain of derived nodes (scale, cast, merge) above a leaf node
// that strata reads (STORE_FORMAT.md). Compile writes at most 3; the bound keeps
// every walk of a chain, recursive or not, small.
inline constexpr int kMaxTensorChain = 64;

// Why `n` cannot be derived from `src` (scale: same dtype and element count;
// cast: same element count), or "" when it can. REQUIRES: n is scale or cast.
std::string DerivedNodeProblem(const TensorNode& n, const TensorNode& src);

class TensorReader {
 public:
  // With `verify`, every blob byte read is hashed, and Read/AppendTo throw
  // Error naming the blob when a blob's bytes do not hash to its name (each
  // blob is checked once, streaming when read in order, else by a whole pass).
  explicit TensorReader(const Store& store, bool verify = false);
  ~TensorReader();

  // The parsed node; cached. Throws Error when it (or a node below it) is
  // missing or malformed, when its chain of derived nodes is longer than
  // kMaxTensorChain, or when a derived node does not fit its source.
  const TensorNode& Node(const Hash& h);
  // Writes elements [begin, begin+count) of tensor `h` to `out` (count x the
  // node's dtype size bytes). Throws Error when a blob is missing, has the
  // wrong size, or (with verify) is corrupt.
  void Read(const Hash& h, uint64_t begin, uint64_t count, void* out);
  // Adds the blob tensor `h` reads (none for zeros) to `blobs`, with its size.
  void CollectBlobs(const Hash& h, std::map<Hash, uint64_t>& blobs);
  // Appends the whole tensor to `w`, streaming in chunks (without verify, a
  // blob goes file to file with copy_file_range). `progress` (may be null)
  // advances by bytes. Throws as Read.
  void AppendTo(const Hash& h, SafetensorsWriter& w, std::atomic<uint64_t>* progress);
  // The blob `strata materialize` stored for derived node `h` (merge, cast,
  // scale), which Read, AppendTo and CollectBlobs then use in its place;
  // nullopt for a leaf, a miss, or when materialized blobs are not used.
  std::optional<Hash> Materialized(const Hash& h);
  // Off: every derived node is computed from its inputs (`strata materialize`
  // itself, and checks that recompute).
  void UseMaterialized(bool on) {
    use_materialized_ = on;
    materialized_.clear();
  }
  // Hashes blob `blob` of `size` bytes in one pass unless it was verified
  // already. Throws Error naming the blob when its bytes do not match its name.
  void VerifyBlob(const Hash& blob, uint64_t size);
  // VerifyBlob for many blobs (blob -> size) at once, on every core, each
  // hashed through a read-only mapping. Throws Error naming the first corrupt blob.
  void VerifyBlobs(const std::map<Hash, uint64_t>& blobs);
  // The same for a blob already in memory (a mapping of its file).
  void VerifyMapped(const Hash& blob, const void* data, uint64_t size);

 private:
  struct Stream;  // a blob being hashed as it is read in order
  int BlobFd(const Hash& blob, uint64_t expected_size);
  void ReadQuant(const TensorNode& n, uint64_t begin, uint64_t count, void* out);
  // Asks the kernel to start reading elements [begin, begin+count) of `h`'s
  // blob (through scale/cast nodes); a hint, never an error.
  void Prefetch(const Hash& h, uint64_t begin, uint64_t count);
  void ReadMerge(const Hash& h, const TensorNode& n, uint64_t begin, uint64_t count, void* out);
  const TensorNode& NodeAt(const Hash& h, const Hash& top, int level);
  void Hashed(const Hash& blob, uint64_t offset, const void* data, uint64_t n, uint64_t size);
  [[noreturn]] void Corrupt(const Hash& blob, const Hash& got) const;
  const Store& store_;
  const bool verify_;
  std::map<Hash, TensorNode> nodes_;
  std::map<Hash, int> depth_;  // derived nodes above the blob or zeros node
  std::set<Hash> verified_;
  std::map<Hash, std::unique_ptr<Stream>> streams_;
  bool use_materialized_ = true;
  std::map<Hash, std::optional<Hash>> materialized_;  // memo of Materialized()
  // The last merge node computed whole, for reads of it in parts (export).
  std::optional<Hash> merged_node_;
  std::vector<char> merged_;
  // Buffers of the chunked merges, kept from one chunk to the next (a fresh
  // 16 MB allocation per chunk and input costs page faults and zeroing), one
  // set per level of merges nested in a merge's inputs.
  struct MergeScratch;
  std::vector<std::unique_ptr<MergeScratch>> scratch_;
  size_t merge_depth_ = 0;
};

}  // namespace strata
