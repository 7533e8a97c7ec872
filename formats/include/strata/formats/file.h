// All OS file access (open, mmap, pread, write, fsync, rename) behind one small
// interface, so that the rest of strata is testable and faults can be injected.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace strata {

// A read-only memory map of a whole file. Throws Error when the file cannot be
// opened or mapped. An empty file maps to data() == nullptr, size() == 0.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel the pages of [offset, offset+len) are no longer needed,
  // so memory stays bounded while streaming through a large file.
  void Release(size_t offset, size_t len) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Identity of a file as the source cache sees it: the same bytes whatever path
// or symlink reaches them, a new identity when the file is replaced or touched.
struct FileIdentity {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t mtime_ns = 0;
  std::string Key() const;  // "dev:ino:size:mtime_ns"
};
// Throws Error when `path` cannot be stat'ed.
FileIdentity IdentifyFile(const std::string& path);

// A file opened for appending. Throws Error on any failed write or sync, with
// the path in the message.
class WritableFile {
 public:
  // Creates `path` exclusively (O_EXCL): throws if it exists.
  explicit WritableFile(const std::string& path);
  ~WritableFile();
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;

  void Append(const void* data, size_t n);
  void Append(std::string_view s) { Append(s.data(), s.size()); }
  // Appends `n` zero bytes.
  void AppendZeros(size_t n);
  // Appends [offset, offset+n) of the file behind `fd` (copy_file_range when the
  // kernel can, pread+write otherwise).
  void AppendFrom(int fd, uint64_t offset, uint64_t n);
  void Sync();
  void Close();
  // Drops write permission (0444): store objects are immutable once written.
  void MakeReadOnly();
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void CheckBudget(size_t n);
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Writes a file under a temporary name in `tmp_dir` and renames it into place on
// Commit(): temp name, fsync, rename, fsync of the target directory. Destroyed
// without Commit(), the temporary file is removed, so no partial file is ever
// visible under the final name.
class AtomicFile {
 public:
  AtomicFile(const std::string& final_path, const std::string& tmp_dir);
  ~AtomicFile();
  WritableFile& file() { return *file_; }
  // Returns true when the file was moved into place, false when `final_path`
  // already existed and `keep_existing` was set (content-addressed objects:
  // the existing copy is identical, the temporary is discarded).
  bool Commit(bool keep_existing = false) { return CommitTo(final_path_, keep_existing); }
  // Commit() to a path known only once the bytes are written (a blob is named
  // by the hash of its content).
  bool CommitTo(const std::string& final_path, bool keep_existing);

 private:
  std::string final_path_, tmp_path_;
  std::unique_ptr<WritableFile> file_;
  bool committed_ = false;
};

// Writes `contents` to `path` atomically (see AtomicFile).
void WriteFileAtomically(const std::string& path, std::string_view contents,
                         const std::string& tmp_dir);
// `path` made absolute and normal, without a trailing separator ("out/" and
// "out" name the same directory).
std::string NormalizeDirPath(const std::string& path);
// Reads a whole file. Throws Error naming the path on failure.
std::string ReadFile(const std::string& path);
bool FileExists(const std::string& path);
// Creates `dir` and its parents. Throws Error on failure.
void MakeDirs(const std::string& dir);
void SyncDir(const std::string& dir);
// A unique name for a temporary file: "<prefix>.<pid>.<counter>.<random>.tmp".
std::string TempName(std::string_view prefix);
// Opens the regular file `path` read-only and returns the fd. Never blocks on
// a FIFO. Throws Error saying why on failure: missing, permission denied, a
// symlink loop, or not a regular file (a directory, FIFO, socket, device).
int OpenReadOnly(const std::string& path);
// What is at `path` (following symlinks). kMissing only when it does not
// exist; kUnreachable when it cannot be looked at (permissions, a symlink
// loop, ...). When not kFile, `problem` (if not null) says why in words.
enum class PathState { kFile, kDirectory, kOther, kMissing, kUnreachable };
PathState StatPath(const std::string& path, std::string* problem = nullptr);
void CloseFd(int fd);
// Reads exactly n bytes at offset; throws Error on a short read.
void PreadExact(int fd, void* buf, size_t n, uint64_t offset, const std::string& path);
// Drops the page cache for [offset, offset+len) of fd (best effort).
void DropCache(int fd, uint64_t offset, uint64_t len);

// An flock(2) lock on `path` (created when missing), held until destruction.
// Shared locks coexist; an exclusive lock excludes every other lock, including
// ones taken through another open of the same file in this process. The kernel
// drops the lock when the process dies, so a crash never leaves a store locked.
class FileLock {
 public:
  // Blocks until the lock is granted. When that takes longer than
  // `notice_after_s`, calls `on_wait` once (to tell the user why nothing
  // happens) and keeps waiting. Throws Error naming `path` when it can be
  // neither created nor opened, or cannot be locked.
  FileLock(const std::string& path, bool exclusive, const std::function<void()>& on_wait = {},
           double notice_after_s = 1.0);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// Asks every read and write loop of this process to stop: the next
// WritableFile append, PreadExact or copy throws Interrupted(signal).
// Async-signal-safe (a signal handler calls it).
void RequestInterrupt(int signal);
// Throws Interrupted when RequestInterrupt() was called.
void CheckInterrupt();

// Fault injection for tests: after `bytes` more bytes are appended by any
// WritableFile in this process, appends fail as on a full disk (ENOSPC).
// Negative disables it.
void SetWriteBudgetForTesting(int64_t bytes);

}  // namespace strata
