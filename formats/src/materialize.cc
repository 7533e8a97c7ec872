// Tensor materialization: the ops of the store's tensor nodes.
#include "strata/formats/materialize.h"

#include <tbb/parallel_for.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "strata/formats/error.h"
#include "strata/formats/merge.h"

namespace strata {

namespace {
constexpr uint64_t kChunkElements = 1u << 22;
// An elementwise merge computes this many elements at a time: its inputs,
// their float32 copies and the result stay in the caches (~3.5 MB for two inputs).
constexpr uint64_t kMergeChunk = 1u << 18;
constexpr uint64_t kHashChunk = 8u << 20;
}  // namespace

struct TensorReader::MergeScratch {
  size_t k = 0, inputs = 0, raw_bytes = 0;
  std::vector<std::unique_ptr<float[]>> in;
  std::unique_ptr<char[]> raw;
  std::unique_ptr<float[]> res;
};

struct TensorReader::Stream {
  Hasher hasher;
  uint64_t next = 0;  // bytes hashed so far, from offset 0
};

TensorReader::TensorReader(const Store& store, bool verify) : store_(store), verify_(verify) {}
TensorReader::~TensorReader() = default;

std::string DerivedNodeProblem(const TensorNode& n, const TensorNode& src) {
  if (src.numel() != n.numel())
    return "it has " + std::to_string(n.numel()) + " elements but its source has " + std::to_string(src.numel());
  if (n.op == TensorNode::Op::kScale && src.dtype != n.dtype)
    return "it scales a " + std::string(DTypeName(src.dtype)) + " source into " + std::string(DTypeName(n.dtype));
  if (n.op == TensorNode::Op::kMerge) {
    if (n.merge->method->out_f32) {  // float inputs of one dtype (checked by ReadMerge), an F32 result
      if (n.dtype != DType::kF32) return "its method's result is F32, not " + std::string(DTypeName(n.dtype));
      if (!IsComputeFloat(src.dtype)) return "it merges " + std::string(DTypeName(src.dtype)) + ", not a float type";
    } else if (src.dtype != n.dtype) {
      return "it merges a " + std::string(DTypeName(src.dtype)) + " input into " + std::string(DTypeName(n.dtype));
    }
    if (src.shape != n.shape) return "an input's shape is not the merge's";
    if (!IsComputeFloat(n.dtype)) return "it merges " + std::string(DTypeName(n.dtype)) + ", not a float type";
  }
  return "";
}

// Parses `h` and, depth first, the nodes below it, each once; `level` is how
// far above it the walk started, so a hostile chain costs at most
// kMaxTensorChain + 1 frames and reads before it is refused.
const TensorNode& TensorReader::Node(const Hash& h) { return NodeAt(h, h, 0); }

const TensorNode& TensorReader::NodeAt(const Hash& h, const Hash& top, int level) {
  if (auto it = nodes_.find(h); it != nodes_.end()) return it->second;
  if (level > kMaxTensorChain)
    throw Error("tensor node " + top.Hex() + " is a chain of more than " + std::to_string(kMaxTensorChain) +
                " derived (scale/cast/merge) nodes, past strata's limit; the store was crafted or damaged: run `strata verify`");
  TensorNode n = ParseTensorNode(store_.GetNode(h), h);
  int depth = 0;
  for (const Hash& c : n.Children()) {
    const TensorNode& src = NodeAt(c, top, level + 1);
    if (std::string p = DerivedNodeProblem(n, src); !p.empty())
      throw Error("tensor node " + h.Hex() + " cannot be computed from its source " + c.Hex() + ": " + p +
                  "; the store is damaged: run `strata verify`");
    depth = std::max(depth, depth_.at(c) + 1);
  }
  if (depth > kMaxTensorChain)
    throw Error("tensor node " + top.Hex() + " is a chain of " + std::to_string(depth) +
                " derived (scale/cast/merge) nodes, past strata's limit of " + std::to_string(kMaxTensorChain) +
                "; the store was crafted or damaged: run `strata verify`");
  depth_[h] = depth;
  return nodes_.emplace(h, std::move(n)).first->second;
}

int TensorReader::BlobFd(const Hash& blob, uint64_t expected_size) {
  std::string path = store_.BlobPath(blob);
  Store::RequireObjectFile("blob " + blob.Hex(), path);
  int fd = OpenReadOnly(path);
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != expected_size) {
    CloseFd(fd);
    throw Error("blob " + blob.Hex() + " has " + std::to_string(st.st_size) + " bytes, expected " +
                std::to_string(expected_size) + " (" + path + "); the store is damaged, run `strata verify`");
  }
  return fd;
}

