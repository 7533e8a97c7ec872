// SVG/HTML provenance and diff pictures, drawn from the JSON documents of
// inspect.h and diff.h. Layout: fixed column widths, row height scaled to the
// layer count so 32..200 layers fit one screen, labels thinned when rows are small.
#include "strata/compiler/render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "strata/compiler/inspect.h"

namespace strata {

namespace {

// Model colors (Tableau 10 without its red, which marks zeroed tensors).
const std::vector<std::string> kPalette = {"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f",
                                           "#76b7b2", "#edc948", "#ff9da7", "#bab0ac"};
// In a diff orange, red and green mean changed, removed, inserted: models get the rest.
const std::vector<std::string> kDiffPalette = {"#4e79a7", "#b07aa1", "#9c755f", "#76b7b2",
                                               "#edc948", "#ff9da7", "#bab0ac"};
constexpr const char* kZeroStroke = "#c0392b";
constexpr const char* kZeroFill = "#fde0dc";
constexpr const char* kFont = "DejaVu Sans, Arial, Helvetica, sans-serif";

std::string Num(double v) {
  char b[32];
  snprintf(b, sizeof b, "%.1f", v);
  std::string s = b;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s;
}

std::string Fmt(const char* fmt, double v) {
  char b[48];
  snprintf(b, sizeof b, fmt, v);
  return b;
}

std::string Bytes(uint64_t n) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  return u == 0 ? std::to_string(n) + " B" : Fmt(v < 10 ? "%.2f" : v < 100 ? "%.1f" : "%.0f", v) + " " + units[u];
}

// `color` (#rrggbb) mixed with white: an opaque tint, so lines drawn before a
// box pass behind it instead of through it.
std::string Tint(const std::string& color, double amount) {
  unsigned r = 0, g = 0, b = 0;
  sscanf(color.c_str(), "#%02x%02x%02x", &r, &g, &b);
  auto mix = [&](unsigned c) { return static_cast<unsigned>(std::lround(255 - (255 - c) * amount)); };
  char buf[8];
  snprintf(buf, sizeof buf, "#%02x%02x%02x", mix(r), mix(g), mix(b));
  return buf;
}

// Row height for n rows: about 1400 px in all, within readable bounds.
double RowHeight(size_t n) { return std::clamp(1400.0 / static_cast<double>(std::max<size_t>(n, 1)), 9.0, 24.0); }
// Label every k-th row so 10 px text never overlaps.
int LabelStep(double row_h) { return row_h >= 12 ? 1 : static_cast<int>(std::ceil(12.0 / row_h)); }
double FontFor(double box_h) { return std::min(11.0, box_h * 0.8); }

// A text width estimate (DejaVu Sans averages ~0.6 em).
double TextWidth(std::string_view s, double size) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;  // count UTF-8 code points
  return static_cast<double>(chars) * size * 0.62;
}

