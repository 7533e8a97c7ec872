// Weight residency on the host.
#include "strata/runtime/weights.h"

#include <sys/mman.h>
#include <tbb/parallel_for.h>

#include <cstdlib>
#include <cstring>
#include <string_view>
#include <tuple>

#include "cpu_quant.h"
#include "strata/formats/error.h"

namespace strata {

uint64_t HostTensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t HostTensor::row_bytes() const {
  return quant == QuantType::kNone ? static_cast<uint64_t>(cols()) * DTypeSize(dtype) : QuantRowBytes(quant, cols());
}

uint64_t HostTensor::nbytes() const {
  return quant == QuantType::kNone ? numel() * DTypeSize(dtype) : row_bytes() * static_cast<uint64_t>(rows());
}

namespace {

// STRATA_CPU_PANELS=off keeps quantized weights in their rows only (the
// panels cost a second copy's time at load; docs/quantization.md).
bool PanelsWanted() {
  const char* e = std::getenv("STRATA_CPU_PANELS");
  return !(e && std::string_view(e) == "off") && CpuRunsPanels();
}

}  // namespace

WeightStore::~WeightStore() {
  for (const auto& [p, size] : panels_) munmap(p, size);
}

void WeightStore::Pack(HostTensor& t, const Hash& blob_hash, const MappedFile& blob) {
  // Two tensor nodes over one blob as the same matrix (the same blocks
  // reached two ways) share one copy.
  const auto key = std::make_tuple(blob_hash, static_cast<int>(t.quant), t.cols());
  if (auto it = panels_by_blob_.find(key); it != panels_by_blob_.end()) {
    t.panels = it->second;
    return;
  }
  const int64_t count = t.rows() / kPanelRows;
  const uint64_t size = static_cast<uint64_t>(count) * PanelBytes(t.quant, t.cols());
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  panels_.emplace_back(p, size);
  madvise(p, size, MADV_HUGEPAGE);  // best effort: fewer TLB misses while streaming
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, count, 4), [&](const tbb::blocked_range<int64_t>& r) {
    PackPanels(t, r.begin(), static_cast<int64_t>(r.size()), static_cast<uint8_t*>(p));
  });
  t.panels = p;
  panels_by_blob_[key] = p;
  packed_bytes_ += size;
  // Every row is in a panel, and gathers and bf16 row blocks take rows from
  // the panels: nothing reads the mapped rows again, so their pages go back.
  if (t.rows() % kPanelRows == 0) {
    blob.Release(0, blob.size());
    released_bytes_ += blob.size();
  }
}

void WeightStore::VerifyAll(const std::vector<Hash>& nodes) {
  if (!verify_) return;
  std::map<Hash, uint64_t> blobs;
  for (const Hash& h : nodes) reader_.CollectBlobs(h, blobs);
  reader_.VerifyBlobs(blobs);
}

const HostTensor& WeightStore::Get(const Hash& h) {
  if (auto it = tensors_.find(h); it != tensors_.end()) return it->second;
  const TensorNode n = reader_.Node(h);
  HostTensor t;
  t.dtype = n.dtype;
  t.shape = n.shape;
  t.quant = n.op == TensorNode::Op::kQuant ? n.quant : QuantType::kNone;
  t.zero = n.op == TensorNode::Op::kZeros || (n.op == TensorNode::Op::kScale && n.factor == 0.0);
  t.node = h;
  if (!host_data_) {
    // Metadata only; the backend reads the blobs itself, so they are checked here.
    if (verify_) {
      std::map<Hash, uint64_t> blobs;
      reader_.CollectBlobs(h, blobs);
      for (const auto& [b, size] : blobs) reader_.VerifyBlob(b, size);
    }
    return tensors_.emplace(h, std::move(t)).first->second;
  }
  // A derived node `strata materialize` stored is mapped as its blob.
  std::optional<Hash> mat = t.zero ? std::nullopt : reader_.Materialized(h);
  if (n.op == TensorNode::Op::kBlob || n.op == TensorNode::Op::kQuant || mat) {
    const Hash blob = mat ? *mat : n.blob;
    auto& m = blobs_[blob];
    if (!m) {
      std::string path = store_.BlobPath(blob);
      Store::RequireObjectFile("blob " + blob.Hex() + " of tensor node " + h.Hex(), path);
      m = std::make_unique<MappedFile>(path);
      if (m->size() != n.nbytes())
        throw Error("blob " + blob.Hex() + " has " + std::to_string(m->size()) + " bytes, tensor node " + h.Hex() +
                    " needs " + std::to_string(n.nbytes()) + "; the store is damaged, run `strata verify`");
      mapped_bytes_ += m->size();
      if (verify_) reader_.VerifyMapped(blob, m->data(), m->size());
    }
    t.data = m->data();
    if (t.quant != QuantType::kNone && t.shape.size() == 2 && t.rows() >= kPanelRows && HasPanelKernel(t.quant) &&
        PanelsWanted())
      Pack(t, blob, *m);
  } else {
    // calloc'd zeros cost no resident memory until touched; others are computed once.
    char* p = static_cast<char*>(std::calloc(std::max<uint64_t>(n.nbytes(), 1), 1));
    if (!p) throw std::bad_alloc();
    std::unique_ptr<char, FreeDeleter> buf(p);
    if (!t.zero) {
      reader_.Read(h, 0, n.numel(), p);
      materialized_bytes_ += n.nbytes();
    }
    t.data = p;
    owned_[h] = std::move(buf);
  }
  return tensors_.emplace(h, std::move(t)).first->second;
}

}  // namespace strata
