// Fuzzes the store's node parsers (formats/src/variant.cc): ParseTensorNode,
// ParseVariant and ParseLayer all run on every JSON value the input parses to;
// an accepted tensor node (merge nodes included) must survive ToJson() ->
// ParseTensorNode unchanged.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "strata/formats/error.h"
#include "strata/formats/hash.h"
#include "strata/formats/variant.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)strata::ValidFileName(bytes);
  (void)strata::ValidTensorName(bytes);
  const strata::Json j = strata::Json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  const strata::Hash h = strata::HashBytes(bytes);

  try {
    const strata::TensorNode t = strata::ParseTensorNode(j, h);
    (void)t.nbytes();
    (void)strata::OpName(t.op);
    const strata::TensorNode back = strata::ParseTensorNode(t.ToJson(), h);
    if (back.dtype != t.dtype || back.shape != t.shape || back.op != t.op || back.blob != t.blob ||
        back.src != t.src || back.factor != t.factor || back.ToJson() != t.ToJson())
      __builtin_trap();
  } catch (const strata::Error&) {
  }

  try {
    const strata::Variant v = strata::ParseVariant(j, h);
    if (!v.arch) __builtin_trap();
    for (const auto& t : v.pre)
      if (!strata::ValidTensorName(t.name)) __builtin_trap();
    for (const auto& t : v.post)
      if (!strata::ValidTensorName(t.name)) __builtin_trap();
    for (const auto& [name, blob] : v.files)
      if (!strata::ValidFileName(name)) __builtin_trap();
  } catch (const strata::Error&) {
  }

  try {
    for (const auto& [role, tensor] : strata::ParseLayer(j, h))
      if (!strata::ValidTensorName(role)) __builtin_trap();
  } catch (const strata::Error&) {
  }
  return 0;
}