class Svg {
 public:
  void Add(const std::string& s) { body_ += s; }
  void Rect(double x, double y, double w, double h, const std::string& fill, const std::string& stroke,
            const std::string& extra = "", const std::string& tip = "") {
    body_ += "<rect x=\"" + Num(x) + "\" y=\"" + Num(y) + "\" width=\"" + Num(w) + "\" height=\"" + Num(h) +
             "\" fill=\"" + fill + "\" stroke=\"" + stroke + "\"" + (extra.empty() ? "" : " " + extra);
    body_ += tip.empty() ? "/>\n" : "><title>" + XmlEscape(tip) + "</title></rect>\n";
  }
  void Line(double x1, double y1, double x2, double y2, const std::string& stroke, double width,
            const std::string& cls, const std::string& extra = "") {
    body_ += "<line class=\"" + cls + "\" x1=\"" + Num(x1) + "\" y1=\"" + Num(y1) + "\" x2=\"" + Num(x2) +
             "\" y2=\"" + Num(y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + Num(width) + "\"" +
             (extra.empty() ? "" : " " + extra) + "/>\n";
  }
  void Text(double x, double y, std::string_view text, double size, const std::string& extra = "") {
    body_ += "<text x=\"" + Num(x) + "\" y=\"" + Num(y) + "\" font-size=\"" + Num(size) + "\"" +
             (extra.empty() ? "" : " " + extra) + ">" + XmlEscape(text) + "</text>\n";
  }
  std::string Finish(double w, double h) const {
    return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(w) + "\" height=\"" + Num(h) +
           "\" viewBox=\"0 0 " + Num(w) + " " + Num(h) + "\" font-family=\"" + kFont + "\">\n" +
           "<defs><pattern id=\"hatch\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\" "
           "patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"none\"/>"
           "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#333\" stroke-width=\"1.6\" stroke-opacity=\"0.45\"/>"
           "</pattern></defs>\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n" +
           body_ + "</svg>\n";
  }

 private:
  std::string body_;
};

// "mistralai/Mistral-7B-v0.1" -> {"mistralai/", "Mistral-7B-v0.1"}; a path keeps its last part.
std::pair<std::string, std::string> SplitModelId(const std::string& id) {
  size_t slash = id.find_last_of('/');
  if (slash == std::string::npos || slash + 1 == id.size()) return {"", id};
  return {id.substr(0, slash + 1), id.substr(slash + 1)};
}

struct ModelInfo {
  std::string id, color;
  int source_layers = 0;  // 1 + the highest source layer used
  int uses = 0;           // output layers from it
};

// Source models in order of first use, each with its color.
std::vector<ModelInfo> ModelsOf(const std::vector<const Json*>& layers,
                                const std::vector<std::string>& palette = kPalette) {
  std::vector<ModelInfo> models;
  for (const Json* l : layers) {
    std::string id = (*l)["source_model"];
    auto it = std::find_if(models.begin(), models.end(), [&](const ModelInfo& m) { return m.id == id; });
    if (it == models.end()) {
      models.push_back({id, palette[models.size() % palette.size()], 0, 0});
      it = models.end() - 1;
    }
    it->source_layers = std::max(it->source_layers, (*l)["source_layer"].get<int>() + 1);
    ++it->uses;
  }
  return models;
}

size_t ModelIndex(const std::vector<ModelInfo>& models, const std::string& id) {
  for (size_t i = 0; i < models.size(); ++i)
    if (models[i].id == id) return i;
  return 0;
}

// Weight sets (layer hashes) used more than once: hash -> (group number, uses),
// numbered by first use.
std::map<std::string, std::pair<int, int>> RepeatGroups(const std::vector<const Json*>& layers) {
  std::map<std::string, int> uses;
  for (const Json* l : layers) ++uses[(*l)["layer"].get<std::string>()];
  std::map<std::string, std::pair<int, int>> groups;
  for (const Json* l : layers) {
    std::string h = (*l)["layer"];
    if (uses[h] > 1 && !groups.count(h)) groups[h] = {static_cast<int>(groups.size()) + 1, uses[h]};
  }
  return groups;
}

// "BF16→F16" for a tensor's ops (outermost first), "" when nothing is cast.
std::string CastPath(const Json& ops) {
  std::string path;
  for (auto it = ops.rbegin(); it != ops.rend(); ++it) {
    std::string op = (*it)["op"], dt = (*it)["dtype"];
    if (op == "blob" || op == "zeros") path = dt;
    else if (op == "cast") path += "→" + dt;
  }
  return path.find("→") == std::string::npos ? "" : path;
}

// The cast every tensor of every layer has when it is the same everywhere (a
// plan `dtype` over sources of one dtype): said once in the title instead of
// on every layer.
std::string UniformCast(const std::vector<const Json*>& layers) {
  std::string cast;
  size_t per_layer = 0;
  for (const Json* l : layers) {
    const Json& tr = (*l)["transforms"];
    if (tr.empty() || (per_layer && tr.size() != per_layer)) return "";
    per_layer = tr.size();
    for (const Json& t : tr) {
      std::string c = CastPath(t["ops"]);
      if (c.empty() || (!cast.empty() && c != cast)) return "";
      cast = c;
    }
  }
  return cast;
}

bool IsZeroed(const Json& ops) {
  for (const Json& op : ops)
    if (op["op"] == "zeros" || (op["op"] == "scale" && op.value("factor", 1.0) == 0.0)) return true;
  return false;
}

std::vector<const Json*> Pointers(const Json& array) {
  std::vector<const Json*> out;
  for (const Json& j : array) out.push_back(&j);
  return out;
}

std::string LayerTip(const Json& l, const std::string& badge) {
  std::string tip = "layer " + std::to_string(l["index"].get<int>()) + ": " +
                    l["layer"].get<std::string>().substr(0, 12) + " from " + l["source_model"].get<std::string>() +
                    " layer " + std::to_string(l["source_layer"].get<int>());
  if (!badge.empty()) tip += "; " + badge;
  if (std::string same = SameAsText(l); !same.empty()) tip += "; same weights as " + same;
  return tip;
}

// The provenance picture's geometry.
struct ProvLayout {
  static constexpr double kMargin = 24, kSrcW = 150, kSrcGap = 46, kFan = 360, kOutW = 150, kBadgeW = 330;
  size_t n = 0, models = 0;
  double row_h = 0, top = 0;
  double SrcX(size_t m) const { return kMargin + static_cast<double>(m) * (kSrcW + kSrcGap); }
  double OutX() const { return SrcX(models) - kSrcGap + kFan; }
  double BadgeX() const { return OutX() + kOutW + 10; }
  double Width() const { return BadgeX() + kBadgeW; }
  double Height() const { return top + row_h * static_cast<double>(n) + 30; }
  double Gap(double h) const { return std::max(1.0, h * 0.16); }
};

// Title, subtitle and legend; returns the y where the column headers go.
double ProvHeader(Svg& svg, const Json& show, const std::vector<ModelInfo>& models, const std::string& cast,
                  size_t distinct, size_t n) {
  svg.Text(24, 32, "provenance of " + show.value("name", std::string("variant")), 20, "font-weight=\"bold\"");
  std::string sub = show.value("architecture", std::string("")) + " · " + std::to_string(n) + " layers, " +
                    std::to_string(distinct) + " distinct weight sets";
  if (show.contains("logical_bytes"))
    sub += " · " + Bytes(show["logical_bytes"]) + " as a checkpoint, " + Bytes(show["distinct_bytes"]) + " stored";
  if (!cast.empty()) sub += " · every tensor cast " + cast;
  svg.Text(24, 54, sub, 13, "fill=\"#444\"");
  double y = 80;
  for (const ModelInfo& m : models) {
    svg.Rect(24, y - 11, 14, 14, m.color, m.color, "class=\"legend-model\"");
    svg.Text(46, y, m.id + "  (" + std::to_string(m.uses) + " output layers)", 13);
    y += 20;
  }
  svg.Rect(24, y - 11, 44, 14, "url(#hatch)", "#555");
  svg.Text(76, y, "#k ×n: one weight set (layer hash) used at n depths, stored once", 12);
  y += 20;
  svg.Rect(24, y - 11, 44, 14, kZeroFill, kZeroStroke);
  svg.Text(28, y, "o=0", 10, std::string("fill=\"") + kZeroStroke + "\"");
  svg.Text(76, y, "tensors zeroed (scale 0), dashed line;  q×0.5: scaled;  →F16: cast", 12);
  return y + 44;
}

void ProvSourceColumn(Svg& svg, const ProvLayout& L, size_t m, const ModelInfo& info,
                      const std::set<int>& used) {
  const double x = L.SrcX(m), H = L.row_h * static_cast<double>(L.n);
  const double hs = H / info.source_layers, gap = L.Gap(hs), font = FontFor(std::min(hs - gap, 24.0));
  auto [org, name] = SplitModelId(info.id);
  svg.Text(x, L.top - 26, org, 11, "fill=\"#666\"");
  svg.Text(x, L.top - 10, name, 13, "font-weight=\"bold\" fill=\"" + info.color + "\"");
  const int step = LabelStep(hs);
  for (int s = 0; s < info.source_layers; ++s) {
    const double y = L.top + s * hs;
    bool u = used.count(s) > 0;
    svg.Rect(x, y + gap / 2, ProvLayout::kSrcW, hs - gap, u ? Tint(info.color, 0.3) : "#ffffff",
             u ? info.color : "#cccccc", "class=\"src\"" + std::string(u ? "" : " stroke-dasharray=\"3 2\""));
    if (s % step == 0 || s == info.source_layers - 1)
      svg.Text(x + 6, y + hs / 2 + font * 0.35, Fmt("L%.0f", s), font, u ? "" : "fill=\"#aaa\"");
  }
}

void ProvBadges(Svg& svg, double x, double y, double h, const std::pair<int, int>* group,
                const std::string& badge, bool zeroed) {
  const double font = std::min(11.0, h * 0.85);
  if (group) {
    std::string t = "#" + std::to_string(group->first) + " ×" + std::to_string(group->second);
    double w = TextWidth(t, font) + 16;
    svg.Rect(x, y, w, h, "#f4f4f4", "#555", "class=\"repeat\"");
    svg.Rect(x, y, 8, h, "url(#hatch)", "none");
    svg.Text(x + 10, y + h / 2 + font * 0.35, t, font, "class=\"repeat-count\"");
    x += std::max(w, 62.0) + 6;
  }
  if (!badge.empty()) {
    double w = TextWidth(badge, font) + 8;
    svg.Rect(x, y, w, h, zeroed ? kZeroFill : "#eef3fa", zeroed ? kZeroStroke : "#4e79a7",
             std::string("rx=\"3\" class=\"badge") + (zeroed ? " zero" : "") + "\"");
    svg.Text(x + 4, y + h / 2 + font * 0.35, badge, font,
             std::string("fill=\"") + (zeroed ? kZeroStroke : "#1f3f66") + "\"");
  }
}

}  // namespace

