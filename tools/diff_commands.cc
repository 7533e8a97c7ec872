// `strata diff` (a table, --json, --svg/--html pictures) and the picture
// files of `strata show --svg/--html`.
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/compiler/diff.h"
#include "strata/compiler/render.h"
#include "strata/formats/error.h"
#include "strata/formats/file.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

namespace {

void WriteText(const std::string& path, const std::string& text, const char* what) {
  fs::path p = fs::absolute(path);
  if (!fs::is_directory(p.parent_path()))
    throw Error("cannot write the " + std::string(what) + " to " + path + ": directory " +
                p.parent_path().string() + " does not exist");
  WriteFileAtomically(p.string(), text, p.parent_path().string());
  fprintf(stderr, "wrote the %s to %s\n", what, path.c_str());
}

// "Mistral-7B-v0.1 L12": the model's name without its org, and the layer.
std::string SourceText(const Json& side) {
  std::string id = side["source_model"];
  size_t slash = id.find_last_of('/');
  if (slash != std::string::npos && slash + 1 < id.size()) id = id.substr(slash + 1);
  if (id.size() > 20) id = id.substr(0, 19) + "~";
  return id + " L" + std::to_string(side["source_layer"].get<int>());
}

std::string Percent(uint64_t part, uint64_t whole) {
  char b[16];
  snprintf(b, sizeof b, "%.0f%%", whole ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0);
  return b;
}

std::string Number(const Json& t, const char* key) {
  if (!t.contains(key)) return "";
  if (!t[key].is_number()) return "n/a";
  char b[32];
  snprintf(b, sizeof b, "%.4g", t[key].get<double>());
  return b;
}

// "3/9 differ, rel L2 <= 0.5, cos >= 0.87" over a changed row's tensors.
std::string TensorSummary(const Json& row) {
  if (!row.contains("tensors")) return "";
  int differ = 0, total = 0;
  double rel = 0, cos = 1;
  bool numbers = false;
  for (const Json& t : row["tensors"]) {
    ++total;
    if (t["op"] == "identical") continue;
    ++differ;
    if (t.contains("rel_l2") && t["rel_l2"].is_number()) rel = std::max(rel, t["rel_l2"].get<double>()), numbers = true;
    if (t.contains("cosine") && t["cosine"].is_number()) cos = std::min(cos, t["cosine"].get<double>());
  }
  char b[96];
  if (numbers)
    snprintf(b, sizeof b, "%d/%d differ, rel L2 <= %.3g, cos >= %.3g", differ, total, rel, cos);
  else
    snprintf(b, sizeof b, "%d/%d differ", differ, total);
  return b;
}

// A run of rows printed as one line in --short mode.
struct Run {
  std::string op;
  const Json* first = nullptr;
  const Json* last = nullptr;
  size_t rows = 0;
  uint64_t shared = 0;
};

// True when `next` continues `run`: same op, and on each side present the
// next output index from the same model's next source layer.
bool Continues(const Run& run, const Json& next) {
  if (next["op"] != run.op) return false;
  for (const char* s : {"a", "b"}) {
    const Json& p = (*run.last)[s];
    const Json& n = next[s];
    if (p.is_null() != n.is_null()) return false;
    if (p.is_null()) continue;
    if (n["index"].get<int>() != p["index"].get<int>() + 1 || n["source_model"] != p["source_model"] ||
        n["source_layer"].get<int>() != p["source_layer"].get<int>() + 1)
      return false;
  }
  return true;
}

std::string RangeText(const Json* first, const Json* last, const char* side) {
  const Json& a = (*first)[side];
  const Json& b = (*last)[side];
  if (a.is_null()) return "";
  if (first == last) return std::to_string(a["index"].get<int>());
  return std::to_string(a["index"].get<int>()) + "-" + std::to_string(b["index"].get<int>());
}

std::string RangeSource(const Json* first, const Json* last, const char* side) {
  if ((*first)[side].is_null()) return "";
  std::string s = SourceText((*first)[side]);
  if (first != last) s += '-' + std::to_string((*last)[side]["source_layer"].get<int>());
  return s;
}

void PrintShortRows(const Json& diff) {
  std::vector<Run> runs;
  for (const Json& row : diff["rows"]) {
    if (!runs.empty() && Continues(runs.back(), row)) {
      runs.back().last = &row, ++runs.back().rows, runs.back().shared += row["shared_bytes"].get<uint64_t>();
      continue;
    }
    runs.push_back({row["op"], &row, &row, 1, row["shared_bytes"].get<uint64_t>()});
  }
  printf("%-9s %-7s %-28s %-7s %-28s %10s\n", "OP", "A", "A SOURCE", "B", "B SOURCE", "SHARED");
  for (const Run& r : runs)
    printf("%-9s %-7s %-28s %-7s %-28s %10s\n", r.op.c_str(), RangeText(r.first, r.last, "a").c_str(),
           RangeSource(r.first, r.last, "a").c_str(), RangeText(r.first, r.last, "b").c_str(),
           RangeSource(r.first, r.last, "b").c_str(), HumanBytes(r.shared).c_str());
}

void PrintSide(const Json& side) {
  if (side.is_null()) {
    printf("%4s %-8s %-26s", "", "", "");
    return;
  }
  printf("%4d %-8s %-26s", side["index"].get<int>(), side["layer"].get<std::string>().substr(0, 8).c_str(),
         SourceText(side).c_str());
}

void PrintRows(const Json& diff, bool tensors) {
  printf("%4s %-8s %-26s %-9s %4s %-8s %-26s %10s  %s\n", "A", "A HASH", "A SOURCE", "OP", "B", "B HASH",
         "B SOURCE", "SHARED", "TENSORS");
  for (const Json& row : diff["rows"]) {
    PrintSide(row["a"]);
    printf(" %-9s", row["op"].get<std::string>().c_str());
    PrintSide(row["b"]);
    printf(" %10s  %s\n", HumanBytes(row["shared_bytes"]).c_str(), TensorSummary(row).c_str());
    if (!tensors || !row.contains("tensors")) continue;
    for (const Json& t : row["tensors"])
      if (t["op"] != "identical")
        printf("       %-34s %-9s max|d| %-10s rel L2 %-10s cos %s\n", t["role"].get<std::string>().c_str(),
               t["op"].get<std::string>().c_str(), Number(t, "max_abs_delta").c_str(), Number(t, "rel_l2").c_str(),
               Number(t, "cosine").c_str());
  }
}

void PrintHeader(const Json& diff) {
  for (const char* s : {"a", "b"}) {
    const Json& v = diff[s];
    printf("%s: %s (%s, %d layers, %d distinct), variant %s\n", s[0] == 'a' ? "A" : "B",
           v["name"].get<std::string>().c_str(), v["architecture"].get<std::string>().c_str(),
           v["layers"].get<int>(), v["distinct_layers"].get<int>(), v["node"].get<std::string>().substr(0, 12).c_str());
  }
  const Json& c = diff["counts"];
  const Json& by = diff["bytes"];
  const uint64_t shared = by["shared"], a = by["a_distinct"], b = by["b_distinct"];
  printf("%d kept, %d changed, %d inserted, %d removed; they share %s: %s of A's %s, %s of B's %s distinct bytes\n\n",
         c["kept"].get<int>(), c["changed"].get<int>(), c["inserted"].get<int>(), c["removed"].get<int>(),
         HumanBytes(shared).c_str(), Percent(shared, a).c_str(), HumanBytes(a).c_str(), Percent(shared, b).c_str(),
         HumanBytes(b).c_str());
}

void PrintTensorsAndConfig(const Json& diff) {
  printf("\n%-34s %-9s %-12s %-12s %s\n", "TENSOR", "RESULT", "MAX |D|", "REL L2", "COSINE");
  for (const Json& t : diff["tensors"])
    printf("%-34s %-9s %-12s %-12s %s\n", t["name"].get<std::string>().c_str(), t["op"].get<std::string>().c_str(),
           Number(t, "max_abs_delta").c_str(), Number(t, "rel_l2").c_str(), Number(t, "cosine").c_str());
  const Json& cfg = diff["config"];
  if (cfg.empty()) {
    printf("\nconfig.json: identical\n");
    return;
  }
  printf("\nconfig.json: %zu key%s\n", cfg.size(), cfg.size() == 1 ? " differs" : "s differ");
  for (const Json& k : cfg)
    printf("  %-32s %s -> %s\n", k["key"].get<std::string>().c_str(),
           k.contains("a") ? k["a"].dump().c_str() : "(absent)", k.contains("b") ? k["b"].dump().c_str() : "(absent)");
}

}  // namespace

