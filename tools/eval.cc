// `strata eval NAME... --file F`: perplexity of each variant on a text, as
// llama-perplexity computes it (runtime/include/strata/runtime/eval.h), as one
// table, --json, or an --svg chart. docs/eval.md.
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/variant.h"
#include "strata/formats/variant_check.h"
#include "strata/runtime/eval.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

namespace {

struct Row {
  std::string name;
  EngineInfo info;
  std::string tokenizer;
  PerplexityResult r;
};

// "F is not valid UTF-8 at byte N (line L, column C)", or "".
std::string Utf8Problem(const std::string& path, const std::string& text) {
  const int64_t at = FirstInvalidUtf8(text);
  if (at < 0) return "";
  const auto before = text.begin() + at;
  const int64_t line = 1 + std::count(text.begin(), before, '\n');
  const size_t nl = text.rfind('\n', static_cast<size_t>(at));
  const int64_t col = at - (nl == std::string::npos ? -1 : static_cast<int64_t>(nl));
  return path + " is not valid UTF-8: byte " + std::to_string(at) + " (line " + std::to_string(line) + ", column " +
         std::to_string(col) + ") starts no valid character; eval scores text: convert the file to UTF-8 (iconv)";
}

std::string Fixed(double v, int prec) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

std::string XmlEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

// One horizontal bar per variant: PPL with its +/- whisker, bits per byte at the right.
std::string Chart(const std::vector<Row>& rows, const std::string& file, int ctx) {
  const double left = 210, width = 420, bar_h = 22, gap = 10, top = 78;
  double mx = 0;
  for (const Row& w : rows) mx = std::max(mx, w.r.ppl() + w.r.ppl_error());
  // A round axis end: 1, 2 or 5 times a power of ten.
  double step = std::pow(10.0, std::floor(std::log10(std::max(mx, 1e-9))));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * step >= mx) {
      step *= m;
      break;
    }
  const double axis = step, H = top + rows.size() * (bar_h + gap) + 50, W = left + width + 170;
  auto X = [&](double v) { return left + width * v / axis; };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Fixed(W, 0) + "\" height=\"" + Fixed(H, 0) +
                  "\" viewBox=\"0 0 " + Fixed(W, 0) + " " + Fixed(H, 0) +
                  "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
                  "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  s += "<text x=\"20\" y=\"30\" font-size=\"18\" font-weight=\"bold\">perplexity on " +
       XmlEscape(fs::path(file).filename().string()) + "</text>\n";
  s += "<text x=\"20\" y=\"52\" font-size=\"12\" fill=\"#444\">ctx " + std::to_string(ctx) +
       ", second half of each chunk scored (llama-perplexity's method); lower is better; whiskers: +/- one "
       "standard error</text>\n";
  for (int k = 0; k <= 5; ++k) {
    const double v = axis * k / 5, x = X(v);
    s += "<line x1=\"" + Fixed(x, 1) + "\" y1=\"" + Fixed(top - 6, 1) + "\" x2=\"" + Fixed(x, 1) + "\" y2=\"" +
         Fixed(H - 40, 1) + "\" stroke=\"#e4e4e4\"/>\n";
    s += "<text x=\"" + Fixed(x, 1) + "\" y=\"" + Fixed(H - 24, 1) + "\" font-size=\"11\" text-anchor=\"middle\" "
         "fill=\"#666\">" + Fixed(v, v < 10 ? 1 : 0) + "</text>\n";
  }
  s += "<text x=\"" + Fixed(left + width + 20, 1) + "\" y=\"" + Fixed(top - 10, 1) +
       "\" font-size=\"11\" fill=\"#666\">bits/byte</text>\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& w = rows[i];
    const double y = top + i * (bar_h + gap), p = w.r.ppl(), e = w.r.ppl_error();
    const char* fill = i == 0 ? "#2b5c8a" : "#5aa59b";
    s += "<text x=\"" + Fixed(left - 10, 1) + "\" y=\"" + Fixed(y + bar_h * 0.7, 1) +
         "\" font-size=\"13\" text-anchor=\"end\">" + XmlEscape(w.name) + "</text>\n";
    s += "<rect x=\"" + Fixed(left, 1) + "\" y=\"" + Fixed(y, 1) + "\" width=\"" + Fixed(X(p) - left, 1) +
         "\" height=\"" + Fixed(bar_h, 1) + "\" fill=\"" + fill + "\"/>\n";
    s += "<line x1=\"" + Fixed(X(p - e), 1) + "\" y1=\"" + Fixed(y + bar_h / 2, 1) + "\" x2=\"" + Fixed(X(p + e), 1) +
         "\" y2=\"" + Fixed(y + bar_h / 2, 1) + "\" stroke=\"#222\" stroke-width=\"1.5\"/>\n";
    std::string label = Fixed(p, 3);
    if (i > 0)
      label += w.r.nll_sum == rows[0].r.nll_sum ? "  (same)"
                                                : "  (" + std::string(p >= rows[0].r.ppl() ? "+" : "") +
                                                      Fixed(100.0 * (p / rows[0].r.ppl() - 1), 2) + "%)";
    s += "<text x=\"" + Fixed(X(p + e) + 6, 1) + "\" y=\"" + Fixed(y + bar_h * 0.7, 1) + "\" font-size=\"12\">" +
         XmlEscape(label) + "</text>\n";
    s += "<text x=\"" + Fixed(left + width + 20, 1) + "\" y=\"" + Fixed(y + bar_h * 0.7, 1) + "\" font-size=\"12\">" +
         Fixed(w.r.bits_per_byte(), 4) + "</text>\n";
  }
  s += "</svg>\n";
  return s;
}