std::string XmlEscape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ShortRole(std::string_view role) {
  std::string r(role);
  auto strip_prefix = [&](std::string_view p) {
    if (r.rfind(p, 0) == 0) r.erase(0, p.size());
  };
  auto replace = [&](std::string_view from, std::string_view to) {
    size_t pos = r.find(from);
    if (pos != std::string::npos) r.replace(pos, from.size(), to);
  };
  strip_prefix("self_attn.");
  strip_prefix("mlp.");
  replace(".weight", "");
  replace(".bias", ".b");
  replace("_proj", "");
  replace("post_attention_layernorm", "ln_post");
  replace("input_layernorm", "ln_in");
  return r;
}

namespace {

// A short role's place in a layer (computation order), so badges read "o,down"
// whatever order the transforms come in.
int RoleRank(const std::string& short_role) {
  static const char* kOrder[] = {"ln_in", "q", "q.b", "k", "k.b", "v", "v.b", "o", "ln_post", "gate", "up", "down"};
  for (size_t i = 0; i < std::size(kOrder); ++i)
    if (short_role == kOrder[i]) return static_cast<int>(i);
  return static_cast<int>(std::size(kOrder));
}

}  // namespace

std::string TransformBadge(const Json& transforms, bool skip_casts) {
  std::vector<std::pair<std::string, std::vector<std::string>>> groups;  // suffix -> roles, first-use order
  for (const Json& t : transforms) {
    const Json& ops = t["ops"];
    double factor = 1;
    bool scaled = false;
    for (const Json& op : ops)
      if (op["op"] == "scale") factor *= op.value("factor", 1.0), scaled = true;
    std::string suffix;
    if (IsZeroed(ops)) suffix = "=0";
    else if (scaled) suffix = "×" + Fmt("%g", factor);
    else if (!skip_casts && !CastPath(ops).empty()) suffix = "→" + ops[0]["dtype"].get<std::string>();
    if (suffix.empty()) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == suffix; });
    if (it == groups.end()) it = groups.insert(groups.end(), {suffix, {}});
    it->second.push_back(ShortRole(t["tensor"].get<std::string>()));
  }
  std::string badge;
  for (auto& [suffix, roles] : groups) {
    std::stable_sort(roles.begin(), roles.end(),
                     [](const std::string& x, const std::string& y) { return RoleRank(x) < RoleRank(y); });
    std::string who;
    if (roles.size() > 4) {
      who = std::to_string(roles.size()) + " tensors";
    } else {
      for (const std::string& r : roles) who += (who.empty() ? "" : ",") + r;
    }
    badge += (badge.empty() ? "" : " ") + who + suffix;
  }
  return badge;
}

