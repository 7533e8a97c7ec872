// `strata demo`: everything end to end on the trained fixture, nothing downloaded.
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
#include "strata/formats/file.h"

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

// The trained fixture (tests/fixtures/kjv): a 32-layer Mistral-architecture
// model trained on the King James Bible (scripts/fixture/train_fixture.py).
// Empty when this build's source tree is gone and none lies beside the binary.
std::string FixtureDir() {
  std::vector<fs::path> tries = {fs::path(STRATA_FIXTURE_DIR)};
  fs::path exe = fs::read_symlink("/proc/self/exe");
  tries.push_back(exe.parent_path() / "fixtures/kjv");
  for (const fs::path& p : tries)
    if (fs::exists(p / "model.safetensors") && fs::exists(p / "tokenizer.json")) return p.string();
  return "";
}

// An HF cache entry for `id` whose snapshot is the fixture (symlinks, as HF
// keeps its blobs), so a plan naming `id` applies to the fixture verbatim.
void LinkFixture(const std::string& fixture, const std::string& hf, const std::string& id) {
  std::string name;
  for (char c : id) name += c == '/' ? std::string("--") : std::string(1, c);
  const std::string dir = hf + "/models--" + name;
  fs::create_directories(dir + "/refs");
  fs::create_directories(dir + "/snapshots/fixture");
  WriteFileAtomically(dir + "/refs/main", "fixture", dir + "/refs");
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::create_symlink(fs::absolute(fixture) / f, dir + "/snapshots/fixture/" + f);
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
    std::cout << "usage: strata demo [--keep]\n\nPoints every model the example plans name at the trained fixture "
                 "(a 32-layer Mistral-\narchitecture model trained on the King James Bible, tests/fixtures/kjv) in a "
                 "temporary HF\ncache, compiles every example plan into a temporary store, shows what was stored, "
                 "lets\neach variant write text and scores each on the fixture's held-out text (strata eval).\n"
                 "Without the fixture it synthesizes random stand-ins instead.\n\n" << d << "\n";
    return 0;
  }
  po::notify(vm);
  const char* tmpdir = getenv("TMPDIR");
  std::string tmpl = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/strata-demo-XXXXXX";
  if (!mkdtemp(tmpl.data())) ThrowErrno("cannot create a temporary directory in " + tmpl, errno);
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

  const std::string fixture = FixtureDir();
  Store store(store_dir);
  if (!fixture.empty()) {
    printf("== the trained fixture: %s\n   a 32-layer Mistral-architecture model (3.9M parameters) trained on the King "
           "James Bible;\n   every model id the example plans name points to it (HF cache %s)\n",
           fixture.c_str(), hf.c_str());
    for (const std::string& id : ids) LinkFixture(fixture, hf, id);
    CompileOptions co;
    co.name = "kjv";
    Compile(store, ParsePlan("models:\n  - model: \"" + fs::absolute(fixture).string() + "\"\nmerge_method: passthrough\n",
                             fixture),
            co);
  } else {
    printf("== synthesizing %zu tiny stand-in models into %s (no trained fixture beside this build)\n", ids.size(),
           hf.c_str());
    uint64_t seed = 1;
    for (const std::string& id : ids) {
      SynthResult r = SynthToHfCache(StandIn(id, seed++), hf, id);
      printf("   %-40s %s, %llu parameters\n", id.c_str(), HumanBytes(r.bytes).c_str(),
             static_cast<unsigned long long>(r.parameters));
    }
  }
  printf("\n== compiling %zu example plans into %s\n", plans.size(), store_dir.c_str());
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
  printf("\n== strata diff solar-dus idus-8layer --short\n");
  fflush(stdout);
  RunDiff({"solar-dus", "idus-8layer", "--short", "--store", store_dir});
  std::vector<std::string> names;
  for (const std::string& p : plans) names.push_back(fs::path(p).stem().string());
  if (fixture.empty()) {
    printf("\n== strata run: 16 greedy tokens from each variant on the CPU (random weights: the tokens are noise)\n");
    for (const std::string& name : names) {
      EngineOptions eo;
      eo.max_context = 4 + 16;
      std::unique_ptr<Engine> engine = OpenEngine(store, VariantFor(store, name, false), eo);
      const GenerateStats r = engine->NewSequence()->Generate({1, 7, 42, 3}, 16);
      std::string toks;
      for (size_t i = 0; i < 6 && i < r.tokens.size(); ++i) toks += std::to_string(r.tokens[i]) + ",";
      printf("   %-28s decode %7.1f tok/s  -> %s...\n", name.c_str(), r.decode_tokens_per_s(), toks.c_str());
    }
  } else {
    const char* prompt = "And the LORD spake unto Moses, saying,";
    printf("\n== strata run NAME --prompt \"%s\" -n 40 --temperature 0.7 --seed 1\n", prompt);
    names.insert(names.begin(), "kjv");
    for (const std::string& name : names) {
      printf("\n-- %s:\n%s", name.c_str(), prompt);
      fflush(stdout);
      RunRun({name, "--prompt", prompt, "-n", "40", "--temperature", "0.7", "--seed", "1", "--store", store_dir});
    }
    const std::string heldout = fixture + "/heldout.txt";
    printf("\n== strata eval kjv <each example plan> --file %s --chunks 16\n", heldout.c_str());
    fflush(stdout);
    std::vector<std::string> ev = names;
    for (const char* a : {"--file", heldout.c_str(), "--chunks", "16", "--store", store_dir.c_str()}) ev.push_back(a);
    RunEval(ev);
  }
  if (keep) printf("\nkept: HF_HUB_CACHE=%s, store %s\n", hf.c_str(), store_dir.c_str());
  return 0;
}

}  // namespace strata
