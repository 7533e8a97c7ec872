// The only place strata talks to the OS about files.
#include "strata/formats/file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "strata/formats/error.h"

namespace strata {

void ThrowErrno(const std::string& what, int err) {
  throw Error(what + ": " + std::strerror(err));
}

namespace {

std::atomic<int64_t> g_write_budget{-1};
std::atomic<int> g_interrupt{0};
static_assert(std::atomic<int>::is_always_lock_free, "RequestInterrupt runs in a signal handler");

std::string DirName(const std::string& path) {
  auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

}  // namespace

void SetWriteBudgetForTesting(int64_t bytes) { g_write_budget = bytes; }

void RequestInterrupt(int signal) { g_interrupt.store(signal); }

void CheckInterrupt() {
  if (int s = g_interrupt.load()) throw Interrupted(s);
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = OpenReadOnly(path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    ThrowErrno("cannot stat " + path, e);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      ThrowErrno("cannot mmap " + path, e);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::Release(size_t offset, size_t len) const {
  if (!data_ || len == 0) return;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t begin = (offset + page - 1) / page * page;  // only whole pages inside the range
  size_t end = std::min(offset + len, size_) / page * page;
  if (end > begin) madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
}

std::string FileIdentity::Key() const {
  return std::to_string(dev) + ":" + std::to_string(ino) + ":" + std::to_string(size) +
         ":" + std::to_string(mtime_ns);
}

FileIdentity IdentifyFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) ThrowErrno("cannot stat " + path, errno);
  FileIdentity id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = static_cast<uint64_t>(st.st_size);
  id.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return id;
}

WritableFile::WritableFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) ThrowErrno("cannot create " + path, errno);
}

WritableFile::~WritableFile() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {
// Write errors a user fixes by making room: say so.
[[noreturn]] void ThrowWriteError(const std::string& path, int err) {
  std::string hint;
  if (err == ENOSPC || err == EDQUOT) hint = " (the disk is full: free space and retry)";
  if (err == EFBIG) hint = " (a file size limit is set: see `ulimit -f`)";
  throw Error("cannot write " + path + ": " + std::strerror(err) + hint);
}
}  // namespace

void WritableFile::CheckBudget(size_t n) {
  int64_t b = g_write_budget.load();
  if (b < 0) return;
  if (static_cast<int64_t>(n) > b) {
    g_write_budget = 0;
    ThrowWriteError(path_, ENOSPC);
  }
  g_write_budget -= static_cast<int64_t>(n);
}

void WritableFile::Append(const void* data, size_t n) {
  CheckInterrupt();
  CheckBudget(n);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      ThrowWriteError(path_, errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
    size_ += static_cast<uint64_t>(w);
  }
}

void WritableFile::AppendZeros(size_t n) {
  static const std::vector<char> kZeros(1 << 20, 0);
  while (n > 0) {
    size_t k = std::min(n, kZeros.size());
    Append(kZeros.data(), k);
    n -= k;
  }
}

void WritableFile::AppendFrom(int fd, uint64_t offset, uint64_t n) {
  if (g_write_budget.load() < 0) {
    // copy_file_range lets the kernel move the bytes (and reflink on some
    // file systems) without passing them through our memory.
    loff_t in = static_cast<loff_t>(offset);
    while (n > 0) {
      CheckInterrupt();  // between chunks of at most 64 MiB, so a signal is heard
      ssize_t w = copy_file_range(fd, &in, fd_, nullptr, std::min<uint64_t>(n, 64u << 20), 0);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;  // unsupported here: fall back to pread/write
      n -= static_cast<uint64_t>(w);
      size_ += static_cast<uint64_t>(w);
    }
    offset = static_cast<uint64_t>(in);
  }
  std::vector<char> buf(std::min<uint64_t>(n, 8u << 20));
  while (n > 0) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, buf.size()));
    PreadExact(fd, buf.data(), k, offset, "source");
    Append(buf.data(), k);
    offset += k;
    n -= k;
  }
}

void WritableFile::Sync() {
  if (fdatasync(fd_) != 0) ThrowErrno("cannot sync " + path_, errno);
}

void WritableFile::MakeReadOnly() {
  if (fchmod(fd_, 0444) != 0) ThrowErrno("cannot chmod " + path_, errno);
}

void WritableFile::Close() {
  if (fd_ < 0) return;
  int r = ::close(fd_);
  fd_ = -1;
  if (r != 0) ThrowErrno("cannot close " + path_, errno);
}

AtomicFile::AtomicFile(const std::string& final_path, const std::string& tmp_dir)
    : final_path_(final_path),
      tmp_path_(tmp_dir + "/" +
                TempName(std::filesystem::path(final_path).filename().string())) {
  file_ = std::make_unique<WritableFile>(tmp_path_);
}

AtomicFile::~AtomicFile() {
  if (!committed_) {
    file_.reset();
    ::unlink(tmp_path_.c_str());
  }
}