std::string ProvenanceSvg(const Json& show) {
  const std::vector<const Json*> layers = Pointers(show.at("layers"));
  const std::vector<ModelInfo> models = ModelsOf(layers);
  const auto groups = RepeatGroups(layers);
  const std::string cast = UniformCast(layers);
  std::set<std::string> distinct;
  for (const Json* l : layers) distinct.insert((*l)["layer"].get<std::string>());

  Svg svg;
  ProvLayout L;
  L.n = layers.size();
  L.models = std::max<size_t>(models.size(), 1);
  L.row_h = RowHeight(L.n);
  L.top = ProvHeader(svg, show, models, cast, distinct.size(), L.n);

  std::vector<std::set<int>> used(models.size());
  for (const Json* l : layers)
    used[ModelIndex(models, (*l)["source_model"])].insert((*l)["source_layer"].get<int>());
  for (size_t m = 0; m < models.size(); ++m) ProvSourceColumn(svg, L, m, models[m], used[m]);
  svg.Text(L.OutX(), L.top - 10, "output: " + show.value("name", std::string("")), 13, "font-weight=\"bold\"");

  // Lines first, so the boxes drawn after cover their ends.
  const double H = L.row_h * static_cast<double>(L.n);
  for (size_t i = 0; i < layers.size(); ++i) {
    const Json& l = *layers[i];
    const ModelInfo& m = models[ModelIndex(models, l["source_model"])];
    const double hs = H / m.source_layers;
    bool zeroed = false;
    for (const Json& t : l["transforms"]) zeroed |= IsZeroed(t["ops"]);
    svg.Line(L.SrcX(ModelIndex(models, m.id)) + ProvLayout::kSrcW, L.top + (l["source_layer"].get<int>() + 0.5) * hs,
             L.OutX(), L.top + (static_cast<double>(i) + 0.5) * L.row_h, m.color, L.row_h < 12 ? 1.2 : 1.6, "prov",
             std::string("stroke-opacity=\"0.8\" data-model=\"") + XmlEscape(m.id) + "\"" +
                 (zeroed ? " stroke-dasharray=\"5 3\"" : ""));
  }
  const int step = LabelStep(L.row_h);
  const double gap = L.Gap(L.row_h), bh = L.row_h - gap, font = FontFor(bh);
  for (size_t i = 0; i < layers.size(); ++i) {
    const Json& l = *layers[i];
    const ModelInfo& m = models[ModelIndex(models, l["source_model"])];
    const double y = L.top + static_cast<double>(i) * L.row_h + gap / 2;
    const std::string badge = TransformBadge(l["transforms"], !cast.empty());
    bool zeroed = false;
    for (const Json& t : l["transforms"]) zeroed |= IsZeroed(t["ops"]);
    auto g = groups.find(l["layer"].get<std::string>());
    svg.Rect(L.OutX(), y, ProvLayout::kOutW, bh, Tint(m.color, 0.4), m.color, "class=\"out\"", LayerTip(l, badge));
    if (g != groups.end()) svg.Rect(L.OutX() + ProvLayout::kOutW - 26, y, 26, bh, "url(#hatch)", "none");
    if (static_cast<int>(i) % step == 0 || i + 1 == layers.size())
      svg.Text(L.OutX() + 6, y + bh / 2 + font * 0.35,
               std::to_string(i) + "  ← L" + std::to_string(l["source_layer"].get<int>()), font);
    ProvBadges(svg, L.BadgeX(), y, bh, g == groups.end() ? nullptr : &g->second, badge, zeroed);
  }
  return svg.Finish(L.Width(), L.Height());
}

