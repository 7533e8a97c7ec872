// compile, export, synth, ls, show, du.
#include "cli.h"
#include "commands.h"

#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "progress.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/export.h"
#include "strata/compiler/export_gguf.h"
#include "strata/formats/arch.h"
#include "strata/compiler/inspect.h"
#include "strata/compiler/synth.h"
#include "strata/formats/error.h"
#include "strata/formats/gguf.h"

namespace po = boost::program_options;

namespace strata {

namespace {

std::string Short(const std::string& hex) { return hex.substr(0, 12); }

}  // namespace

int RunCompile(const std::vector<std::string>& args) {
  std::string plan_path, store_dir, quantize;
  CompileOptions opts;
  bool quiet = false, json = false;
  po::options_description d("options");
  d.add_options()("plan", po::value(&plan_path)->required(), "the mergekit YAML plan, or a .gguf model file")(
      "quantize", po::value(&quantize), ("name the plan's output quantized (" + QuantMixNames() +
                                         "), each layer as in its source model (see strata quantize)").c_str())(
      "name,n", po::value(&opts.name), "variant name (default: the plan's file name without .yml)")(
      "force", po::bool_switch(&opts.force), "replace a variant of the same name with different content")(
      "random-seed", po::value(&opts.random_seed),
      "seed of dare_* and della* draws (default 0); mergekit's option, but strata's draws are its own and "
      "reproducible (docs/merge_methods.md)")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar")("json", po::bool_switch(&json),
                                                             "print the result as JSON");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("plan", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata compile PLAN|FILE.gguf [--name NAME] [--store DIR]",
                 (std::string("Compiles a mergekit plan (same YAML, same meaning as mergekit-yaml) into the store.\n") +
                 "Every distinct tensor is stored once; a variant over sources already compiled reads\n"
                 "no tensor bytes and costs kilobytes. Repeating a compile changes nothing.\n"
                 "\n"
                 "Merge methods: " + MergeMethodNames() + ".\n"
                 "A merged tensor is stored as a recipe (its inputs and parameters, a few hundred\n"
                 "bytes), computed with mergekit's arithmetic when it is exported or loaded;\n"
                 "`strata materialize NAME` stores the computed bytes once, for loads that map them.\n"
                 "\n"
                 "A GGUF file (llama or qwen2; F32, F16, BF16, Q4_0, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)\n"
                 "comes in as a variant named after the file, and a plan may name one as a model: Q/K\n"
                 "rows go back to Hugging Face's order, quantized tensors stay quantized, and tensors\n"
                 "the store already has (from a checkpoint or another GGUF) are not stored again.")
                     .c_str()))
    return 0;
  if (!quantize.empty()) {
    opts.quantize = ParseQuantMix(quantize);
    if (!opts.quantize) throw UsageError("unknown --quantize \"" + quantize + "\"; choose one of " + QuantMixNames());
  }
  Plan plan = IsGgufPath(plan_path) ? GgufImportPlan(plan_path) : LoadPlan(plan_path);
  Store store(Store::DefaultRoot(store_dir));
  ProgressBar bar("compile", ShowProgress(quiet || json));
  ProgressBar qbar("quantize", ShowProgress(quiet || json), "weights");
  opts.on_ingest_start = [&](uint64_t total) { bar.Start(total); };
  opts.bytes_done = bar.counter();
  opts.on_quantize_start = [&](uint64_t total) {
    bar.Finish();
    qbar.Start(total);
  };
  opts.elements_done = qbar.counter();
  CompileStats s = Compile(store, plan, opts);
  bar.Finish();
  qbar.Finish();
  if (json) {
    Json out{{"name", s.name}, {"variant", s.variant.Hex()}, {"store", store.root()},
             {"layers", s.layers}, {"distinct_layers", s.distinct_layers},
             {"logical_bytes", s.logical_bytes}, {"source_tensors", s.source_tensors},
             {"cached_tensors", s.cached_tensors}, {"bytes_read", s.bytes_read},
             {"blobs_written", s.blobs_written}, {"blob_bytes_written", s.blob_bytes_written},
             {"unchanged", s.ref_unchanged}, {"warnings", s.warnings}};
    if (s.quantized)
      out["quantize"] = Json{{"type", std::string(QuantMixName(*opts.quantize))}, {"quantized", s.quantized->quantized},
                             {"cached", s.quantized->cached}, {"blobs_written", s.quantized->blobs_written},
                             {"blob_bytes_written", s.quantized->blob_bytes_written},
                             {"bytes_after", s.quantized->bytes_after}, {"types", s.quantized->types}};
    PrintJson(out);
    return 0;
  }
  for (const std::string& w : s.warnings) fprintf(stderr, "warning: %s\n", w.c_str());
  printf("%s %s: %d layers (%d distinct), %s as a checkpoint\n", s.ref_unchanged ? "unchanged" : "compiled",
         s.name.c_str(), s.layers, s.distinct_layers, HumanBytes(s.logical_bytes).c_str());
  printf("  %llu source tensors (%llu known from the source cache), read %s, stored %llu new blobs (%s)\n",
         static_cast<unsigned long long>(s.source_tensors), static_cast<unsigned long long>(s.cached_tensors),
         HumanBytes(s.bytes_read).c_str(), static_cast<unsigned long long>(s.blobs_written),
         HumanBytes(s.blob_bytes_written).c_str());
  if (s.quantized)
    printf("  quantized %s: %s of distinct weights; %llu tensors quantized now, %llu from the cache, %llu new "
           "blobs (%s)\n",
           std::string(QuantMixName(*opts.quantize)).c_str(), HumanBytes(s.quantized->bytes_after).c_str(),
           static_cast<unsigned long long>(s.quantized->quantized), static_cast<unsigned long long>(s.quantized->cached),
           static_cast<unsigned long long>(s.quantized->blobs_written),
           HumanBytes(s.quantized->blob_bytes_written).c_str());
  printf("  variant %s in %s\n", Short(s.variant.Hex()).c_str(), store.root().c_str());
  return 0;
}

