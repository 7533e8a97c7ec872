// Tensor materialization: the ops of the store's tensor nodes.
#include "strata/formats/materialize.h"

#include <sys/stat.h>

#include <cstring>
#include <vector>

#include "strata/formats/error.h"

namespace strata {

namespace {
constexpr uint64_t kChunkElements = 1u << 22;
}

const TensorNode& TensorReader::Node(const Hash& h) {
  auto it = nodes_.find(h);
  if (it == nodes_.end()) it = nodes_.emplace(h, ParseTensorNode(store_.GetNode(h), h)).first;
  return it->second;
}

int TensorReader::BlobFd(const Hash& blob, uint64_t expected_size) {
  std::string path = store_.BlobPath(blob);
  if (!FileExists(path))
    throw Error("blob " + blob.Hex() + " is missing from the store (" + path + "); run `strata verify`");
  int fd = OpenReadOnly(path);
  struct stat st;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != expected_size) {
    CloseFd(fd);
    throw Error("blob " + blob.Hex() + " has " + std::to_string(st.st_size) + " bytes, expected " +
                std::to_string(expected_size) + " (" + path + "); the store is damaged, run `strata verify`");
  }
  return fd;
}

void TensorReader::Read(const Hash& h, uint64_t begin, uint64_t count, void* out) {
  const TensorNode n = Node(h);  // a copy: the recursion may grow nodes_
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
  }
}

void TensorReader::CollectBlobs(const Hash& h, std::map<Hash, uint64_t>& blobs) {
  for (Hash cur = h;;) {
    const TensorNode& n = Node(cur);
    if (n.op == TensorNode::Op::kZeros) return;
    if (n.op == TensorNode::Op::kBlob) {
      blobs[n.blob] = n.nbytes();
      return;
    }
    cur = n.src;
  }
}

void TensorReader::AppendTo(const Hash& h, SafetensorsWriter& w, std::atomic<uint64_t>* progress) {
  const TensorNode n = Node(h);
  if (n.op == TensorNode::Op::kBlob) {
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
  if (n.op == TensorNode::Op::kZeros) {
    w.AppendZeros(n.nbytes());
    if (progress) *progress += n.nbytes();
    return;
  }
  const size_t es = DTypeSize(n.dtype);
  std::vector<char> buf(std::min(n.numel(), kChunkElements) * es);
  for (uint64_t done = 0; done < n.numel();) {
    uint64_t k = std::min(n.numel() - done, kChunkElements);
    Read(h, done, k, buf.data());
    w.Append(buf.data(), k * es);
    done += k;
    if (progress) *progress += k * es;
  }
}

}  // namespace strata