void TensorReader::Corrupt(const Hash& blob, const Hash& got) const {
  throw Error("blob " + blob.Hex() + " is corrupt: its bytes hash to " + got.Hex() + ", not to its name (" +
              store_.BlobPath(blob) + "); nothing was written from it. The store is damaged: run `strata verify`");
}

// Feeds bytes [offset, offset+n) of `blob` to its stream when they continue
// it; a read out of order verifies the whole blob instead.
void TensorReader::Hashed(const Hash& blob, uint64_t offset, const void* data, uint64_t n, uint64_t size) {
  if (!verify_ || verified_.count(blob)) return;
  auto& s = streams_[blob];
  if (!s) s = std::make_unique<Stream>();
  if (offset != s->next) {
    streams_.erase(blob);
    VerifyBlob(blob, size);
    return;
  }
  s->hasher.Update(data, n);
  s->next += n;
  if (s->next < size) return;
  Hash got = s->hasher.Finish();
  streams_.erase(blob);
  if (got != blob) Corrupt(blob, got);
  verified_.insert(blob);
}

// One blob is the one-element case of the parallel check (no thread is started).
void TensorReader::VerifyBlob(const Hash& blob, uint64_t size) { VerifyBlobs({{blob, size}}); }

void TensorReader::VerifyBlobs(const std::map<Hash, uint64_t>& blobs) {
  std::vector<std::pair<Hash, uint64_t>> todo;
  for (const auto& b : blobs)
    if (!verified_.count(b.first)) todo.push_back(b);
  // Largest first, so the tail where one thread works alone is short.
  std::sort(todo.begin(), todo.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::vector<std::string> problems(todo.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < todo.size();) {
      const auto& [blob, size] = todo[i];
      try {
        // Hashed in place through a mapping: no copy, and the pages stay
        // cached for the load that follows.
        Store::RequireObjectFile("blob " + blob.Hex(), store_.BlobPath(blob));
        MappedFile m(store_.BlobPath(blob));
        if (m.size() != size)
          throw Error("blob " + blob.Hex() + " has " + std::to_string(m.size()) + " bytes, expected " +
                      std::to_string(size) + " (" + m.path() + "); the store is damaged, run `strata verify`");
        Hasher hasher;
        for (uint64_t done = 0; done < size; done += kHashChunk) {
          CheckInterrupt();
          hasher.Update(m.data() + done, std::min<uint64_t>(kHashChunk, size - done));
        }
        if (Hash got = hasher.Finish(); got != blob) Corrupt(blob, got);
      } catch (const std::exception& e) {
        problems[i] = e.what();
      }
    }
  };
  const size_t n = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), std::max<size_t>(todo.size(), 1));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  CheckInterrupt();
  for (size_t i = 0; i < todo.size(); ++i) {
    if (!problems[i].empty()) throw Error(problems[i]);
    verified_.insert(todo[i].first);
  }
}

void TensorReader::VerifyMapped(const Hash& blob, const void* data, uint64_t size) {
  if (verified_.count(blob)) return;
  if (Hash got = HashBytes(data, size); got != blob) Corrupt(blob, got);
  verified_.insert(blob);
}

std::optional<Hash> TensorReader::Materialized(const Hash& h) {
  if (!use_materialized_) return std::nullopt;
  const TensorNode& n = Node(h);
  if (n.leaf()) return std::nullopt;
  auto it = materialized_.find(h);
  if (it == materialized_.end()) it = materialized_.emplace(h, store_.LookupMaterialized(h, n.nbytes())).first;
  return it->second;
}

void TensorReader::Read(const Hash& h, uint64_t begin, uint64_t count, void* out) {
  TensorNode n = Node(h);  // a copy: the recursion may grow nodes_ (depth <= kMaxTensorChain)
  if (auto b = Materialized(h)) {  // read as the blob that holds its bytes
    n.op = TensorNode::Op::kBlob;
    n.blob = *b;
  }
  const size_t es = DTypeSize(n.dtype);
  switch (n.op) {
    case TensorNode::Op::kBlob: {
      int fd = BlobFd(n.blob, n.nbytes());
      try {
        PreadExact(fd, out, count * es, begin * es, store_.BlobPath(n.blob));
      } catch (...) {
        CloseFd(fd);
        throw;
      }
      CloseFd(fd);
      Hashed(n.blob, begin * es, out, count * es, n.nbytes());
      return;
    }
    case TensorNode::Op::kZeros:
      std::memset(out, 0, count * es);
      return;
    case TensorNode::Op::kScale:
      Read(n.src, begin, count, out);
      ScaleElements(n.dtype, out, out, count, n.factor);
      return;
    case TensorNode::Op::kCast: {
      DType from = Node(n.src).dtype;
      std::vector<char> buf(count * DTypeSize(from));
      Read(n.src, begin, count, buf.data());
      ConvertElements(from, buf.data(), n.dtype, out, count);
      return;
    }
    case TensorNode::Op::kQuant:
      ReadQuant(n, begin, count, out);
      return;
    case TensorNode::Op::kMerge:
      ReadMerge(h, n, begin, count, out);
      return;
  }
}

