// The content-addressed store: blobs (raw tensor bytes), nodes (canonical
// JSON), refs (names of variants) and the source cache. formats/STORE_FORMAT.md
// is the contract this code follows.
#pragma once

#include <atomic>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "strata/formats/file.h"
#include "strata/formats/hash.h"

namespace strata {

using Json = nlohmann::json;  // sorted keys: dump() is the canonical form

// The newest store format this strata reads and writes. A store is created at
// version 1; the first object that needs version 2 (a quant tensor node)
// raises its marker, so older strata refuse it instead of misreading it.
inline constexpr int kStoreFormatVersion = 3;

// What ingesting one range of a source file produced.
struct IngestResult {
  bool zeros = false;  // every byte was 0: no blob, a `zeros` node
  Hash blob;           // valid when !zeros
  bool wrote = false;  // a new blob file was written (false: already stored)
};

class Store {
 public:
  // The store directory: `flag` when non-empty, else $STRATA_STORE, else
  // ~/.cache/strata.
  static std::string DefaultRoot(const std::string& flag);

  // Opens the store at `root`. With `create`, a missing or empty directory (or
  // one another strata is making into a store right now) is made into a store. Throws Error when `root` is not a store (and not empty),
  // or was written by a newer strata.
  explicit Store(std::string root, bool create = true);

  const std::string& root() const { return root_; }
  int version() const { return version_; }
  // Raises the STORE marker to `version` (atomically) unless it is there
  // already. REQUIRES: version <= kStoreFormatVersion. Throws Error on a
  // failed write.
  void RequireVersion(int version);
  std::string BlobPath(const Hash& h) const;
  std::string NodePath(const Hash& h) const;
  std::string TmpDir() const { return root_ + "/tmp"; }
  // The flock(2) file: compile holds it shared, gc exclusive (STORE_FORMAT.md).
  std::string LockPath() const { return root_ + "/lock"; }
  bool HasBlob(const Hash& h) const;
  // Throws Error unless the object file `path` (of `what`, e.g. "blob <hash>")
  // is a regular file: "missing from the store" only when it does not exist,
  // else what is wrong (permission denied, a directory, a FIFO, ...).
  static void RequireObjectFile(const std::string& what, const std::string& path);
  bool HasNode(const Hash& h) const;

  // Copies [offset, offset+n) of `fd` into a blob in one streaming pass that
  // hashes while it writes; all-zero ranges are reported as zeros and stored
  // as nothing. `progress` (may be null) is advanced by the bytes read.
  // Memory: one buffer of at most 8 MiB. Throws Error on any I/O failure,
  // leaving nothing but (removed) temporaries behind.
  IngestResult IngestRange(int fd, const std::string& what, uint64_t offset, uint64_t n,
                           std::atomic<uint64_t>* progress);
  // Stores `bytes` as a blob (small files: configs, tokenizers, plans; a
  // quantized tensor). `wrote` (may be null) says whether a new file was
  // written (false: the blob was there already).
  Hash PutBlob(std::string_view bytes, bool* wrote = nullptr);
  // Reads a whole blob into memory (small blobs only). Throws Error when it is
  // missing or its bytes do not match its name.
  std::string ReadBlob(const Hash& h) const;

  // Stores a node under the hash of its canonical bytes; returns that hash.
  Hash PutNode(const Json& node);
  // Reads and parses a node, checking its bytes against its name. Throws Error
  // naming the node when it is missing, corrupt or not JSON.
  Json GetNode(const Hash& h) const;

  // Ref names match [A-Za-z0-9][A-Za-z0-9._-]{0,127}.
  static bool ValidRefName(const std::string& name);
  void SetRef(const std::string& name, const Hash& variant);
  // nullopt when there is no such ref. Throws Error when the ref is garbage.
  std::optional<Hash> GetRef(const std::string& name) const;
  // Throws Error listing the known variants when `name` is not one of them.
  Hash ResolveRef(const std::string& name) const;
  std::vector<std::string> ListRefs() const;
  // Removes the ref `name` (unlink, then fsync of refs/ so it stays removed).
  // Returns false when there was no such ref. Throws Error on an I/O failure.
  bool RemoveRef(const std::string& name);

  // Source cache: what a range of a source file hashed to, keyed by the file's
  // identity, the range and the transform its bytes went through on the way
  // in (empty: none; "unpermute:32" for a GGUF's q_proj; STORE_FORMAT.md).
  // Lookup returns nullopt on a miss, or when the blob it names has since
  // left the store.
  struct SourceRangeKey {
    uint64_t offset = 0, n = 0;
    std::string transform;
  };
  std::optional<IngestResult> LookupSource(const FileIdentity& id, uint64_t offset, uint64_t n,
                                           std::string_view transform = {}) const;
  // Records results for one source file (merged with what is there).
  void RecordSources(const FileIdentity& id, const std::vector<std::pair<SourceRangeKey, IngestResult>>& entries);

  // Quantization cache: the quant node that quantizing tensor node `src` to
  // `type` ("Q4_K") made. Lookup returns nullopt on a miss, for a damaged
  // entry, or when that node or its blob has since left the store.
  std::optional<Hash> LookupQuant(const Hash& src, std::string_view type) const;
  // Records one result (atomically; a lost update only costs recomputing it).
  void RecordQuant(const Hash& src, std::string_view type, const Hash& node);
  // Materialized cache (`strata materialize`): the blob that holds the bytes
  // of derived tensor node `node` (a merge, cast or scale), so readers map it
  // instead of computing it. Lookup returns nullopt on a miss, for a damaged
  // entry, or when the blob has left the store or is not `nbytes` long.
  std::optional<Hash> LookupMaterialized(const Hash& node, uint64_t nbytes) const;
  // Records one (atomically, after the blob is stored).
  void RecordMaterialized(const Hash& node, const Hash& blob, uint64_t nbytes);
  // Every entry's file: cache/materialized/<k0k1>/<node hash>.
  std::string MaterializedCacheDir() const { return root_ + "/cache/materialized"; }
  std::string MaterializedCachePath(const Hash& node) const;
  // Sizes for `du`: bytes of every blob file, and of every node file.
  struct Usage {
    uint64_t blob_bytes = 0, blob_count = 0, node_bytes = 0, node_count = 0;
  };
  Usage DiskUsage() const;

 private:
  // Returns false when the object was there already.
  bool WriteObject(const std::string& path, std::string_view bytes) const;
  std::string SourceCachePath(const FileIdentity& id) const;
  std::string QuantCachePath(const Hash& src, std::string_view type) const;
  Json ReadSourceCache(const std::string& path) const;
  std::string root_;
  int version_ = 1;
};

}  // namespace strata
