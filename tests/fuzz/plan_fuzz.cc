// Fuzzes the mergekit plan parser: strata::ParsePlan (compiler/src/plan.cc) on the
// input as YAML text, then ReferencedModels, LookupParam and EvaluateNumber on
// the parameters of an accepted plan; checks the method's source counts and base.
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
  if (!plan.method) __builtin_trap();
  for (const strata::PlanSlice& s : plan.slices) {
    // The method's count of models (passthrough 1, slerp 2), at most what a merge node holds;
    // a method that needs a base has it among the slice's sources.
    const int n = static_cast<int>(s.sources.size());
    if (n < 1 || n > static_cast<int>(strata::kMaxMergeInputs) || (plan.method->models > 0 && n != plan.method->models))
      __builtin_trap();
    if (plan.method->needs_base) {
      const auto& base = plan.BaseOf(s);
      if (!base) __builtin_trap();
      bool found = false;
      for (const strata::PlanSource& src : s.sources) found |= src.model == *base;
      if (!found) __builtin_trap();
    }
    for (const strata::PlanSource& src : s.sources)
      for (const char* p : {"weight", "density", "t", "scale"}) {
        try {
          (void)strata::LookupParam(plan, s, &src, p, "model.layers.0.mlp.up_proj.weight", 0.5);
        } catch (const strata::Error&) {
          // A string where a number is needed: rejected with its location.
        }
      }
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
