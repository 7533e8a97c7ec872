// `strata run`: a compiled variant (or an HF directory, compiled on the fly)
// executed from the store.
#include <tbb/global_control.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "strata/compiler/compile.h"
#include "strata/formats/error.h"
#include "strata/formats/npy.h"
#include "strata/runtime/backend.h"
#include "strata/runtime/cpu_kernels.h"
#include "strata/runtime/sampler.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

namespace {

std::vector<int> ParseTokens(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw 0;
      out.push_back(static_cast<int>(v));
    } catch (...) {
      throw UsageError("--tokens wants comma-separated non-negative integers, got \"" + item + "\"");
    }
  }
  if (out.empty()) throw UsageError("--tokens is empty");
  return out;
}

// An HF directory becomes a variant of its own in the store ("models:" plan
// over the directory), named after it; compiling again is a no-op.
Hash VariantFor(Store& store, const std::string& name_or_dir, bool verbose) {
  if (!fs::is_directory(name_or_dir) || !fs::exists(fs::path(name_or_dir) / "config.json"))
    return store.ResolveRef(name_or_dir);
  std::string dir = fs::absolute(name_or_dir).lexically_normal().string();
  std::string text = "# compiled by `strata run " + name_or_dir + "`\nmodels:\n  - model: \"" + dir +
                     "\"\nmerge_method: passthrough\n";
  std::string name = "dir-" + fs::path(dir).filename().string() + "-" + HashBytes(dir).Hex().substr(0, 8);
  for (char& c : name)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  CompileOptions opts;
  opts.name = name;
  opts.force = true;  // the directory's content may have changed: the name follows it
  CompileStats s = Compile(store, ParsePlan(text, dir), opts);
  if (verbose) fprintf(stderr, "compiled %s as variant %s (read %llu bytes)\n", dir.c_str(), name.c_str(),
                       static_cast<unsigned long long>(s.bytes_read));
  return s.variant;
}

void WriteFileOrThrow(const std::string& path, const std::string& bytes) {
  fs::path p = fs::absolute(path);
  WriteFileAtomically(p.string(), bytes, p.parent_path().string());
}

}  // namespace

int RunRun(const std::vector<std::string>& args) {
  std::string name, device = "cpu", tokens_s, logits_out, store_dir;
  int n = 32, threads = 0;
  bool all_logits = false, no_elide = false, verbose = false, json = false;
  SamplerOptions so;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant name, or a path to an HF model directory")(
      "device", po::value(&device), "cpu (default) | cuda")(
      "tokens", po::value(&tokens_s)->required(), "prompt token ids, comma-separated (e.g. 1,15043,3186)")(
      ",n", po::value(&n), "new tokens to generate (default 32; stops early at EOS)")(
      "logits-out", po::value(&logits_out), "write the prompt's logits as float32 .npy (last position)")(
      "all-logits", po::bool_switch(&all_logits), "with --logits-out: every prompt position, shape (tokens, vocab)")(
      "threads", po::value(&threads), "worker threads (default: all cores)")(
      "temperature", po::value(&so.temperature), "0 (default) is greedy")(
      "top-k", po::value(&so.top_k), "keep the k most likely tokens (0: off)")(
      "top-p", po::value(&so.top_p), "keep the smallest set with this probability mass (1: off)")(
      "repetition-penalty", po::value(&so.repetition_penalty), "HF's repetition penalty (1: off)")(
      "seed", po::value(&so.seed), "random seed for sampling (default 0)")(
      "no-elide", po::bool_switch(&no_elide), "compute layers whose o_proj and down_proj are zero anyway")(
      "verbose,v", po::bool_switch(&verbose), "report load, elided layers and speed on stderr")(
      "json", po::bool_switch(&json), "print tokens and timings as JSON");
  d.add_options()("store", po::value(&store_dir), "store directory (default: $STRATA_STORE, else ~/.cache/strata)");
  po::positional_options_description pos;
  pos.add("name", 1);
  d.add_options()("help,h", "show this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: strata run NAME --tokens 1,15043,3186 [-n 32] [--device cpu]\n\n"
                 "Runs a compiled variant straight from the store (weights used in place through mmap; a\n"
                 "layer repeated at several depths exists once in memory). NAME may also be an HF model\n"
                 "directory, compiled on the fly into the store. Prints the generated token ids.\n\n"
              << d << "\n";
    return 0;
  }
  po::notify(vm);
  if (device == "cuda")
    throw Error("the CUDA backend is not available in this build yet; use --device cpu");
  if (device != "cpu") throw UsageError("--device must be cpu or cuda");
  if (n < 0) throw UsageError("-n must be >= 0");
  if (all_logits && logits_out.empty()) throw UsageError("--all-logits needs --logits-out FILE");
  std::vector<int> prompt = ParseTokens(tokens_s);
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);

  Store store(Store::DefaultRoot(store_dir), /*create=*/fs::is_directory(name));
  GenerateRequest req{name, prompt, n, so, !no_elide, logits_out, all_logits, verbose};
  GenerateResult r = Generate(store, req);
  if (json) {
    std::cout << Json{{"tokens", r.tokens},
                      {"load_s", r.load_s},
                      {"prefill_tokens_per_s", r.prefill_tps},
                      {"decode_tokens_per_s", r.decode_tps},
                      {"elided_layers", r.elided},
                      {"layers", r.layers},
                      {"distinct_layers", r.distinct_layers},
                      {"weight_bytes_mapped", r.mapped},
                      {"weight_bytes_materialized", r.materialized}}
                     .dump()
              << "\n";
    return 0;
  }
  for (size_t i = 0; i < r.tokens.size(); ++i) printf("%s%d", i ? "," : "", r.tokens[i]);
  printf("\n");
  if (verbose) {
    fprintf(stderr, "model: %d layers over %d distinct weight sets, %d elided%s; %s kernels\n", r.layers,
            r.distinct_layers, r.elided, no_elide ? " (--no-elide)" : "", CpuHasAvx2() ? "AVX2/FMA" : "portable");
    fprintf(stderr, "weights: %llu bytes mapped in place, %llu materialized\n",
            static_cast<unsigned long long>(r.mapped), static_cast<unsigned long long>(r.materialized));
    fprintf(stderr, "load %.3f s, prefill %zu tokens %.1f tok/s, decode %zu tokens %.1f tok/s\n", r.load_s,
            prompt.size(), r.prefill_tps, r.tokens.size(), r.decode_tps);
  }
  return 0;
}

