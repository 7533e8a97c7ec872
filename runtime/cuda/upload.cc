// Streaming blob upload (see upload.h).
#include "upload.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>

#include "cuda_check.h"
#include "strata/formats/file.h"
#include "strata/formats/store.h"

namespace strata::cuda {

namespace {

// Closes an fd on every path out.
struct FdGuard {
  int fd;
  ~FdGuard() { CloseFd(fd); }
};

}  // namespace

StagingUploader::StagingUploader(cudaStream_t stream, size_t slots, size_t slot_bytes)
    : stream_(stream), nslots_(std::max<size_t>(slots, 1)), slot_bytes_((std::max<size_t>(slot_bytes, 1) + 4095) / 4096 * 4096) {}

StagingUploader::~StagingUploader() {
  // Copies may still read the pinned buffers: wait before freeing them.
  (void)cudaStreamSynchronize(stream_);
  for (Slot& s : slots_) {
    if (s.done) (void)cudaEventDestroy(s.done);
    if (s.host) (void)cudaFreeHost(s.host);
  }
}

void StagingUploader::Allocate() {
  slots_.resize(nslots_);
  for (Slot& s : slots_) {
    CUDA_CHECK(cudaHostAlloc(&s.host, slot_bytes_, cudaHostAllocDefault));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  }
}

void StagingUploader::Upload(const std::string& path, uint64_t nbytes, void* dst, const std::string& what,
                             const std::function<void(uint64_t)>& on_chunk) {
  Store::RequireObjectFile("blob of " + what, path);
  FdGuard f{OpenReadOnly(path)};
  struct stat st;
  if (fstat(f.fd, &st) != 0) ThrowErrno("cannot stat " + path, errno);
  if (static_cast<uint64_t>(st.st_size) != nbytes)
    throw Error("blob of " + what + " has " + std::to_string(st.st_size) + " bytes, the tensor needs " +
                std::to_string(nbytes) + " (" + path + "); the store is damaged, run `strata verify`");
  if (nbytes == 0) return;
  if (slots_.empty()) Allocate();
  (void)posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  char* d = static_cast<char*>(dst);
  for (uint64_t off = 0; off < nbytes;) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(slot_bytes_, nbytes - off));
    Slot& s = slots_[next_];
    next_ = (next_ + 1) % slots_.size();
    // The slot's previous copy must have finished before its buffer is refilled
    // (a never-recorded event counts as complete).
    CUDA_CHECK(cudaEventSynchronize(s.done));
    PreadExact(f.fd, s.host, len, off, path);
    DropCache(f.fd, off, len);
    CUDA_CHECK(cudaMemcpyAsync(d + off, s.host, len, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaEventRecord(s.done, stream_));
    off += len;
    bytes_read_ += len;
    if (on_chunk) on_chunk(len);
  }
}

void StagingUploader::Finish() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace strata::cuda