namespace {

// Shared page frame: a title, a paragraph, the SVG, then `tables`.
std::string Page(const std::string& title, const std::string& intro, const std::string& svg,
                 const std::string& tables) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>" + XmlEscape(title) +
         "</title>\n<style>\n"
         "body{font-family:" + std::string(kFont) + ";margin:16px;color:#222}\n"
         "h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:18px 0 6px} p{margin:4px 0 10px}\n"
         "svg{max-width:100%;height:auto;display:block}\n"
         "table{border-collapse:collapse;font-size:12px}\n"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}\n"
         "th{background:#f0f0f0} td.num{text-align:right} code{font-size:11px}\n"
         ".sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}\n"
         ".kept{background:#eeeeee} .changed{background:#fdd0a2} .removed{background:#fcbba1}"
         " .inserted{background:#c7e9c0}\n"
         "</style></head><body>\n" + svg + "<p>" + intro + "</p>\n" + tables +
         "</body></html>\n";
}

std::string Cell(const std::string& text, const std::string& cls = "") {
  return "<td" + (cls.empty() ? "" : " class=\"" + cls + "\"") + ">" + XmlEscape(text) + "</td>";
}

std::string HeaderRow(const std::vector<std::string>& names) {
  std::string s = "<tr>";
  for (const std::string& n : names) s += "<th>" + XmlEscape(n) + "</th>";
  return s + "</tr>\n";
}

std::string SourceText(const Json& sources, const std::string& id) {
  if (!sources.contains(id)) return "";
  const Json& s = sources[id];
  if (s.contains("revision")) return "revision " + s["revision"].get<std::string>();
  if (s.contains("path")) return s["path"].get<std::string>();
  return s.dump();
}

}  // namespace

