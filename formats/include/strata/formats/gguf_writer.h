// Writing GGUF v3: the key/value section and tensor infos built in memory,
// the tensor data streamed by the caller in info order (docs/gguf.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "strata/formats/gguf.h"

namespace strata {

inline constexpr uint32_t kGgufTypeF32 = 0, kGgufTypeF16 = 1, kGgufTypeBF16 = 30;
inline constexpr uint64_t kGgufAlignment = 32;

class GgufWriter {
 public:
  void AddString(const std::string& key, const std::string& v);
  void AddU32(const std::string& key, uint32_t v);
  void AddI32(const std::string& key, int32_t v);
  void AddF32(const std::string& key, float v);
  void AddBool(const std::string& key, bool v);
  void AddStrings(const std::string& key, const std::vector<std::string>& v);
  void AddF32s(const std::string& key, const std::vector<float>& v);
  void AddI32s(const std::string& key, const std::vector<int32_t>& v);
  // A tensor of GGML type `type` and HF shape `shape` (rows first; written
  // reversed, as GGUF's ne[] is innermost first) whose data is `nbytes` long.
  void AddTensor(const std::string& name, uint32_t type, const std::vector<int64_t>& shape, uint64_t nbytes);

  // The header, key/values and tensor infos, padded to the alignment: the
  // file's first bytes. The data of tensor i starts at header().size() +
  // offset(i); each tensor is followed by zeros up to the next multiple of
  // kGgufAlignment (Padding()).
  std::string Header() const;
  uint64_t Offset(size_t i) const { return tensors_.at(i).offset; }
  uint64_t DataBytes() const { return data_bytes_; }
  static uint64_t Padding(uint64_t n) { return (kGgufAlignment - n % kGgufAlignment) % kGgufAlignment; }

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> shape;
    uint64_t offset, nbytes;
  };
  void Key(const std::string& key, GgufType t);
  std::string kv_;
  uint64_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
  uint64_t data_bytes_ = 0;
};

}  // namespace strata
