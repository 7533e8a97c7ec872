// Merge methods: the table of every method strata computes (mergekit's names,
// parameters and defaults), and their arithmetic over input tensors. The
// contract, op by op, is docs/merge_methods.md; a `merge` tensor node
// (STORE_FORMAT.md, version 3) names the method, its inputs and parameters.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/formats/dtype.h"
#include "strata/formats/hash.h"
#include "strata/formats/store.h"

namespace strata {

// How a method of the task-vector family (mergekit's generalized task
// arithmetic) sparsifies each delta and mixes them.
enum class Sparsify { kNone, kMagnitude, kRandom, kMagnitudeOutliers, kDellaMagprune };

struct MergeParamDef {
  const char* name;
  double default_value;  // booleans as 0/1
  bool required = false;
};

struct MergeMethodInfo {
  enum class Family {
    kPassthrough, kLinear, kTaskVector, kSlerp, kNearswap, kRam, kModelStock, kSce,
    kNuslerp, kMultislerp, kKarcher, kArceeFusion
  };
  const char* name;
  Family family;
  bool consensus = false;           // task-vector family: TIES sign election
  Sparsify sparsify = Sparsify::kNone;
  bool needs_base = false;         // a base is required (with base_role and not this: optional)
  int models = 0;                   // exactly this many distinct models, or 0: any
  std::vector<MergeParamDef> params;         // global: one value per tensor
  std::vector<MergeParamDef> tensor_params;  // one value per tensor and model
  int min_models = 0;               // at least this many (the base counts as one)
  int others = 0;                   // exactly this many besides the base, or 0: any
  // The base is merged onto (its per-model parameters unused) rather than
  // weighed like any other model (linear).
  bool base_role = true;
  // Every model is cast to the base's dtype (the task-vector family); the
  // others refuse models of different dtypes unless the plan gives a dtype.
  bool casts_to_base = false;
  // Needs every element of its inputs at once (norms, means, top-k).
  bool whole_tensor = false;
  // One model's tensor is returned as it is (every method but linear, which
  // still scales it by its weight).
  bool one_model_as_is = true;
  // The result is float32 whatever the inputs' dtype (arcee_fusion: torch
  // promotes the bf16 delta times a float32 mask); the node is F32.
  bool out_f32 = false;
  // Random draws (dare, della): the node carries `seed` and `salt`.
  bool random() const { return sparsify == Sparsify::kRandom || sparsify == Sparsify::kDellaMagprune; }
};

// Every method, passthrough first, in the order `--help` lists them.
const std::vector<MergeMethodInfo>& MergeMethods();
// nullptr when strata has no method of that name.
const MergeMethodInfo* FindMergeMethod(std::string_view name);
// "passthrough, linear, ..." for messages.
std::string MergeMethodNames();

// What a `merge` node says.
struct MergeSpec {
  const MergeMethodInfo* method = nullptr;
  std::vector<Hash> inputs;       // each of the node's dtype and shape
  int base = -1;                  // index into inputs, -1 when none
  Json params = Json::object();   // name -> number or bool
  std::vector<Json> tensor_params;  // one object per input
  std::optional<uint64_t> seed;   // random methods only
  std::string salt;               // random methods only: the source tensor name

  double Param(const char* name) const;                // the value or the method's default
  double TensorParam(size_t input, const char* name) const;
  Json ToJson() const;  // the node's merge fields (merged into the tensor node's JSON)
};

// Parses the merge fields of tensor node `j` (named `h`); throws Error naming
// the node for an unknown method, a malformed field, too few or too many
// inputs (at most kMaxMergeInputs), a base out of range, a parameter that is
// not a finite number or a boolean.
MergeSpec ParseMergeSpec(const Json& j, const Hash& h);
inline constexpr size_t kMaxMergeInputs = 256;
// karcher's max_iter: mergekit has no bound; strata's keeps a crafted node
// from computing for ever.
inline constexpr int kMaxKarcherIterations = 1000;

// Whether computing the node needs every element of its inputs at once (top-k,
// l1 rescale, slerp's norms). If not, any range can be computed alone.
bool MergeNeedsWholeTensor(const MergeSpec& m);

// Computes `n` output elements (as float32 values exactly representable in
// `dtype`; any float32 for an out_f32 method) from in[k][0..n) (the inputs'
// elements as float32, exact; `dtype` is the inputs' dtype) of a tensor of
// `shape`. When MergeNeedsWholeTensor, n is the tensor's numel.
// Throws Error (naming `node`) for parameters mergekit would refuse on this
// tensor (a density that keeps no element, ...).
void ComputeMerge(const MergeSpec& m, DType dtype, const std::vector<int64_t>& shape,
                  const std::vector<const float*>& in, size_t n, float* out, const Hash& node);

}  // namespace strata