// Inputs read as float32 (exact), the method computed, rounded to the
// node's dtype: in chunks for an elementwise method, else the whole tensor
// once (kept for the next reads of this node unless one read took it all).
void TensorReader::Prefetch(const Hash& h, uint64_t begin, uint64_t count) {
  const TensorNode& n = Node(h);
  std::optional<Hash> blob = Materialized(h);
  if (!blob && n.op == TensorNode::Op::kBlob) blob = n.blob;
  if (blob) {
    const std::string path = store_.BlobPath(*blob);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;  // only a hint: Read reports what is wrong
    const uint64_t es = DTypeSize(n.dtype);
    posix_fadvise(fd, static_cast<off_t>(begin * es), static_cast<off_t>(count * es), POSIX_FADV_WILLNEED);
    ::close(fd);
    return;
  }
  if (n.op == TensorNode::Op::kScale || n.op == TensorNode::Op::kCast) Prefetch(n.src, begin, count);
}

void TensorReader::ReadMerge(const Hash& h, const TensorNode& n, uint64_t begin, uint64_t count, void* out) {
  const MergeSpec& m = *n.merge;
  const size_t es = DTypeSize(n.dtype);
  // The dtype the method computes in: its inputs', which is the node's but
  // for a method whose result is float32.
  const DType cd = Node(m.inputs[0]).dtype;
  for (const Hash& in : m.inputs)
    if (Node(in).dtype != cd)
      throw Error("tensor node " + h.Hex() + " merges inputs of different dtypes (" + std::string(DTypeName(cd)) +
                  " and " + std::string(DTypeName(Node(in).dtype)) + "); the store is damaged: run `strata verify`");
  // Conversions of a chunk on every core, in blocks (the same bytes whatever the split).
  auto convert = [](DType from, const char* src, DType to, char* dst, uint64_t k) {
    constexpr uint64_t kBlock = 1u << 16;
    tbb::parallel_for(uint64_t{0}, (k + kBlock - 1) / kBlock, [&](uint64_t i) {
      const uint64_t b = i * kBlock, e = std::min(k, b + kBlock);
      ConvertElements(from, src + b * DTypeSize(from), to, dst + b * DTypeSize(to), e - b);
    });
  };
  // Chunks reuse this level's buffers; a whole tensor gets buffers of its own,
  // freed after it (so a load does not keep the largest tensor's scratch).
  if (scratch_.size() <= merge_depth_) scratch_.push_back(std::make_unique<MergeScratch>());
  MergeScratch& kept = *scratch_[merge_depth_];
  ++merge_depth_;
  struct Leave {
    size_t& d;
    ~Leave() { --d; }
  } leave{merge_depth_};
  auto compute = [&](uint64_t b, uint64_t k, char* dst) {
    MergeScratch whole;
    MergeScratch& sc = k <= kMergeChunk ? kept : whole;
    const size_t raw_bytes = k * DTypeSize(cd);
    if (sc.k < k || sc.inputs < m.inputs.size()) {
      sc.k = std::max<size_t>(sc.k, k);
      sc.inputs = std::max(sc.inputs, m.inputs.size());
      sc.in.clear();
      for (size_t i = 0; i < sc.inputs; ++i) sc.in.emplace_back(new float[sc.k]);  // uninitialized
      sc.res.reset(new float[sc.k]);
    }
    if (sc.raw_bytes < raw_bytes) {
      sc.raw.reset(new char[raw_bytes]);
      sc.raw_bytes = raw_bytes;
    }
    std::vector<const float*> ptrs;
    for (size_t i = 0; i < m.inputs.size(); ++i) {
      Read(m.inputs[i], b, k, sc.raw.get());
      convert(cd, sc.raw.get(), DType::kF32, reinterpret_cast<char*>(sc.in[i].get()), k);
      ptrs.push_back(sc.in[i].get());
    }
    ComputeMerge(m, cd, n.shape, ptrs, k, sc.res.get(), h);
    convert(DType::kF32, reinterpret_cast<const char*>(sc.res.get()), n.dtype, dst, k);
  };
  char* o = static_cast<char*>(out);
  if (!MergeNeedsWholeTensor(m)) {
    for (uint64_t done = 0; done < count; done += kMergeChunk) {
      const uint64_t k = std::min<uint64_t>(kMergeChunk, count - done);
      // The disk reads the next chunk of every input while this one is computed.
      if (done + k < count)
        for (const Hash& in : m.inputs) Prefetch(in, begin + done + k, std::min<uint64_t>(kMergeChunk, count - done - k));
      compute(begin + done, k, o + done * es);
    }
    return;
  }
  if (begin == 0 && count == n.numel() && merged_node_ != h) {
    compute(0, count, o);
    return;
  }
  if (merged_node_ != h) {
    merged_.assign(n.nbytes(), 0);
    merged_node_.reset();
    compute(0, n.numel(), merged_.data());
    merged_node_ = h;
  }
  std::memcpy(o, merged_.data() + begin * es, count * es);
}

