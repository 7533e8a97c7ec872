// Fuzzes the mergekit plan parser: strata::ParsePlan (compiler/src/plan.cc) on the
// input as YAML text, then ReferencedModels and EvaluateNumber on every parameter
// of an accepted plan.
#include <cstddef>
#include <cstdint>
#include <string>

#include "strata/compiler/plan.h"
#include "strata/formats/error.h"

namespace {

void Evaluate(const strata::Params& params) {
  for (const auto& [name, setting] : params) {
    (void)setting.loc.Str();
    for (double t : {0.0, 0.25, 0.5, 1.0}) {
      for (const char* tensor : {"model.layers.0.self_attn.o_proj.weight", "model.embed_tokens.weight"}) {
        try {
          (void)strata::EvaluateNumber(setting, tensor, t);
        } catch (const strata::Error&) {
          // A string where a number is needed: rejected with its location.
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  strata::Plan plan;
  try {
    plan = strata::ParsePlan(text, "fuzz.yml");
  } catch (const strata::Error&) {
    return 0;
  }
  if (plan.slices.empty() || plan.text != text) __builtin_trap();
  (void)plan.ReferencedModels();
  Evaluate(plan.params);
  for (const strata::PlanSlice& s : plan.slices) {
    if (s.sources.size() != 1) __builtin_trap();  // passthrough: exactly one source per slice
    Evaluate(s.params);
    for (const strata::PlanSource& src : s.sources) {
      // [n, n] is legal (mergekit); reversed or negative ranges are refused.
      if (!plan.models_form && (src.begin < 0 || src.end < src.begin)) __builtin_trap();
      (void)src.loc.Str();
      (void)src.range_loc.Str();
      Evaluate(src.params);
    }
  }
  return 0;
}