GenerateResult Generate(Store& store, const GenerateRequest& req) {
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  Hash variant = VariantFor(store, req.name, req.verbose);
  WeightStore weights(store);
  Model model = AssembleModel(store, weights, variant);
  BackendOptions bo;
  bo.max_context = static_cast<int64_t>(req.prompt.size()) + req.n;
  bo.elide = req.elide;
  std::unique_ptr<Backend> backend = MakeCpuBackend(model, bo);
  auto t1 = Clock::now();

  std::vector<float> logits(model.config.vocab);
  std::vector<float> all;
  backend->Forward(req.prompt, logits.data(), req.all_logits ? &all : nullptr);
  auto t2 = Clock::now();
  if (!req.logits_out.empty()) {
    if (req.all_logits)
      WriteFileOrThrow(req.logits_out, NpyFloat32(all, {static_cast<int64_t>(req.prompt.size()), model.config.vocab}));
    else
      WriteFileOrThrow(req.logits_out, NpyFloat32(logits, {model.config.vocab}));
  }
  Sampler sampler(req.sampler);
  std::vector<int> seen = req.prompt, out;
  for (int i = 0; i < req.n; ++i) {
    int tok = sampler.Next(logits, seen);
    out.push_back(tok);
    seen.push_back(tok);
    const auto& eos = model.config.eos_token_ids;
    if (std::find(eos.begin(), eos.end(), tok) != eos.end()) break;
    if (i + 1 < req.n) backend->Forward({tok}, logits.data(), nullptr);
  }
  auto t3 = Clock::now();
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  GenerateResult r;
  r.tokens = out;
  r.load_s = secs(t0, t1);
  r.prefill_tps = req.prompt.size() / std::max(1e-9, secs(t1, t2));
  // Decode speed counts the forward passes after the prompt's (one per token but the last).
  r.decode_tps = out.size() > 1 ? (out.size() - 1) / std::max(1e-9, secs(t2, t3)) : 0;
  r.elided = backend->elided_layers();
  r.layers = static_cast<int>(model.layers.size());
  r.distinct_layers = static_cast<int>(model.weight_sets.size());
  r.mapped = weights.mapped_bytes();
  r.materialized = weights.materialized_bytes();
  return r;
}

}  // namespace strata