// Dequantizes the rows that elements [begin, begin+count) lie in, one row at
// a time, into the node's dtype.
void TensorReader::ReadQuant(const TensorNode& n, uint64_t begin, uint64_t count, void* out) {
  const int64_t cols = n.shape[1];
  const uint64_t row_bytes = QuantRowBytes(n.quant, cols);
  const size_t es = DTypeSize(n.dtype);
  std::vector<char> row(row_bytes);
  std::vector<float> f(static_cast<size_t>(cols));
  int fd = BlobFd(n.blob, n.nbytes());
  try {
    for (uint64_t done = 0; done < count;) {
      const uint64_t e = begin + done, r = e / cols, c = e % cols;
      const uint64_t take = std::min<uint64_t>(count - done, cols - c);
      PreadExact(fd, row.data(), row_bytes, r * row_bytes, store_.BlobPath(n.blob));
      Hashed(n.blob, r * row_bytes, row.data(), row_bytes, n.nbytes());
      DequantizeRange(n.quant, row.data(), cols, static_cast<int64_t>(c), static_cast<int64_t>(take), f.data());
      ConvertElements(DType::kF32, f.data(), n.dtype, static_cast<char*>(out) + done * es, take);
      done += take;
    }
  } catch (...) {
    CloseFd(fd);
    throw;
  }
  CloseFd(fd);
}

void TensorReader::CollectBlobs(const Hash& h, std::map<Hash, uint64_t>& blobs) {
  Node(h);  // the whole DAG below is parsed and bounded
  std::set<Hash> seen{h};
  std::vector<Hash> todo{h};  // each node once: a DAG of shared inputs stays linear
  while (!todo.empty()) {
    const Hash h = todo.back();
    todo.pop_back();
    const TensorNode& n = nodes_.at(h);
    if (auto b = Materialized(h)) {  // read from its blob: nothing below is needed
      blobs[*b] = n.nbytes();
      continue;
    }
    if (n.op == TensorNode::Op::kBlob || n.op == TensorNode::Op::kQuant) blobs[n.blob] = n.nbytes();
    for (const Hash& c : n.Children())
      if (seen.insert(c).second) todo.push_back(c);
  }
}

void TensorReader::AppendTo(const Hash& h, SafetensorsWriter& w, std::atomic<uint64_t>* progress) {
  TensorNode n = Node(h);
  if (auto b = Materialized(h)) {
    n.op = TensorNode::Op::kBlob;
    n.blob = *b;
  }
  if (n.op == TensorNode::Op::kZeros) {
    w.AppendZeros(n.nbytes());
    if (progress) *progress += n.nbytes();
    return;
  }
  if (n.op == TensorNode::Op::kBlob && !verify_) {
    int fd = BlobFd(n.blob, n.nbytes());
    try {
      w.AppendFrom(fd, 0, n.nbytes());
      DropCache(fd, 0, n.nbytes());
    } catch (...) {
      CloseFd(fd);
      throw;
    }
    CloseFd(fd);
    if (progress) *progress += n.nbytes();
    return;
  }
  // Through memory in chunks: derived nodes are computed, and a verified blob
  // is hashed on the way (its last chunk is checked before it is written).
  const size_t es = DTypeSize(n.dtype);
  const uint64_t chunk = n.op == TensorNode::Op::kQuant
                             ? std::max<uint64_t>(1, kChunkElements / n.shape[1]) * n.shape[1]  // whole rows
                             : kChunkElements;
  std::vector<char> buf(std::min(n.numel(), chunk) * es);
  for (uint64_t done = 0; done < n.numel();) {
    uint64_t k = std::min(n.numel() - done, chunk);
    Read(h, done, k, buf.data());
    w.Append(buf.data(), k * es);
    done += k;
    if (progress) *progress += k * es;
  }
}

}  // namespace strata
