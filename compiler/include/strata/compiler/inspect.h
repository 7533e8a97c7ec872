// What a store holds, as JSON documents that tools/ prints as tables or as is
// (--json): variants (ls), one variant's layers and provenance (show), and
// logical versus physical bytes (du).
#pragma once

#include "strata/formats/store.h"

namespace strata {

// {"store": root, "variants": [{"name","node","architecture","layers",
//  "distinct_layers","tensors","logical_bytes","distinct_bytes"}]}
Json ListVariants(const Store& store);

// {"name","node","architecture","dtype","out_dtype","logical_bytes",
//  "distinct_bytes","layers":[{"index","layer","source_model","source_layer",
//  "slice","transforms":[{"tensor","ops":[{"op","dtype","factor"?}]}],
//  "same_as":[indices of other layers with this layer node]}],
//  "tensors":[{"name","node","dtype","shape","ops"}] (pre and post), "files":[names]}
// Throws Error when `name` is not a variant in the store.
Json ShowVariant(const Store& store, const std::string& name);

// {"variants": N, "logical_bytes": sum over variants, "physical_bytes": blob
//  and node files, "blob_bytes","blob_count","node_bytes","node_count","ratio"}
Json StoreUsage(const Store& store);

}  // namespace strata
