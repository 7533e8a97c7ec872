// Reading variant, layer and tensor nodes back from the store into typed form.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "strata/formats/store.h"
#include "strata/formats/arch.h"
#include "strata/formats/dtype.h"

namespace strata {

struct TensorNode {
  enum class Op { kBlob, kZeros, kScale, kCast };
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  Op op = Op::kBlob;
  Hash blob;  // kBlob
  Hash src;   // kScale, kCast
  double factor = 1.0;  // kScale
  uint64_t numel() const;
  uint64_t nbytes() const { return numel() * DTypeSize(dtype); }
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

// Loads a variant node. Throws Error naming the node when it is missing,
// corrupt, not a variant, or of an unknown architecture.
Variant LoadVariant(const Store& store, const Hash& h);
// A layer node's role -> tensor node map. Throws Error when malformed.
std::map<std::string, Hash> LoadLayer(const Store& store, const Hash& h);
// Every output tensor with its HF name and source tensor name, in plan order:
// pre tensors, then each layer's tensors in the architecture's role order, then
// post tensors.
std::vector<NamedTensor> OutputTensors(const Store& store, const Variant& v);

}  // namespace strata