Json RowJson(const Row& w) {
  const PerplexityResult& r = w.r;
  return Json{{"variant", w.name},
              {"layers", w.info.layers},
              {"distinct_layers", w.info.distinct_layers},
              {"elided_layers", w.info.elided_layers},
              {"tokenizer", w.tokenizer},
              {"ctx", r.ctx},
              {"text_tokens", r.text_tokens},
              {"chunks", r.chunks},
              {"scored_tokens", r.scored_tokens},
              {"scored_bytes", r.scored_bytes},
              {"ppl", r.ppl()},
              {"ppl_error", r.ppl_error()},
              {"nll_sum", r.nll_sum},
              {"nll_per_token", r.nll_per_token()},
              {"nll_per_byte", r.nll_per_byte()},
              {"bits_per_byte", r.bits_per_byte()},
              {"load_s", w.info.load_s},
              {"seconds", r.seconds},
              {"scored_tokens_per_s", r.scored_tokens_per_s()},
              {"tokens_per_s", r.tokens_per_s()}};
}

void PrintTable(const std::vector<Row>& rows, const std::string& file, uint64_t bytes, int ctx,
                const std::string& device) {
  printf("perplexity of %s (%s), ctx %d, second half of each chunk scored as llama-perplexity does; %s\n\n",
         file.c_str(), HumanBytes(bytes).c_str(), ctx, device.c_str());
  size_t nw = 7;
  for (const Row& w : rows) nw = std::max(nw, w.name.size());
  printf("%-*s  %6s  %-22s  %9s  %9s  %9s  %6s  %7s  %9s\n", static_cast<int>(nw), "variant", "layers",
         "PPL", "vs first", "NLL/tok", "bits/byte", "chunks", "scored", "tok/s");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& w = rows[i];
    const PerplexityResult& r = w.r;
    std::string ppl = Fixed(r.ppl(), 4) + " +/- " + Fixed(r.ppl_error(), 4);
    std::string vs = i == 0 ? "-" : (r.ppl() >= rows[0].r.ppl() ? "+" : "") +
                                        Fixed(100.0 * (r.ppl() / rows[0].r.ppl() - 1), 2) + "%";
    if (i > 0 && r.nll_sum == rows[0].r.nll_sum && r.scored_tokens == rows[0].r.scored_tokens) vs = "same";
    printf("%-*s  %6d  %-22s  %9s  %9.5f  %9.5f  %6lld  %7lld  %9.0f\n", static_cast<int>(nw), w.name.c_str(),
           w.info.layers, ppl.c_str(), vs.c_str(), r.nll_per_token(), r.bits_per_byte(),
           static_cast<long long>(r.chunks), static_cast<long long>(r.scored_tokens), r.scored_tokens_per_s());
  }
  printf("\nPPL is exp(mean NLL per scored token), +/- one standard error; bits/byte: the scored tokens' NLL over "
         "their bytes; \"same\": the same NLL to the last bit.\n");
}

}  // namespace