bool AtomicFile::CommitTo(const std::string& final_path_, bool keep_existing) {
  file_->Sync();
  file_->Close();
  std::string dir = DirName(final_path_);
  if (keep_existing) {
    // link() fails with EEXIST instead of replacing: an object another writer
    // already stored stays as it is (its bytes are the same by construction).
    if (::link(tmp_path_.c_str(), final_path_.c_str()) != 0) {
      int e = errno;
      if (e != EEXIST) ThrowErrno("cannot link " + tmp_path_ + " to " + final_path_, e);
      ::unlink(tmp_path_.c_str());
      committed_ = true;
      return false;
    }
    ::unlink(tmp_path_.c_str());
  } else if (::rename(tmp_path_.c_str(), final_path_.c_str()) != 0) {
    ThrowErrno("cannot rename " + tmp_path_ + " to " + final_path_, errno);
  }
  committed_ = true;
  SyncDir(dir);
  return true;
}

void WriteFileAtomically(const std::string& path, std::string_view contents,
                         const std::string& tmp_dir) {
  AtomicFile f(path, tmp_dir);
  f.file().Append(contents);
  f.Commit();
}

std::string NormalizeDirPath(const std::string& path) {
  std::filesystem::path p = std::filesystem::absolute(path).lexically_normal();
  if (p.filename().empty() && p.has_parent_path()) p = p.parent_path();
  return p.string();
}

std::string ReadFile(const std::string& path) {
  int fd = OpenReadOnly(path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      ::close(fd);
      ThrowErrno("cannot read " + path, e);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

void MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory " + dir + ": " + ec.message());
}

void SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno("cannot open directory " + dir, errno);
  int r = fsync(fd);
  int e = errno;
  ::close(fd);
  if (r != 0) ThrowErrno("cannot sync directory " + dir, e);
}

std::string TempName(std::string_view prefix) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[64];
  snprintf(buf, sizeof buf, ".%d.%llu.%08llx.tmp", static_cast<int>(getpid()),
           static_cast<unsigned long long>(counter++),
           static_cast<unsigned long long>(rng() & 0xffffffffu));
  return std::string(prefix) + buf;
}

namespace {
// Why `path` cannot be opened, in words a user can act on.
std::string OpenProblem(const std::string& path, int err) {
  switch (err) {
    case ENOENT: return path + " does not exist";
    case EACCES: return "cannot open " + path + ": permission denied (check the file's and its directories' permissions)";
    case ELOOP: return "cannot open " + path + ": it is a symbolic link loop (or a chain of more than 40 links)";
    case ENOTDIR: return "cannot open " + path + ": a component of the path is not a directory";
    default: return "cannot open " + path + ": " + std::strerror(err);
  }
}

const char* FileTypeName(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  return "not a regular file";
}
}  // namespace

int OpenReadOnly(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer. Only regular files
  // are read, so the flag is cleared again before any read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) throw Error(OpenProblem(path, errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    ThrowErrno("cannot stat " + path, e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": it is " + FileTypeName(st.st_mode) + ", not a regular file");
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    int e = errno;
    ::close(fd);
    ThrowErrno("cannot open " + path, e);
  }
  return fd;
}

PathState StatPath(const std::string& path, std::string* problem) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (S_ISREG(st.st_mode)) return PathState::kFile;
    if (problem) *problem = path + " is " + FileTypeName(st.st_mode) + ", not a regular file";
    return S_ISDIR(st.st_mode) ? PathState::kDirectory : PathState::kOther;
  }
  int e = errno;
  if (problem) *problem = OpenProblem(path, e);
  return e == ENOENT ? PathState::kMissing : PathState::kUnreachable;
}

void CloseFd(int fd) {
  if (fd >= 0) ::close(fd);
}

void PreadExact(int fd, void* buf, size_t n, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(buf);
  CheckInterrupt();
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) ThrowErrno("cannot read " + path, errno);
    if (r == 0) throw Error("cannot read " + path + ": unexpected end of file at offset " +
                            std::to_string(offset));
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

void DropCache(int fd, uint64_t offset, uint64_t len) {
  posix_fadvise(fd, static_cast<off_t>(offset), static_cast<off_t>(len), POSIX_FADV_DONTNEED);
}

FileLock::FileLock(const std::string& path, bool exclusive, const std::function<void()>& on_wait,
                   double notice_after_s) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  // A store we may only read (another user's) can still be locked for reading.
  if (fd_ < 0 && (errno == EACCES || errno == EROFS)) fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) ThrowErrno("cannot open lock file " + path, errno);
  const int op = exclusive ? LOCK_EX : LOCK_SH;
  // Poll without blocking until the notice is due, so the caller can say why
  // it waits; then block.
  auto start = std::chrono::steady_clock::now();
  for (;;) {
    if (::flock(fd_, op | LOCK_NB) == 0) return;
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) break;
    if (!on_wait) break;
    std::chrono::duration<double> waited = std::chrono::steady_clock::now() - start;
    if (waited.count() >= notice_after_s) {
      on_wait();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  while (::flock(fd_, op) != 0) {
    if (errno == EINTR) continue;
    int e = errno;
    ::close(fd_);
    fd_ = -1;
    ThrowErrno("cannot lock " + path, e);
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the only descriptor releases the lock
}

}  // namespace strata