std::string ProvenanceHtml(const Json& show) {
  const std::vector<const Json*> layers = Pointers(show.at("layers"));
  const std::vector<ModelInfo> models = ModelsOf(layers);
  const std::string cast = UniformCast(layers);
  const Json sources = show.value("sources", Json::object());
  std::string t = "<h2>Source models</h2>\n<table>\n" + HeaderRow({"model", "output layers", "source"});
  for (const ModelInfo& m : models)
    t += "<tr><td><span class=\"sw\" style=\"background:" + m.color + "\"></span>" + XmlEscape(m.id) + "</td>" +
         Cell(std::to_string(m.uses), "num") + Cell(SourceText(sources, m.id)) + "</tr>\n";
  t += "</table>\n<h2>Layers</h2>\n<table>\n" +
       HeaderRow({"layer", "hash", "source model", "source layer", "transforms", "same weights as"});
  for (const Json* l : layers) {
    const std::string color = models[ModelIndex(models, (*l)["source_model"])].color;
    t += "<tr>" + Cell(std::to_string((*l)["index"].get<int>()), "num") + "<td><code>" +
         XmlEscape((*l)["layer"].get<std::string>().substr(0, 12)) + "</code></td>" +
         "<td><span class=\"sw\" style=\"background:" + color + "\"></span>" +
         XmlEscape((*l)["source_model"].get<std::string>()) + "</td>" +
         Cell(std::to_string((*l)["source_layer"].get<int>()), "num") +
         Cell(TransformBadge((*l)["transforms"], !cast.empty())) +
         Cell(SameAsText(*l)) + "</tr>\n";
  }
  t += "</table>\n";
  std::string intro = XmlEscape(show.value("architecture", std::string(""))) + ", variant <code>" +
                      XmlEscape(show.value("node", std::string("")).substr(0, 12)) + "</code>, " +
                      std::to_string(layers.size()) + " layers. Lines join each output layer to the source "
                      "layer it came from; hatched marks number weight sets used more than once.";
  return Page("strata provenance: " + show.value("name", std::string("")), intro, ProvenanceSvg(show), t);
}

