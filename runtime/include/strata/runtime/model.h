// A variant assembled for execution: N logical layers, each pointing at a
// shared weight set (one per distinct layer node), with the non-layer tensors.
// The same assembly serves every backend.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "strata/runtime/config.h"
#include "strata/runtime/weights.h"

namespace strata {

// One distinct layer's weights, by role (the architecture table in
// formats/arch.h says which roles a layer has; the others are null).
struct WeightSet {
  Hash layer;  // the layer node
  std::array<const HostTensor*, kRoleCount> by_role{};
  const HostTensor* operator[](Role r) const { return by_role[static_cast<size_t>(r)]; }
  const HostTensor*& operator[](Role r) { return by_role[static_cast<size_t>(r)]; }
  // o_proj and down_proj are both zero: the layer adds exactly nothing to the
  // residual stream (block expansion's appended layers).
  bool identity() const { return (*this)[Role::kO]->zero && (*this)[Role::kDown]->zero; }
};

struct Model {
  ModelConfig config;
  const HostTensor* embed = nullptr;
  const HostTensor* final_norm = nullptr;
  const HostTensor* lm_head = nullptr;  // the embedding table when tied
  std::vector<const WeightSet*> layers;  // logical layers, in order
  std::map<Hash, std::unique_ptr<WeightSet>> weight_sets;  // distinct ones
};

// Weight bytes one batch-1 decode step reads: every executed logical layer's
// tensors (a layer repeated at several depths counts at each depth; with
// `elide`, identity layers are skipped and count nothing; zero tensors count
// nothing, as no backend reads them), the final norm, the LM head and one row
// of the embedding table. Divided into the device's read bandwidth this is the
// decode speed bound.
uint64_t DecodeWeightBytesPerToken(const Model& model, bool elide);

// Assembles variant `variant` of `store`, resolving tensors through `weights`.
// Throws Error naming the object when a node is missing or malformed, the
// variant is not complete (RequireCompleteVariant: roles, layer count, shapes
// against config.json), a blob is corrupt (WeightStore with verify), or a
// weight's dtype is one the kernels do not read.
Model AssembleModel(const Store& store, WeightStore& weights, const Hash& variant);

}  // namespace strata
