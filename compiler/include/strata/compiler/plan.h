// Merge plans: mergekit's YAML, parsed with positions so every error can name
// file:line:column, and mergekit's rules for evaluating parameters.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/formats/dtype.h"
#include "strata/formats/merge.h"

namespace strata {

struct SourceLoc {
  std::string file;
  int line = 0, column = 0;  // 1-based; 0 when unknown
  std::string Str() const;   // "plan.yml:6:20"
};

// A parameter value as written in the plan.
struct Setting {
  enum class Kind { kNumber, kString, kGradient, kStringList, kFilters };
  struct Filter {
    std::optional<std::string> filter;  // absent: matches every tensor
    std::shared_ptr<Setting> value;
  };
  Kind kind = Kind::kNumber;
  double number = 0;
  std::string str;
  std::vector<double> gradient;
  std::vector<std::string> strings;
  std::vector<Filter> filters;
  SourceLoc loc;
};
using Params = std::map<std::string, Setting>;

// The value a setting takes for `tensor_name` at position t, as mergekit's
// evaluate_setting computes it: a number is itself; a gradient (list of
// numbers) is interpolated piecewise-linearly at t; a list of filters yields
// the first entry whose filter is absent, "*", or a substring of tensor_name;
// nullopt when no filter matches. Throws Error (with the setting's location)
// when the value that applies is not a number.
std::optional<double> EvaluateNumber(const Setting& s, std::string_view tensor_name, double t);



struct PlanSource {
  std::string model;          // as written: HF id (maybe "@rev") or a local path
  int begin = 0, end = -1;    // half-open layer range; end = -1: all layers (models: form)
  Params params;
  SourceLoc loc, range_loc;
};

struct PlanSlice {
  std::vector<PlanSource> sources;
  Params params;
  SourceLoc loc;
  std::optional<std::string> base_model;  // the slice's own, overriding the plan's
  SourceLoc base_model_loc;
};

struct Plan {
  std::string path;  // as given, for messages
  std::string text;  // the plan's bytes, stored with the variant
  std::vector<PlanSlice> slices;  // the models: form becomes one slice per rule
  bool models_form = false;
  std::string merge_method;
  const MergeMethodInfo* method = nullptr;  // merge_method's entry
  std::optional<std::string> base_model;
  std::optional<std::string> tokenizer_source;
  std::optional<std::string> chat_template;
  std::optional<DType> dtype, out_dtype;
  Params params;
  std::vector<std::string> warnings;
  SourceLoc base_model_loc;

  // Models in order of first mention, base_model first when given.
  std::vector<std::string> ReferencedModels() const;
  // The base model of slice `s`: its own base_model, else the plan's.
  const std::optional<std::string>& BaseOf(const PlanSlice& s) const { return s.base_model ? s.base_model : base_model; }
};

// A parameter's value for one tensor and where it was written.
struct ParamValue {
  double value = 0;
  SourceLoc loc;
};
// mergekit's ConfigReader.parameter: with `src` (a per-model parameter) the
// first source of `slice` for that model, then the slice's parameters, then
// the plan's; without, the slice's and the plan's. The first whose setting
// yields a value for (tensor_name, t) wins; nullopt when none does.
std::optional<ParamValue> LookupParam(const Plan& plan, const PlanSlice& slice, const PlanSource* src,
                                      const std::string& name, std::string_view tensor_name, double t);

// Parses plan text. Throws Error naming path:line:column and what to change:
// malformed YAML, unknown keys, wrong types, an unsupported merge_method (the
// message lists the supported ones), a passthrough slice with more or less than
// one source, sources of one slice spanning different numbers of layers,
// layer_range not [begin, end) with 0 <= begin < end, unknown dtypes,
// tokenizer_source: union.
Plan ParsePlan(const std::string& text, const std::string& path);
// Reads `path` and parses it. Throws Error when it cannot be read or parsed.
Plan LoadPlan(const std::string& path);


}  // namespace strata