namespace {

struct OpStyle {
  const char* fill;
  const char* stroke;
};
OpStyle StyleOf(const std::string& op) {
  if (op == "changed") return {"#fdd0a2", "#e6550d"};
  if (op == "removed") return {"#fcbba1", "#cb181d"};
  if (op == "inserted") return {"#c7e9c0", "#238b45"};
  return {"#eeeeee", "#888888"};
}

// The worst numbers over a changed row's tensors, for tooltips and tables:
// "3/9 tensors differ, rel L2 ≤ 0.5, cos ≥ 0.87".
std::string ChangeSummary(const Json& row) {
  if (!row.contains("tensors")) return "";
  int differ = 0, total = 0;
  double worst_rel = 0, worst_cos = 1;
  bool numbers = false;
  for (const Json& t : row["tensors"]) {
    ++total;
    if (t["op"] == "identical") continue;
    ++differ;
    if (t.contains("rel_l2") && t["rel_l2"].is_number()) worst_rel = std::max(worst_rel, t["rel_l2"].get<double>()), numbers = true;
    if (t.contains("cosine") && t["cosine"].is_number()) worst_cos = std::min(worst_cos, t["cosine"].get<double>());
  }
  std::string s = std::to_string(differ) + "/" + std::to_string(total) + " tensors differ";
  if (numbers) s += ", rel L2 ≤ " + Fmt("%.3g", worst_rel) + ", cos ≥ " + Fmt("%.3g", worst_cos);
  return s;
}

struct DiffLayout {
  static constexpr double kMargin = 24, kBoxW = 250, kGap = 340;
  double row_a = 0, row_b = 0, top = 0, height = 0;
  double AX() const { return kMargin; }
  double BX() const { return kMargin + kBoxW + kGap; }
  double Width() const { return BX() + kBoxW + kMargin; }
};

double DiffHeader(Svg& svg, const Json& diff, const std::vector<ModelInfo>& models) {
  const Json& a = diff["a"];
  const Json& b = diff["b"];
  const Json& c = diff["counts"];
  svg.Text(24, 32, "diff " + a["name"].get<std::string>() + " ↔ " + b["name"].get<std::string>(), 20,
           "font-weight=\"bold\"");
  const Json& by = diff["bytes"];
  svg.Text(24, 54,
           std::to_string(c["kept"].get<int>()) + " kept, " + std::to_string(c["changed"].get<int>()) + " changed, " +
               std::to_string(c["inserted"].get<int>()) + " inserted, " + std::to_string(c["removed"].get<int>()) +
               " removed · shared " + Bytes(by["shared"]) + " of " + Bytes(by["a_distinct"]) + " (A) and " +
               Bytes(by["b_distinct"]) + " (B) distinct bytes",
           13, "fill=\"#444\"");
  double x = 24, y = 80;
  for (const char* op : {"kept", "changed", "removed", "inserted"}) {
    OpStyle st = StyleOf(op);
    svg.Rect(x, y - 11, 14, 14, st.fill, st.stroke);
    svg.Text(x + 20, y, op, 12);
    x += 100;
  }
  svg.Line(x, y - 4, x + 36, y - 4, "#555", 1.6, "legend");
  svg.Text(x + 42, y, "same weights, aligned", 12);
  svg.Line(x + 200, y - 4, x + 236, y - 4, "#e6550d", 1.4, "legend", "stroke-dasharray=\"6 3\"");
  svg.Text(x + 242, y, "changed pair", 12);
  svg.Line(x + 340, y - 4, x + 376, y - 4, "#999", 1, "legend", "stroke-dasharray=\"1 3\"");
  svg.Text(x + 382, y, "same weights elsewhere", 12);
  y += 22;
  x = 24;
  for (const ModelInfo& m : models) {
    svg.Rect(x, y - 11, 6, 14, m.color, m.color, "class=\"legend-model\"");
    svg.Text(x + 12, y, m.id, 12);
    x += std::max(180.0, TextWidth(m.id, 12) + 36);
  }
  return y + 40;
}

// One side's boxes; `side` is "a" or "b". Returns nothing: boxes only.
void DiffColumn(Svg& svg, const DiffLayout& L, const Json& diff, const std::string& side,
                const std::vector<ModelInfo>& models) {
  const bool is_a = side == "a";
  const double x = is_a ? L.AX() : L.BX(), h = is_a ? L.row_a : L.row_b;
  const double gap = std::max(1.0, h * 0.16), bh = h - gap, font = FontFor(bh);
  const int step = LabelStep(h);
  svg.Text(x, L.top - 10, std::string(is_a ? "A: " : "B: ") + diff[side]["name"].get<std::string>() + "  (" +
                              std::to_string(diff[side]["layers"].get<int>()) + " layers)",
           13, "font-weight=\"bold\"");
  std::vector<const Json*> layers;
  for (const Json& row : diff["rows"])
    if (!row[side].is_null() && row[side].contains("transforms")) layers.push_back(&row[side]);
  const bool skip_casts = !UniformCast(layers).empty();  // a plan-wide dtype: not worth a mark per layer
  for (const Json& row : diff["rows"]) {
    if (row[side].is_null()) continue;
    const Json& s = row[side];
    const Json transforms = s.value("transforms", Json::array());
    const std::string badge = TransformBadge(transforms, skip_casts);
    bool zeroed = false;
    for (const Json& t : transforms) zeroed |= IsZeroed(t["ops"]);
    const int i = s["index"];
    const std::string op = row["op"];
    const OpStyle st = StyleOf(op);
    const ModelInfo& m = models[ModelIndex(models, s["source_model"])];
    const double y = L.top + i * h + gap / 2;
    std::string tip = std::string(is_a ? "A" : "B") + " layer " + std::to_string(i) + " (" + op + "): " +
                      s["layer"].get<std::string>().substr(0, 12) + " from " + m.id + " layer " +
                      std::to_string(s["source_layer"].get<int>());
    if (!badge.empty()) tip += "; " + badge;
    if (op == "changed") tip += "; " + ChangeSummary(row);
    svg.Rect(x, y, DiffLayout::kBoxW, bh, st.fill, st.stroke, "class=\"" + op + "\"", tip);
    if (!badge.empty())
      svg.Text(x + DiffLayout::kBoxW - 10, y + bh / 2 + font * 0.35, badge, font,
               std::string("text-anchor=\"end\" class=\"badge") + (zeroed ? " zero\" fill=\"" : "\" fill=\"") +
                   (zeroed ? kZeroStroke : "#1f3f66") + "\"");
    svg.Rect(is_a ? x : x + DiffLayout::kBoxW - 6, y, 6, bh, m.color, "none");
    if (i % step == 0 || i + 1 == diff[side]["layers"].get<int>())
      svg.Text(x + (is_a ? 10 : 4), y + bh / 2 + font * 0.35,
               std::to_string(i) + "  " + SplitModelId(m.id).second + " L" + std::to_string(s["source_layer"].get<int>()),
               font);
  }
}

}  // namespace

