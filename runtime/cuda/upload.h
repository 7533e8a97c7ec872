// Streaming upload of store blobs to device memory in constant host memory:
// pread (no mmap) into a fixed ring of pinned staging buffers, each chunk's
// cudaMemcpyAsync overlapping the next read (one event per slot guards reuse),
// and POSIX_FADV_DONTNEED after each chunk so the page cache does not grow
// with the model either.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace strata::cuda {

// Tunables: host memory for staging is kStagingSlots x kStagingSlotBytes at
// most (pinned), whatever the model's size.
inline constexpr size_t kStagingSlots = 4;
inline constexpr size_t kStagingSlotBytes = size_t{64} << 20;

class StagingUploader {
 public:
  // `slot_bytes` is rounded up to 4 KiB. Allocates nothing until the first Upload.
  StagingUploader(cudaStream_t stream, size_t slots = kStagingSlots, size_t slot_bytes = kStagingSlotBytes);
  ~StagingUploader();  // waits for copies in flight, then frees the buffers
  StagingUploader(const StagingUploader&) = delete;
  StagingUploader& operator=(const StagingUploader&) = delete;

  // Copies the whole file at `path` (which must be exactly `nbytes` long) to
  // device memory `dst`, asynchronously on the stream; `on_chunk(bytes)` after
  // each chunk is queued. Throws Error naming the path on an I/O failure or a
  // size mismatch (`what` says whose blob it is).
  void Upload(const std::string& path, uint64_t nbytes, void* dst, const std::string& what,
              const std::function<void(uint64_t)>& on_chunk);
  // Waits until every queued copy is done.
  void Finish();
  uint64_t bytes_read() const { return bytes_read_; }
  // Pinned bytes held (the host memory bound).
  size_t pinned_bytes() const { return slots_.size() * slot_bytes_; }

 private:
  void Allocate();
  struct Slot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  cudaStream_t stream_;
  size_t nslots_, slot_bytes_;
  std::vector<Slot> slots_;
  size_t next_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace strata::cuda
