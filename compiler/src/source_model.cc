// Source models: the Hugging Face checkpoint reader, the byte transforms GGUF
// sources need, and the choice between the two formats.
#include "source_model.h"

#include <cstring>

#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/gguf.h"

namespace strata {

namespace {

// Tokenizer files mergekit copies from the donor model, in its order.
constexpr const char* kTokenizerFiles[] = {
    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
    "added_tokens.json",     "merges.txt",              "vocab.json",
};

class HfSource : public SourceModel {
 public:
  explicit HfSource(const std::string& dir) : ckpt_(dir) {
    for (const auto& [name, e] : ckpt_.tensors()) {
      SourceTensor t;
      t.path = e.file->path();
      t.offset = e.file->FileOffset(*e.info);
      t.nbytes = e.info->nbytes();
      t.dtype = e.info->dtype;
      t.shape = e.info->shape;
      tensors_.emplace(name, std::move(t));
    }
  }
  const OrderedJson& config() const override { return ckpt_.config(); }
  const SourceTensor* Find(const std::string& name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  std::map<std::string, std::string> TokenizerFiles() const override {
    std::map<std::string, std::string> out;
    for (const char* f : kTokenizerFiles) {
      const std::string path = ckpt_.dir() + "/" + f;
      if (FileExists(path)) out[f] = ReadFile(path);
    }
    return out;
  }

 private:
  HfCheckpoint ckpt_;
  std::map<std::string, SourceTensor> tensors_;
};

}  // namespace

std::string SourceTensor::TransformKey() const {
  if (unpermute_heads) return "unpermute:" + std::to_string(unpermute_heads);
  if (from_f32) return "as:" + std::string(DTypeName(dtype));
  return "";
}

std::string SourceTensor::Transform(std::string_view raw) const {
  if (unpermute_heads) {
    const int64_t rows = shape.at(0);
    const uint64_t row_bytes = nbytes / static_cast<uint64_t>(rows);
    std::string out(raw.size(), '\0');
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(&out[GgufPermutedRow(r, rows, unpermute_heads) * row_bytes], raw.data() + r * row_bytes, row_bytes);
    return out;
  }
  if (from_f32) {
    const size_t n = raw.size() / 4;
    std::string out(n * DTypeSize(dtype), '\0');
    ConvertElements(DType::kF32, raw.data(), dtype, out.data(), n);
    return out;
  }
  return std::string(raw);
}

std::unique_ptr<SourceModel> SourceModel::Open(const ResolvedModel& m) {
  if (IsGgufPath(m.dir)) return OpenGgufSource(m.dir);
  return std::make_unique<HfSource>(m.dir);
}

}  // namespace strata
