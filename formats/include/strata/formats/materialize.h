// Producing a tensor node's bytes (blob, zeros, scale, cast) in bounded memory,
// with PyTorch's arithmetic so that exports match mergekit bit for bit.
#pragma once

#include <map>
#include <mutex>

#include "strata/formats/variant.h"
#include "strata/formats/safetensors.h"

namespace strata {

class TensorReader {
 public:
  explicit TensorReader(const Store& store) : store_(store) {}

  // The parsed node; cached. Throws Error when missing or malformed.
  const TensorNode& Node(const Hash& h);
  // Writes elements [begin, begin+count) of tensor `h` to `out` (count x the
  // node's dtype size bytes). Throws Error when a blob is missing or has the
  // wrong size.
  void Read(const Hash& h, uint64_t begin, uint64_t count, void* out);
  // Adds the blob tensor `h` reads (none for zeros) to `blobs`, with its size.
  void CollectBlobs(const Hash& h, std::map<Hash, uint64_t>& blobs);
  // Appends the whole tensor to `w`, streaming in chunks (a blob goes file to
  // file with copy_file_range). `progress` (may be null) advances by bytes.
  void AppendTo(const Hash& h, SafetensorsWriter& w, std::atomic<uint64_t>* progress);

 private:
  int BlobFd(const Hash& blob, uint64_t expected_size);
  const Store& store_;
  std::map<Hash, TensorNode> nodes_;
};

}  // namespace strata
