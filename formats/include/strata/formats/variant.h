// Reading variant, layer and tensor nodes back from the store into typed form.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "strata/formats/store.h"
#include "strata/formats/arch.h"
#include "strata/formats/dtype.h"
#include "strata/formats/merge.h"
#include "strata/formats/quant.h"
#include <memory>

namespace strata {

struct TensorNode {
  enum class Op { kBlob, kZeros, kScale, kCast, kQuant, kMerge };
  // The element type; for kQuant the type its values are read as when
  // dequantized (the source's), while the blob holds `quant` blocks.
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  Op op = Op::kBlob;
  Hash blob;  // kBlob, kQuant
  Hash src;   // kScale, kCast
  double factor = 1.0;  // kScale
  QuantType quant = QuantType::kNone;  // kQuant
  // kQuant: the node it was quantized from, or none (a GGUF's tensor). Only
  // provenance: nothing needs it to be in the store, and gc does not keep it.
  std::optional<Hash> from;
  // kMerge (version 3): the method, its inputs and parameters.
  std::shared_ptr<const MergeSpec> merge;
  // A node whose bytes are stored or implied (blob, zeros, quant), not
  // computed from another node.
  bool leaf() const { return op == Op::kBlob || op == Op::kZeros || op == Op::kQuant; }
  // The nodes this one is computed from: src, or a merge's inputs.
  std::vector<Hash> Children() const;
  uint64_t numel() const;
  // Bytes of the tensor as stored: its blob's size for kQuant.
  uint64_t nbytes() const;
  Json ToJson() const;
};
// Parses a tensor node. Throws Error naming the node when a field is missing
// or malformed.
TensorNode ParseTensorNode(const Json& j, const Hash& h);
std::string_view OpName(TensorNode::Op op);

struct NamedTensor {
  std::string name;
  Hash node;
  std::string source;  // the source tensor it was made from (mergekit's group label)
};

struct VariantLayer {
  Hash layer;
  std::string model;
  int source_layer = 0;
  int slice = 0;
};

struct Variant {
  Hash hash;
  Json node;
  const ArchInfo* arch = nullptr;
  std::vector<NamedTensor> pre, post;
  std::vector<VariantLayer> layers;
  std::map<std::string, Hash> files;
  Hash config, plan;
};

// Parses a variant node `j` (named `h`). Throws Error naming the node when it
// is not a variant, of an unknown format or architecture, or malformed: a
// missing or non-hash reference, a tensor or file name that is not a plain
// name (ValidFileName, ValidTensorName).
Variant ParseVariant(const Json& j, const Hash& h);
// Loads and parses a variant node. Throws Error naming the node when it is
// missing or corrupt, or as ParseVariant.
Variant LoadVariant(const Store& store, const Hash& h);
// Parses a layer node: its role -> tensor node map. Throws Error when it is
// not a layer node, a role is not a valid tensor name, or a hash is malformed.
std::map<std::string, Hash> ParseLayer(const Json& j, const Hash& h);
// Loads and parses a layer node. Throws Error when missing, corrupt or malformed.
std::map<std::string, Hash> LoadLayer(const Store& store, const Hash& h);

// A file name a variant may carry (tokenizer files, written into OUTDIR on
// export): one path component of printable ASCII, not "." or "..", no '/'
// or '\\', at most 255 bytes.
bool ValidFileName(std::string_view name);
// A tensor name or layer role: [A-Za-z0-9_.-]+ with no empty, "." or ".."
// component between dots, at most 255 bytes.
bool ValidTensorName(std::string_view name);
// Every output tensor with its HF name and source tensor name, in plan order:
// pre tensors, then each layer's tensors in the architecture's role order, then
// post tensors.
std::vector<NamedTensor> OutputTensors(const Store& store, const Variant& v);

}  // namespace strata