int RunEval(const std::vector<std::string>& args) {
  std::vector<std::string> names;
  std::string file, svg, store_dir, device = "cpu";
  int threads = 0;
  bool json = false, quiet = false, no_verify_load = false;
  PerplexityOptions po_;
  po::options_description d("options");
  d.add_options()("name", po::value(&names)->multitoken(), "variants (or HF model directories) to score, in order")(
      "file,f", po::value(&file)->required(), "the text to score (UTF-8)")(
      "ctx,c", po::value(&po_.ctx), "tokens per chunk (default 512, llama-perplexity's); at most the model's context")(
      "chunks", po::value(&po_.chunks), "score at most this many chunks (default: all)")(
      "parallel", po::value(&po_.parallel), "chunks run together in one batched forward (default 4)")(
      "device", po::value(&device), "cpu (default) | cuda")(
      "threads", po::value(&threads), "worker threads (default: all cores)")(
      "no-verify-load", po::bool_switch(&no_verify_load), "do not hash the weights' blobs as they load")(
      "json", po::bool_switch(&json), "print the results as JSON")(
      "svg", po::value(&svg), "also draw the table as a bar chart into this SVG file")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", -1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata eval NAME... --file F [--ctx 512] [--json] [--svg FILE]",
                 "Perplexity of each variant on the text F, computed as llama.cpp's llama-perplexity computes\n"
                 "it, so the figures compare with llama.cpp's: F is tokenized once with BOS, cut into chunks\n"
                 "of --ctx tokens (the tail that fills no chunk is dropped), each chunk starts with BOS and\n"
                 "runs alone, and its second half is scored (every token after position ctx/2). Also the\n"
                 "mean NLL per byte of the scored text (bits/byte), which compares across tokenizers.\n"
                 "Several variants give one table; the first is the one the others are compared with.\n"
                 "F needs at least 2 x ctx tokens."))
    return 0;
  if (names.empty()) throw UsageError("name at least one variant to score");
  if (po_.parallel < 1) throw UsageError("--parallel must be at least 1");
  if (po_.chunks < 0) throw UsageError("--chunks must be >= 0");
  if (po_.ctx < 4) throw UsageError("--ctx must be at least 4");
  CheckThreads(threads);
  CheckDevice(device);
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);

  const std::string text = ReadFile(file);
  if (text.empty()) throw Error(file + " is empty: there is no text to score");
  if (std::string p = Utf8Problem(file, text); !p.empty()) throw Error(p);

  // Everything that can be refused is refused before the first forward pass.
  Store store(Store::DefaultRoot(store_dir), /*create=*/std::any_of(names.begin(), names.end(), [](auto& n) {
                return fs::is_directory(n);
              }));
  struct Job {
    std::string name;
    Hash variant;
    VariantTokenizer tok;
    std::vector<int> tokens;
  };
  std::vector<Job> jobs;
  for (const std::string& n : names) {
    const Hash v = VariantFor(store, n, false);
    std::optional<VariantTokenizer> t = LoadVariantTokenizer(store, v);
    if (!t) throw Error("variant \"" + n + "\" has no tokenizer (neither tokenizer.json nor a GGUF vocabulary): eval "
                        "needs one to read the text");
    std::vector<int> toks = PerplexityTokens(t->tokenizer, text);
    const ModelConfig cfg = LoadVariantConfig(store, LoadVariant(store, v));
    if (std::string p = PerplexityProblem(static_cast<int64_t>(toks.size()), po_.ctx, cfg.max_position_embeddings);
        !p.empty())
      throw Error(n + ": " + file + ": " + p);
    jobs.push_back({n, v, std::move(*t), std::move(toks)});
  }

  EngineOptions eo;
  eo.device = device;
  eo.verify_load = !no_verify_load;
  eo = PerplexityEngineOptions(eo, po_);
  auto pool = std::make_shared<WeightPool>(store, device, eo.verify_load);
  std::vector<Row> rows;
  std::string device_name;
  for (Job& j : jobs) {
    std::unique_ptr<Engine> engine = Engine::Open(store, j.variant, eo, pool);
    Row w;
    w.name = j.name;
    w.info = engine->info();
    device_name = w.info.device_name;
    ProgressBar bar(j.name, ShowProgress(quiet || json), "chunks");
    PerplexityOptions o = po_;
    o.on_progress = [&](int64_t done, int64_t) { bar.counter()->store(static_cast<uint64_t>(done)); };
    bar.Start(static_cast<uint64_t>(PerplexityChunks(static_cast<int64_t>(j.tokens.size()), po_)));
    w.tokenizer = j.tok.tokenizer.description();
    w.r = Perplexity(*engine, j.tok.tokenizer, j.tokens, o);
    bar.Finish();
    rows.push_back(std::move(w));
  }

  if (!svg.empty()) {
    fs::path p = fs::absolute(svg);
    WriteFileAtomically(p.string(), Chart(rows, file, po_.ctx), p.parent_path().string());
    if (!json) fprintf(stderr, "wrote %s\n", svg.c_str());
  }
  if (json) {
    Json out = Json::array();
    for (const Row& w : rows) out.push_back(RowJson(w));
    PrintJson(Json{{"file", file}, {"bytes", text.size()}, {"ctx", po_.ctx}, {"device", device_name},
                   {"results", out}});
    return 0;
  }
  PrintTable(rows, file, text.size(), po_.ctx, device_name);
  return 0;
}

}  // namespace strata