std::string DiffSvg(const Json& diff) {
  std::vector<const Json*> sides;
  for (const Json& row : diff.at("rows"))
    for (const char* side : {"a", "b"})
      if (!row[side].is_null()) sides.push_back(&row[side]);
  const std::vector<ModelInfo> models = ModelsOf(sides, kDiffPalette);
  Svg svg;
  DiffLayout L;
  const int na = diff["a"]["layers"], nb = diff["b"]["layers"];
  const double h = RowHeight(static_cast<size_t>(std::max(na, nb)));
  L.height = h * std::max(na, nb);
  L.row_a = na ? L.height / na : h;
  L.row_b = nb ? L.height / nb : h;
  L.top = DiffHeader(svg, diff, models);
  auto ya = [&](int i) { return L.top + (i + 0.5) * L.row_a; };
  auto yb = [&](int i) { return L.top + (i + 0.5) * L.row_b; };
  const double x1 = L.AX() + DiffLayout::kBoxW, x2 = L.BX();

  // Same weights not aligned with each other (a DUS repeat, a moved layer).
  std::map<std::string, std::vector<int>> in_b;
  std::set<std::pair<int, int>> aligned;
  for (const Json& row : diff["rows"]) {
    if (!row["b"].is_null()) in_b[row["b"]["layer"].get<std::string>()].push_back(row["b"]["index"].get<int>());
    if (row["op"] == "kept") aligned.insert({row["a"]["index"].get<int>(), row["b"]["index"].get<int>()});
  }
  for (const Json& row : diff["rows"]) {
    if (row["a"].is_null()) continue;
    const int i = row["a"]["index"];
    for (int j : in_b[row["a"]["layer"].get<std::string>()])
      if (!aligned.count({i, j})) svg.Line(x1, ya(i), x2, yb(j), "#999999", 1, "same", "stroke-dasharray=\"1 3\"");
  }
  for (const Json& row : diff["rows"]) {
    if (row["op"] == "kept")
      svg.Line(x1, ya(row["a"]["index"]), x2, yb(row["b"]["index"]), "#555555", 1.6, "kept");
    else if (row["op"] == "changed")
      svg.Line(x1, ya(row["a"]["index"]), x2, yb(row["b"]["index"]), "#e6550d", 1.4, "changed",
               "stroke-dasharray=\"6 3\"");
  }
  DiffColumn(svg, L, diff, "a", models);
  DiffColumn(svg, L, diff, "b", models);
  return svg.Finish(L.Width(), L.top + L.height + 30);
}

namespace {

std::string SideCells(const Json& s) {
  if (s.is_null()) return "<td></td><td></td><td></td>";
  return Cell(std::to_string(s["index"].get<int>()), "num") + "<td><code>" +
         XmlEscape(s["layer"].get<std::string>().substr(0, 12)) + "</code></td>" +
         Cell(s["source_model"].get<std::string>() + " L" + std::to_string(s["source_layer"].get<int>()));
}

std::string NumberCell(const Json& t, const char* key) {
  if (!t.contains(key)) return "<td></td>";
  return Cell(t[key].is_number() ? Fmt("%.4g", t[key].get<double>()) : "n/a", "num");
}

std::string JsonText(const Json& j, const char* key) { return j.contains(key) ? j[key].dump() : "(absent)"; }

}  // namespace

std::string DiffHtml(const Json& diff) {
  std::string t = "<h2>Layers</h2>\n<table>\n" +
                  HeaderRow({"op", "A", "A hash", "A source", "B", "B hash", "B source", "shared bytes", "tensors"});
  for (const Json& row : diff["rows"]) {
    const std::string op = row["op"];
    t += "<tr class=\"" + op + "\">" + Cell(op) + SideCells(row["a"]) + SideCells(row["b"]) +
         Cell(Bytes(row["shared_bytes"]), "num") + Cell(ChangeSummary(row)) + "</tr>\n";
  }
  t += "</table>\n<h2>Embeddings, final norm, lm_head</h2>\n<table>\n" +
       HeaderRow({"tensor", "result", "max |Δ|", "rel L2", "cosine"});
  for (const Json& x : diff["tensors"])
    t += "<tr>" + Cell(x["name"]) + Cell(x["op"]) + NumberCell(x, "max_abs_delta") + NumberCell(x, "rel_l2") +
         NumberCell(x, "cosine") + "</tr>\n";
  t += "</table>\n<h2>config.json</h2>\n";
  if (diff["config"].empty()) {
    t += "<p>identical</p>\n";
  } else {
    t += "<table>\n" + HeaderRow({"key", "A", "B"});
    for (const Json& c : diff["config"])
      t += "<tr>" + Cell(c["key"]) + Cell(JsonText(c, "a")) + Cell(JsonText(c, "b")) + "</tr>\n";
    t += "</table>\n";
  }
  const std::string intro = "A: " + XmlEscape(diff["a"]["name"].get<std::string>()) + " (" +
                            XmlEscape(diff["a"]["architecture"].get<std::string>()) + "), B: " +
                            XmlEscape(diff["b"]["name"].get<std::string>()) + " (" +
                            XmlEscape(diff["b"]["architecture"].get<std::string>()) +
                            "). Layers are aligned by layer hash (longest common subsequence); a removed and an "
                            "inserted layer at the same place are shown as changed.";
  return Page("strata diff: " + diff["a"]["name"].get<std::string>() + " vs " + diff["b"]["name"].get<std::string>(),
              intro, DiffSvg(diff), t);
}

}  // namespace strata