namespace {

// strata export NAME OUT.gguf --format gguf.
int ExportGgufFile(const std::string& name, const std::string& path, const std::string& store_dir,
                   GgufExportOptions opts, bool quiet, bool json) {
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  const uint64_t size = GgufExportSize(store, name, opts);
  if (!json && !quiet) fprintf(stderr, "writing %s: %s (GGUF holds every layer in full)\n", path.c_str(), HumanBytes(size).c_str());
  ProgressBar bar("export", ShowProgress(quiet || json));
  opts.on_start = [&](uint64_t total) { bar.Start(total); };
  opts.bytes_done = bar.counter();
  const GgufExportStats s = ExportGguf(store, name, path, opts);
  bar.Finish();
  if (json) {
    PrintJson(Json{{"name", name}, {"path", path}, {"format", "gguf"}, {"tensors", s.tensors},
                   {"bytes_written", s.file_bytes}, {"file_type", s.file_type},
                   {"tokenizer", {{"model", s.tokenizer_model}, {"pre", s.tokenizer_pre}}}});
    return 0;
  }
  printf("exported %s to %s: %zu tensors, %s, tokenizer %s (%s)\n", name.c_str(), path.c_str(), s.tensors,
         HumanBytes(s.file_bytes).c_str(), s.tokenizer_model.c_str(), s.tokenizer_pre.c_str());
  return 0;
}

}  // namespace

