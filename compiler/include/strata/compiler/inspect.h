// What a store holds, as JSON documents that tools/ prints as tables or as is
// (--json): variants (ls), one variant's layers and provenance (show), and
// logical versus physical bytes (du).
#pragma once

#include "strata/formats/store.h"

namespace strata {

// {"store": root, "variants": [{"name","node","architecture","layers",
//  "distinct_layers","tensors","logical_bytes","distinct_bytes"}]}; a variant
//  that cannot be read is {"name","damaged":true,"problem"} and the rest are
//  listed as usual.
Json ListVariants(const Store& store);

// {"name","node","architecture","dtype","out_dtype","logical_bytes",
//  "distinct_bytes","layers":[{"index","layer","source_model","source_layer",
//  "slice","transforms":[{"tensor","ops":[{"op","dtype","factor"?}]}],
//  "same_as":[the first kSameAsShown indices of the other layers with this
//  layer node], "same_as_count": how many other layers have it}],
//  "tensors":[{"name","node","dtype","shape","ops"}] (pre and post), "files":[names]}
// same_as is a sample so that the document stays linear in the layers however
// often one layer repeats. Throws Error when `name` is not a variant in the store.
inline constexpr size_t kSameAsShown = 8;
Json ShowVariant(const Store& store, const std::string& name);

// A show layer's sharers as text: "1, 3" or, past the sample,
// "1, 3, 5, 7, 9, 11, 13, 15, ... (9,999 layers)"; "" when it has none.
std::string SameAsText(const Json& layer);

// {"variants": N, "logical_bytes": sum over variants, "physical_bytes": blob
//  and node files, "blob_bytes","blob_count","node_bytes","node_count","ratio",
//  "damaged": [{"name","problem"}] (variants left out of logical_bytes)}
Json StoreUsage(const Store& store);

}  // namespace strata
