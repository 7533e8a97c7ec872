// strata quantize: parses options, runs QuantizeVariant, prints the result.
#include <cstdio>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/compiler/quantize.h"
#include "strata/formats/error.h"

namespace po = boost::program_options;

namespace strata {

int RunQuantize(const std::vector<std::string>& args) {
  std::string name, type = "q4_k_m", layers = "source", store_dir;
  QuantizeOptions opts;
  bool quiet = false, json = false;
  po::options_description d("options");
  d.add_options()("variant", po::value(&name)->required(), "variant to quantize")(
      "type,t", po::value(&type), ("quantization: " + QuantMixNames() + " (default q4_k_m)").c_str())(
      "name,n", po::value(&opts.name), "name of the result (default: VARIANT-TYPE, e.g. base-q4_k_m)")(
      "layers", po::value(&layers),
      "which layer index the mix's rules see: source (default; each layer's index in its source model, so a "
      "stacked layer is quantized as in its base and shares its blobs) or output (its position in this "
      "variant, as llama-quantize sees a GGUF of it)")(
      "force", po::bool_switch(&opts.force), "replace a variant of the same name with different content")(
      "recompute", po::bool_switch(&opts.recompute), "quantize again what the quantization cache knows")(
      "quiet,q", po::bool_switch(&quiet), "no progress bar")("json", po::bool_switch(&json), "print the result as JSON");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("variant", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata quantize VARIANT [--type q4_k_m] [--name NEW]",
                 "Stores a quantized twin of a variant: every 2-D weight in a GGML block type, chosen per\n"
                 "tensor as llama-quantize chooses it for the same type (Q4_K_M: Q6_K for the output and\n"
                 "some attn_v/ffn_down, Q4_K elsewhere), with llama.cpp's reference quantizers, so the\n"
                 "bytes equal llama-quantize's. Norms stay as they are. Each distinct tensor is quantized\n"
                 "once per type and remembered: quantizing a DUS of a quantized base writes nothing new.\n"
                 "Runs on the CPU backend (strata run/serve/eval/bench). `strata export` writes it\n"
                 "dequantized as safetensors, or as its blocks with --format gguf."))
    return 0;
  const auto mix = ParseQuantMix(type);
  if (!mix) throw UsageError("unknown --type \"" + type + "\"; choose one of " + QuantMixNames());
  if (layers != "source" && layers != "output")
    throw UsageError("--layers must be source or output, not \"" + layers + "\"");
  opts.mix = *mix;
  opts.by_output_layer = layers == "output";
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  ProgressBar bar("quantize", ShowProgress(quiet || json), "weights");
  opts.on_start = [&](uint64_t total) { bar.Start(total); };
  opts.elements_done = bar.counter();
  const QuantizeStats s = QuantizeVariant(store, name, opts);
  bar.Finish();
  if (json) {
    PrintJson(Json{{"name", s.name}, {"variant", s.variant.Hex()}, {"store", store.root()},
                   {"type", std::string(QuantMixName(opts.mix))}, {"layers", layers}, {"results", s.tensors},
                   {"quantized", s.quantized}, {"cached", s.cached}, {"kept", s.kept},
                   {"blobs_written", s.blobs_written}, {"blob_bytes_written", s.blob_bytes_written},
                   {"bytes_before", s.bytes_before}, {"bytes_after", s.bytes_after}, {"types", s.types},
                   {"unchanged", s.ref_unchanged}});
    return 0;
  }
  printf("%s %s: %s of distinct weights, from %s in %s\n", s.ref_unchanged ? "unchanged" : "quantized",
         s.name.c_str(), HumanBytes(s.bytes_after).c_str(), HumanBytes(s.bytes_before).c_str(), name.c_str());
  std::string types;
  for (const auto& [t, n] : s.types) types += (types.empty() ? "" : ", ") + std::to_string(n) + " " + t;
  printf("  tensors: %s\n", types.c_str());
  printf("  %llu quantized now, %llu from the quantization cache; stored %llu new blobs (%s)\n",
         static_cast<unsigned long long>(s.quantized), static_cast<unsigned long long>(s.cached),
         static_cast<unsigned long long>(s.blobs_written), HumanBytes(s.blob_bytes_written).c_str());
  return 0;
}

}  // namespace strata
