// Whether a variant is a whole model: its config.json valid, every layer with
// exactly its architecture's roles, every tensor of the shape the config
// implies. Shared by verify, export and the runtime's load.
#pragma once

#include <string>
#include <vector>

#include "strata/formats/materialize.h"
#include "strata/formats/model_config.h"

namespace strata {

struct VariantCheck {
  std::optional<ModelConfig> config;  // when config.json parsed
  std::vector<std::string> problems;  // empty: the variant is complete
};

// Checks `v` against its architecture and config.json, reading nodes (and the
// config blob) through `reader`. Never throws for a defect of the variant: each
// is one problem, in words a user can act on ("layer 3 (node ...) has no
// self_attn.q_proj.weight"). Throws Error only for what prevents reading at
// all (a missing or corrupt node below the variant: verify reports those).
VariantCheck CheckVariant(const Store& store, const Variant& v, TensorReader& reader);

// The variant's config.json, parsed (ParseModelConfig). Throws Error when the
// blob is missing or corrupt, not JSON, or not a config strata accepts.
ModelConfig LoadVariantConfig(const Store& store, const Variant& v);

// CheckVariant, throwing Error listing the problems (at most 5) when any.
ModelConfig RequireCompleteVariant(const Store& store, const Variant& v, TensorReader& reader);

}  // namespace strata
