// Fuzzes config.json validation: strata::ParseModelConfig (formats/src/model_config.cc)
// on whatever nlohmann::ordered_json parses from the input, then RopeInvFreq,
// RoleShape and NonLayerShape on every config it accepts.
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "strata/formats/error.h"
#include "strata/formats/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  strata::ModelConfig c;
  try {
    c = strata::ParseModelConfig(j);
  } catch (const strata::Error&) {
    return 0;
  }
  // Accepted: the figures the forward pass divides by and indexes with are sane.
  if (!c.arch || c.hidden < 1 || c.layers < 1 || c.heads < 1 || c.kv_heads < 1 || c.head_dim < 2 ||
      c.head_dim % 2 != 0 || c.heads % c.kv_heads != 0 || c.window.size() != static_cast<size_t>(c.layers))
    __builtin_trap();
  if (strata::RopeInvFreq(c).size() != static_cast<size_t>(c.head_dim / 2)) __builtin_trap();
  for (int r = 0; r <= static_cast<int>(strata::Role::kDown); ++r)
    for (int64_t d : strata::RoleShape(c, static_cast<strata::Role>(r)))
      if (d < 1) __builtin_trap();
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "x"})
    (void)strata::NonLayerShape(c, name);
  return 0;
}