int RunExport(const std::vector<std::string>& args) {
  std::string name, outdir, store_dir, shard = "5B", format = "hf", type = "keep";
  ExportOptions opts;
  bool quiet = false, json = false, no_verify = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant to export")(
      "outdir", po::value(&outdir)->required(), "directory to write (must be new or empty); with --format gguf the file")(
      "format", po::value(&format), "hf (default: safetensors as mergekit writes them) or gguf (one GGUF v3 file "
                                    "for llama.cpp, Ollama, LM Studio)")(
      "type", po::value(&type), "gguf: keep (default: each tensor as stored, quantized ones as their blocks), f32, "
                                "f16 or bf16; quantize first with `strata quantize` for Q4_K_M and the rest")(
      "shard-size", po::value(&shard), "largest shard, mergekit's rule (default 5B = 5e9 bytes; 500M, 2GiB, ...)")(
      "force", po::bool_switch(&opts.force), "replace the contents of a non-empty OUTDIR")(
      "no-verify", po::bool_switch(&no_verify), "do not hash the blobs while copying them (faster; a corrupt blob "
                                                "is then copied as it is)")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar")("json", po::bool_switch(&json), "print the result as JSON");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", 1).add("outdir", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata export NAME OUTDIR [--shard-size 5B] [--force]\n"
                                   "       strata export NAME OUT.gguf --format gguf [--type keep|f32|f16|bf16]",
                 "Writes the Hugging Face checkpoint mergekit would have written for the variant's plan:\n"
                 "every tensor byte for byte, the same shards and index, config.json, tokenizer files, and\n"
                 "the plan as mergekit_config.yml. Written aside (inside OUTDIR when it is empty) and moved\n"
                 "into place when complete; every blob is hashed as it is copied, so a damaged store fails the\n"
                 "export instead of writing damaged weights. Ctrl-C removes what was written.\n\n"
                 "--format gguf writes one GGUF v3 file that llama.cpp loads: llama.cpp's keys for the\n"
                 "architecture, the variant's tokenizer (byte-level BPE or SentencePiece-style BPE), Q/K rows\n"
                 "permuted as its converter does, norms in F32, quantized tensors as their blocks. GGUF cannot\n"
                 "share tensors between layers: a DUS is written at its full logical size, which is printed\n"
                 "before anything is written."))
    return 0;
  if (format == "gguf") {
    GgufExportOptions g;
    g.type = type;
    g.force = opts.force;
    g.verify = !no_verify;
    return ExportGgufFile(name, outdir, store_dir, g, quiet, json);
  }
  if (format != "hf") throw UsageError("--format must be hf or gguf, not \"" + format + "\"");
  opts.verify = !no_verify;
  opts.shard_size = ParseByteSize(shard);
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  ProgressBar bar("export", ShowProgress(quiet || json));
  opts.on_start = [&](uint64_t total) { bar.Start(total); };
  opts.bytes_done = bar.counter();
  ExportStats s = Export(store, name, outdir, opts);
  bar.Finish();
  if (json) {
    PrintJson(Json{{"name", name}, {"outdir", outdir}, {"tensors", s.tensors}, {"shards", s.shards},
                   {"tensor_bytes", s.tensor_bytes}, {"bytes_written", s.bytes_written}});
    return 0;
  }
  printf("exported %s to %s: %zu tensors in %d shard%s, %s written\n", name.c_str(), outdir.c_str(), s.tensors,
         s.shards, s.shards == 1 ? "" : "s", HumanBytes(s.bytes_written).c_str());
  return 0;
}

