// `strata demo`: everything end to end on synthetic models, nothing downloaded.
#include <stdlib.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>

#include "commands.h"
#include "progress.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/synth.h"
#include "strata/formats/error.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

namespace {

std::string ExamplesDir() {
  if (fs::is_directory(STRATA_EXAMPLES_DIR)) return STRATA_EXAMPLES_DIR;
  fs::path exe = fs::read_symlink("/proc/self/exe");
  for (fs::path p : {exe.parent_path() / "examples", exe.parent_path().parent_path() / "examples"})
    if (fs::is_directory(p)) return p.string();
  throw Error("cannot find the example plans (looked in " + std::string(STRATA_EXAMPLES_DIR) +
              " and beside the binary)");
}

// Synthetic stand-ins: the real ids, tiny shapes, 32 layers like the originals.
SynthSpec StandIn(const std::string& id, uint64_t seed) {
  SynthSpec s;
  s.preset = "tiny";
  s.arch = id.find("Llama") != std::string::npos ? "llama" : "mistral";
  s.seed = seed;
  return s;
}

// Text end to end: a tiny model carrying the real Llama-2 vocabulary from
// ../shared/vocab (when present beside the project), prompted with text. Its
// weights are random, so the continuation is noise; the tokens are real.
void DemoText(const std::string& tmp, const std::string& store_dir) {
  const std::string vocab = std::string(STRATA_EXAMPLES_DIR) + "/../../shared/vocab/ggml-vocab-llama-spm.gguf";
  if (!fs::exists(vocab)) return;
  SynthSpec s = StandIn("demo/text", 99);
  s.layers = 2;
  s.tokenizer = "llama-spm";
  s.vocab_gguf = vocab;
  SynthToDir(s, tmp + "/text-model");
  printf("\n== strata run %s/text-model --prompt \"Hello world\" -n 12 (Llama-2 vocabulary, random weights)\n   ",
         tmp.c_str());
  fflush(stdout);
  RunRun({tmp + "/text-model", "--prompt", "Hello world", "-n", "12", "--store", store_dir});
}

}  // namespace

int RunDemo(const std::vector<std::string>& args) {
  bool keep = false;
  po::options_description d("options");
  d.add_options()("keep", po::bool_switch(&keep), "keep the temporary HF cache and store, and print where")(
      "help,h", "show this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: strata demo [--keep]\n\nSynthesizes tiny stand-ins for the models the example plans "
                 "name, into a temporary HF cache,\ncompiles every example plan into a temporary store, and "
                 "shows what was stored.\n\n" << d << "\n";
    return 0;
  }
  po::notify(vm);
  char tmpl[] = "/tmp/strata-demo-XXXXXX";
  if (!mkdtemp(tmpl)) ThrowErrno("cannot create a temporary directory", errno);
  const std::string tmp = tmpl, hf = tmp + "/hf", store_dir = tmp + "/store";
  struct Cleanup {
    std::string dir;
    bool keep;
    ~Cleanup() {
      std::error_code ec;
      if (!keep) fs::remove_all(dir, ec);
    }
  } cleanup{tmp, keep};
  setenv("HF_HUB_CACHE", hf.c_str(), 1);

  std::vector<std::string> plans;
  for (const auto& e : fs::directory_iterator(ExamplesDir()))
    if (e.path().extension() == ".yml") plans.push_back(e.path().string());
  std::sort(plans.begin(), plans.end());
  std::set<std::string> ids;
  for (const auto& p : plans)
    for (const auto& id : LoadPlan(p).ReferencedModels()) ids.insert(id);

  printf("== synthesizing %zu tiny stand-in models into %s\n", ids.size(), hf.c_str());
  uint64_t seed = 1;
  for (const std::string& id : ids) {
    SynthResult r = SynthToHfCache(StandIn(id, seed++), hf, id);
    printf("   %-40s %s, %llu parameters\n", id.c_str(), HumanBytes(r.bytes).c_str(),
           static_cast<unsigned long long>(r.parameters));
  }
  printf("\n== compiling %zu example plans into %s\n", plans.size(), store_dir.c_str());
  Store store(store_dir);
  for (const std::string& p : plans) {
    CompileStats s = Compile(store, LoadPlan(p), {});
    printf("   %-28s %2d layers (%2d distinct)  read %-9s new blobs %-4llu (%s)\n", s.name.c_str(), s.layers,
           s.distinct_layers, HumanBytes(s.bytes_read).c_str(), static_cast<unsigned long long>(s.blobs_written),
           HumanBytes(s.blob_bytes_written).c_str());
  }
  printf("\n== strata ls\n");
  fflush(stdout);
  RunLs({"--store", store_dir});
  printf("\n== strata du\n");
  fflush(stdout);
  RunDu({"--store", store_dir});
  printf("\n== strata show block-expansion-40\n");
  fflush(stdout);
  RunShow({"block-expansion-40", "--store", store_dir});
  printf("\n== strata run: 16 greedy tokens from each variant on the CPU\n");
  for (const std::string& p : plans) {
    std::string name = fs::path(p).stem().string();
    EngineOptions eo;
    eo.max_context = 4 + 16;
    std::unique_ptr<Engine> engine = OpenEngine(store, VariantFor(store, name, false), eo);
    const GenerateStats r = engine->NewSequence()->Generate({1, 7, 42, 3}, 16);
    std::string toks;
    for (size_t i = 0; i < 6 && i < r.tokens.size(); ++i) toks += std::to_string(r.tokens[i]) + ",";
    const EngineInfo info = engine->info();
    printf("   %-28s %2d layers (%d elided), decode %7.1f tok/s  -> %s...\n", name.c_str(), info.layers,
           info.elided_layers, r.decode_tokens_per_s(), toks.c_str());
  }
  printf("\n== strata diff solar-dus idus-8layer --short\n");
  fflush(stdout);
  RunDiff({"solar-dus", "idus-8layer", "--short", "--store", store_dir});
  DemoText(tmp, store_dir);
  if (keep) printf("\nkept: HF_HUB_CACHE=%s, store %s\n", hf.c_str(), store_dir.c_str());
  return 0;
}

}  // namespace strata
