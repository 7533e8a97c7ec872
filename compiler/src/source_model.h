// A compile's source model, whatever its format: a Hugging Face checkpoint
// directory or a GGUF file. Each gives a config.json, its tensors under HF
// names with where their bytes lie, and its tokenizer files.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "strata/compiler/resolve.h"
#include "strata/formats/dtype.h"
#include "strata/formats/hf_checkpoint.h"
#include "strata/formats/quant.h"

namespace strata {

// One tensor of a source model, as the store will hold it.
struct SourceTensor {
  std::string path;  // the file its bytes are in
  uint64_t offset = 0, nbytes = 0;  // the bytes in that file
  // As the tensor node will have them: HF's shape, the element type (for a
  // quantized tensor the type it dequantizes to) and the GGML block type.
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  QuantType quant = QuantType::kNone;
  // How the file's bytes become the stored ones (at most one is set; none
  // for a checkpoint): rows put back from llama.cpp's Q/K permutation for
  // this many heads, or F32 elements stored as `dtype` (only when every value
  // is exact in it).
  int unpermute_heads = 0;
  bool from_f32 = false;
  // Bytes of the stored tensor (nbytes but for from_f32).
  uint64_t stored_nbytes() const { return from_f32 ? nbytes / 4 * DTypeSize(dtype) : nbytes; }
  // The source-cache name of that transform ("" when none).
  std::string TransformKey() const;
  // REQUIRES: raw.size() == nbytes. The stored bytes.
  std::string Transform(std::string_view raw) const;
};

class SourceModel {
 public:
  virtual ~SourceModel() = default;
  // Opens `m`: a GGUF file (by its .gguf name) or an HF checkpoint directory.
  // Throws Error naming the model and what is wrong or missing.
  static std::unique_ptr<SourceModel> Open(const ResolvedModel& m);

  // config.json (for a GGUF file, the one its keys describe).
  virtual const OrderedJson& config() const = 0;
  // nullptr when the model has no tensor `name` (an HF name).
  virtual const SourceTensor* Find(const std::string& name) const = 0;
  // Tokenizer files mergekit copies (tokenizer.json, tokenizer_config.json,
  // ...), name to bytes: those the model has. Throws Error when they cannot
  // be read or made.
  virtual std::map<std::string, std::string> TokenizerFiles() const = 0;
};

// A GGUF file as a source model (compiler/src/gguf_source.cc). Throws Error
// naming the file for a damaged file (GgufFile::Parse), an architecture,
// tensor or tensor type strata does not import, keys it cannot turn into a
// config.json, or tensors whose shapes disagree with the keys.
std::unique_ptr<SourceModel> OpenGgufSource(const std::string& path);

}  // namespace strata