int RunSynth(const std::vector<std::string>& args) {
  SynthSpec spec;
  std::string out, cache, id, dtype = "bfloat16", shard = "5GB";
  int layers = 0, hidden = 0, heads = 0, kv = 0, inter = 0, vocab = 0;
  bool quiet = false, json = false;
  po::options_description d("options");
  std::string archs;  // from the architecture table: "llama | mistral | qwen2"
  for (const ArchInfo& a : AllArchs()) archs += (archs.empty() ? "" : " | ") + std::string(a.model_type);
  const std::string arch_help = archs + " (default mistral)";
  d.add_options()("arch", po::value(&spec.arch), arch_help.c_str())(
      "preset", po::value(&spec.preset), "tiny (a few MB) | small (~100M params) | mistral-7b (14.5 GB bf16); default tiny")(
      "layers", po::value(&layers), "override num_hidden_layers")("hidden", po::value(&hidden), "override hidden_size")(
      "heads", po::value(&heads), "override num_attention_heads")("kv-heads", po::value(&kv), "override num_key_value_heads")(
      "intermediate", po::value(&inter), "override intermediate_size")("vocab", po::value(&vocab), "override vocab_size")(
      "dtype", po::value(&dtype), "bfloat16 | float16 | float32 (default bfloat16)")(
      "seed", po::value(&spec.seed), "random seed (default 0); same seed, same bytes")(
      "tie-embeddings", po::bool_switch(&spec.tie_embeddings), "no lm_head.weight (tie_word_embeddings: true)")(
      "shard-size", po::value(&shard), "HF shard limit (default 5GB)")(
      "out", po::value(&out), "write into this new directory")(
      "hf-cache", po::value(&cache), "write into this HF hub cache (with --as)")(
      "as", po::value(&id), "HF id org/name to place the model under in --hf-cache")(
      "tokenizer", po::value(&spec.tokenizer), "attach a tokenizer: llama-spm | gpt2 (built from --vocab-gguf)")(
      "vocab-gguf", po::value(&spec.vocab_gguf), "GGUF vocabulary for --tokenizer (e.g. ../shared/vocab/ggml-vocab-gpt-2.gguf)")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar")("json", po::bool_switch(&json), "print the result as JSON");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata synth [--arch mistral] [--preset tiny] (--out DIR | --hf-cache DIR --as ORG/NAME)",
                 "Writes a deterministic synthetic Hugging Face checkpoint with real shapes: weights N(0, 0.02),\n"
                 "norms near 1, every tensor distinct. With --hf-cache/--as it lands where plans find it by id."))
    return 0;
  auto set = [](std::optional<int>& o, int v) { if (v) o = v; };
  set(spec.layers, layers), set(spec.hidden, hidden), set(spec.heads, heads), set(spec.kv_heads, kv);
  set(spec.intermediate, inter), set(spec.vocab, vocab);
  auto dt = ParseTorchDType(dtype);
  if (!dt) throw UsageError("--dtype \"" + dtype + "\": use bfloat16, float16 or float32");
  spec.dtype = *dt;
  spec.shard_size = ParseByteSize(shard);
  if (out.empty() == (cache.empty() || id.empty()))
    throw UsageError("give either --out DIR, or --hf-cache DIR with --as ORG/NAME");
  ProgressBar bar("synth", ShowProgress(quiet || json));
  spec.on_start = [&](uint64_t total) { bar.Start(total); };
  spec.bytes_done = bar.counter();
  SynthResult r = out.empty() ? SynthToHfCache(spec, cache, id) : SynthToDir(spec, out);
  bar.Finish();
  if (json) {
    PrintJson(Json{{"dir", r.dir}, {"parameters", r.parameters}, {"bytes", r.bytes}, {"shards", r.shards}});
    return 0;
  }
  printf("synthesized %s %s (%llu parameters, %s in %d shard%s) at %s\n", spec.arch.c_str(), spec.preset.c_str(),
         static_cast<unsigned long long>(r.parameters), HumanBytes(r.bytes).c_str(), r.shards,
         r.shards == 1 ? "" : "s", r.dir.c_str());
  return 0;
}

int RunLs(const std::vector<std::string>& args) {
  std::string store_dir;
  bool json = false;
  po::options_description d("options");
  d.add_options()("json", po::bool_switch(&json), "print as JSON");
  AddStoreOption(d, store_dir);
  po::variables_map vm;
  if (!ParseArgs(args, d, {}, vm, "strata ls [--store DIR] [--json]", "Lists the variants in the store.")) return 0;
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  Json j = ListVariants(store);
  if (json) {
    PrintJson(j);
    return 0;
  }
  printf("%-32s %-20s %7s %9s %12s %12s\n", "NAME", "ARCHITECTURE", "LAYERS", "DISTINCT", "LOGICAL", "DISTINCT B");
  int damaged = 0;
  for (const Json& v : j["variants"]) {
    if (v.value("damaged", false)) {
      printf("%-32s %s\n", v["name"].get<std::string>().c_str(), "DAMAGED (see below)");
      fprintf(stderr, "strata ls: %s: %s\n", v["name"].get<std::string>().c_str(), v["problem"].get<std::string>().c_str());
      ++damaged;
      continue;
    }
    printf("%-32s %-20s %7d %9d %12s %12s\n", v["name"].get<std::string>().c_str(),
           v["architecture"].get<std::string>().c_str(), v["layers"].get<int>(), v["distinct_layers"].get<int>(),
           HumanBytes(v["logical_bytes"]).c_str(), HumanBytes(v["distinct_bytes"]).c_str());
  }
  if (damaged)
    fprintf(stderr, "strata ls: %d damaged variant%s: run `strata verify` to see what is broken\n", damaged,
            damaged == 1 ? "" : "s");
  return 0;
}