void WriteProvenanceFiles(const Json& show, const std::string& svg_path, const std::string& html_path) {
  if (!svg_path.empty()) WriteText(svg_path, ProvenanceSvg(show), "provenance picture (SVG)");
  if (!html_path.empty()) WriteText(html_path, ProvenanceHtml(show), "provenance page (HTML)");
}

int RunDiff(const std::vector<std::string>& args) {
  std::string a, b, store_dir, svg, html;
  bool json = false, brief = false, tensors = false, no_numbers = false, verbose = false;
  po::options_description d("options");
  d.add_options()("a", po::value(&a), "variant name, or an HF model directory")(
      "b", po::value(&b), "variant name, or an HF model directory")(
      "json", po::bool_switch(&json), "print everything as JSON")(
      "svg", po::value(&svg), "write the side-by-side picture as SVG to this file")(
      "html", po::value(&html), "write a self-contained HTML page (picture and tables) to this file")(
      "short", po::bool_switch(&brief), "one line per run of consecutive rows with the same op")(
      "tensors", po::bool_switch(&tensors), "list every changed tensor's numbers under its row")(
      "no-numbers", po::bool_switch(&no_numbers), "do not read tensor bytes (no max|d|, rel L2, cosine)")(
      "verbose,v", po::bool_switch(&verbose), "say when an HF directory is compiled");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("a", 1).add("b", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata diff A B [--json] [--svg FILE] [--html FILE] [--short] [--store DIR]",
                 "Aligns the layers of two variants by layer hash (longest common subsequence): kept (same\n"
                 "weights), changed (a different layer at the same place), inserted, removed. Shows where\n"
                 "each layer came from, the bytes both share, and for changed tensors of equal shape max|d|,\n"
                 "relative L2 (||a-b||/||a||) and cosine, read in bounded memory (every blob read is hashed:\n"
                 "a corrupt one fails the diff, naming it); then embeddings, final norm and lm_head, and\n"
                 "config.json key by key. A or B may be an HF model directory: it is compiled into the store\n"
                 "first (cheap when its files are in the source cache)."))
    return 0;
  if (!vm.count("a") || !vm.count("b"))
    throw UsageError("give two variants (names in the store, or HF model directories): strata diff A B");
  const bool dirs = fs::is_directory(a) || fs::is_directory(b);
  Store store(Store::DefaultRoot(store_dir), /*create=*/dirs);
  const Hash ha = VariantFor(store, a, verbose), hb = VariantFor(store, b, verbose);
  DiffOptions opts;
  opts.tensor_stats = !no_numbers;
  Json diff = DiffVariants(store, ha, a, hb, b, opts);
  if (!svg.empty()) WriteText(svg, DiffSvg(diff), "diff picture (SVG)");
  if (!html.empty()) WriteText(html, DiffHtml(diff), "diff page (HTML)");
  if (json) {
    std::cout << diff.dump(2) << "\n";
    return 0;
  }
  PrintHeader(diff);
  if (brief) PrintShortRows(diff);
  else PrintRows(diff, tensors);
  PrintTensorsAndConfig(diff);
  return 0;
}

}  // namespace strata
