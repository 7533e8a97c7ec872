// Diffing two variants: their layer sequences aligned by layer hash (an LCS
// edit script), shared bytes, per-tensor numbers for what changed, and the
// config.json differences, as one JSON document that tools/ prints or renders.
#pragma once

#include <string>
#include <vector>

#include "strata/formats/store.h"

namespace strata {

// One step of an edit script between two sequences.
struct EditStep {
  enum class Op { kKept, kChanged, kInserted, kRemoved };
  Op op;
  int a = -1, b = -1;  // indices into A and B; -1 for the side that has none
};
std::string_view EditOpName(EditStep::Op op);

// Aligns `a` with `b`: kept steps form a longest common subsequence, and in
// each gap between kept steps the removed and inserted elements are paired in
// order into changed steps (the surplus stays removed, then inserted).
// Tie-break, so the script is canonical: walking from the front, equal heads
// are kept; otherwise A's head is removed when that loses no common element,
// else B's head is inserted. O(|a| x |b|) time and memory: layer counts are
// in the hundreds at most.
std::vector<EditStep> AlignSequences(const std::vector<std::string>& a, const std::vector<std::string>& b);

struct DiffOptions {
  bool tensor_stats = true;           // read tensors to compute the numbers below
  uint64_t chunk_elements = 1u << 20;  // elements per read: memory is bounded by this
};

// Numbers comparing two tensors of equal shape, in double, read in chunks:
// {"max_abs_delta", "rel_l2" (||a-b||/||a||, null when ||a|| = 0 and a != b),
//  "cosine" (null when either norm is 0)}. Throws Error when a tensor is not
// a float type or cannot be read.
Json CompareTensors(const Store& store, const Hash& a, const Hash& b, const DiffOptions& opts);

// {"a": {"name","node","architecture","layers","distinct_bytes"}, "b": {...},
//  "counts": {"kept","changed","inserted","removed"},
//  "bytes": {"shared", "a_distinct", "b_distinct"}   (distinct blob bytes),
//  "rows": [{"op", "a": side|null, "b": side|null, "shared_bytes",
//            "tensors": [{"role","op": identical|changed|only_a|only_b|shape,
//                         "a_shape","b_shape", stats...}] (changed rows)}],
//  "tensors": [{"name","op", stats...}]  (embeddings, final norm, lm_head),
//  "config": [{"key", "a"?, "b"?}]        (flattened keys that differ)}
// where side = {"index","layer","source_model","source_layer","slice",
// "transforms"} ("transforms" as in ShowVariant: scaled, zeroed, cast tensors).
// Throws Error when a variant or an object it needs is missing.
Json DiffVariants(const Store& store, const Hash& a, const std::string& a_name, const Hash& b,
                  const std::string& b_name, const DiffOptions& opts = {});

}  // namespace strata