namespace {

std::string OpsText(const Json& ops) {
  std::string s;
  for (const Json& op : ops) {
    std::string name = op["op"];
    if (name == "blob" || name == "zeros") {
      s += name == "zeros" ? "zeros" : "";
      break;
    }
    if (!s.empty()) s += "∘";
    if (name == "scale") {
      char buf[48];
      snprintf(buf, sizeof buf, "scale(%g)", op["factor"].get<double>());
      s += buf;
    } else {
      s += "cast(" + op["dtype"].get<std::string>() + ")";
    }
  }
  return s;
}

}  // namespace

int RunShow(const std::vector<std::string>& args) {
  std::string name, store_dir, svg, html;
  bool json = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant")("json", po::bool_switch(&json), "print as JSON")(
      "svg", po::value(&svg), "also write the provenance picture as SVG to this file")(
      "html", po::value(&html), "also write a self-contained HTML page (picture, legend, table) to this file");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata show NAME [--json] [--svg FILE] [--html FILE]",
                 "Shows each output layer: its layer hash (equal hashes are one stored weight set), the\n"
                 "source model and layer it came from, and the transforms applied (scale, cast)."))
    return 0;
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  Json j = ShowVariant(store, name);
  WriteProvenanceFiles(j, svg, html);
  if (json) {
    PrintJson(j);
    return 0;
  }
  printf("%s (%s), variant %s\n", name.c_str(), j["architecture"].get<std::string>().c_str(),
         Short(j["node"]).c_str());
  printf("%s as a checkpoint, %s of distinct tensor bytes\n\n", HumanBytes(j["logical_bytes"]).c_str(),
         HumanBytes(j["distinct_bytes"]).c_str());
  printf("%5s  %-12s  %-40s %6s  %s\n", "LAYER", "HASH", "SOURCE", "FROM", "TRANSFORMS / SHARED");
  for (const Json& l : j["layers"]) {
    std::string t;
    for (const Json& tr : l["transforms"])
      t += (t.empty() ? "" : ", ") + tr["tensor"].get<std::string>() + "=" + OpsText(tr["ops"]);
    if (std::string same = SameAsText(l); !same.empty()) t += (t.empty() ? "" : "; ") + ("same as " + same);
    printf("%5d  %-12s  %-40s %6d  %s\n", l["index"].get<int>(), Short(l["layer"]).c_str(),
           l["source_model"].get<std::string>().c_str(), l["source_layer"].get<int>(), t.c_str());
  }
  for (const Json& t : j["tensors"]) {
    std::string ops = OpsText(t["ops"]);
    printf("       %-40s %s %s%s\n", t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(),
           t["shape"].dump().c_str(), ops.empty() ? "" : ("  " + ops).c_str());
  }
  return 0;
}

int RunDu(const std::vector<std::string>& args) {
  std::string store_dir;
  bool json = false;
  po::options_description d("options");
  d.add_options()("json", po::bool_switch(&json), "print as JSON");
  AddStoreOption(d, store_dir);
  po::variables_map vm;
  if (!ParseArgs(args, d, {}, vm, "strata du [--store DIR] [--json]",
                 "Logical bytes (all variants as checkpoints) against physical bytes in the store."))
    return 0;
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  Json j = StoreUsage(store);
  if (json) {
    PrintJson(j);
    return 0;
  }
  for (const Json& d : j["damaged"])
    fprintf(stderr, "strata du: %s is damaged and not counted: %s\n(run `strata verify`)\n",
            d["name"].get<std::string>().c_str(), d["problem"].get<std::string>().c_str());
  printf("%zu variants: %s as checkpoints, stored in %s (%llu blobs %s, %llu nodes %s): %.2fx\n",
         j["variants"].get<size_t>(), HumanBytes(j["logical_bytes"]).c_str(), HumanBytes(j["physical_bytes"]).c_str(),
         j["blob_count"].get<unsigned long long>(), HumanBytes(j["blob_bytes"]).c_str(),
         j["node_count"].get<unsigned long long>(), HumanBytes(j["node_bytes"]).c_str(), j["ratio"].get<double>());
  return 0;
}

}  // namespace strata
