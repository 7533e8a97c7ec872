// safetensors: a validating reader over mmap and a streaming writer whose
// output is byte-identical to the reference library's save_file().
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "strata/formats/dtype.h"
#include "strata/formats/file.h"

namespace strata {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the data section
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// Largest header accepted (the reference library's own limit).
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // absolute offset of the data section: 8 + header length
};

// Parses and validates the header of a safetensors file held in memory
// (`size` bytes at `data`): 8-byte little-endian length within the file and
// under kMaxSafetensorsHeader, a JSON object, known dtypes, integer shapes,
// data_offsets in bounds, contiguous from 0, non-overlapping and covering the
// whole data section, byte length = numel x dtype size, `__metadata__` a map
// of strings. Throws Error naming `what` (the path) and the defect.
// "[4096, 11008]": a shape as messages print it.
std::string ShapeString(const std::vector<int64_t>& shape);

SafetensorsHeader ParseSafetensors(const uint8_t* data, uint64_t size,
                                   const std::string& what);

// A validated safetensors file, memory-mapped read-only.
class SafetensorsFile {
 public:
  // Throws Error when the file cannot be opened or is not valid safetensors.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // Returns nullptr when there is no tensor called `name`.
  const TensorInfo* Find(std::string_view name) const;
  // Absolute offset of a tensor's first byte in the file.
  uint64_t FileOffset(const TensorInfo& t) const { return header_.data_start + t.begin; }
  const uint8_t* Data(const TensorInfo& t) const { return file_.data() + FileOffset(t); }
  const MappedFile& mapped() const { return file_; }

 private:
  MappedFile file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> by_name_;
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

// The layout the reference writer produces: tensors sorted by dtype rank
// (SafetensorsDTypeRank, largest first) then by name; data_offsets assigned in
// that order; compact JSON with "__metadata__" first (when non-empty) and the
// tensors in data order, each {"dtype","shape","data_offsets"}; the JSON padded
// with spaces to a multiple of 8 bytes. Throws Error on duplicate names.
struct SafetensorsLayout {
  std::string header;               // 8-byte length + JSON + padding
  std::vector<TensorInfo> tensors;  // in data order
  uint64_t file_size = 0;
};
SafetensorsLayout LayoutSafetensors(std::vector<TensorSpec> specs,
                                    const std::map<std::string, std::string>& metadata);

// Streams one safetensors file: the constructor writes the header, then each
// tensor's bytes are appended in layout().tensors order. Throws Error when more
// bytes arrive than the layout holds, or on Finish() when fewer did.
class SafetensorsWriter {
 public:
  SafetensorsWriter(WritableFile* out, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata);
  const SafetensorsLayout& layout() const { return layout_; }
  void Append(const void* data, size_t n);
  void AppendZeros(size_t n);
  void AppendFrom(int fd, uint64_t offset, uint64_t n);
  void Finish();

 private:
  void Advance(uint64_t n);
  WritableFile* out_;
  SafetensorsLayout layout_;
  uint64_t written_ = 0;  // bytes of the data section written so far
};

}  // namespace strata
