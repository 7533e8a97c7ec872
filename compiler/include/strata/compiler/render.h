// Pictures of where layers came from: SVG (and self-contained HTML pages
// around it) drawn from ShowVariant's JSON and from DiffVariants' JSON. Pure
// functions from JSON to text, so they can be tested without a browser.
#pragma once

#include <string>
#include <string_view>

#include "strata/formats/store.h"

namespace strata {

// One column of source layers per source model, the output layers in a
// column, one <line class="prov"> from each output layer to its source layer
// (colored by source model), badges for zeroed/scaled/cast tensors, and a
// "#k ×n" mark on every output layer whose weight set is used n > 1 times.
std::string ProvenanceSvg(const Json& show);
// A page with ProvenanceSvg, a legend of source models and a table of layers.
std::string ProvenanceHtml(const Json& show);

// Both variants side by side: aligned kept pairs joined by <line class="kept">,
// changed pairs by <line class="changed">, other layers with the same hash by
// <line class="same">; boxes colored by op (kept/changed/removed/inserted).
std::string DiffSvg(const Json& diff);
// A page with DiffSvg, the aligned rows, non-layer tensors and config keys.
std::string DiffHtml(const Json& diff);

// A layer's transforms (ShowVariant's "transforms") in a few characters:
// "o,down=0" (zeroed), "q,k×0.5" (scaled), "→F16" (cast; omitted with
// `skip_casts`); groups separated by spaces, "" when there is nothing.
std::string TransformBadge(const Json& transforms, bool skip_casts);
// "self_attn.o_proj.weight" -> "o", "mlp.down_proj.weight" -> "down".
std::string ShortRole(std::string_view role);
// Text escaped for XML/HTML content and attribute values.
std::string XmlEscape(std::string_view s);

}  // namespace strata
