// One function per strata command; each parses its own options.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "strata/formats/store.h"
#include "strata/runtime/engine.h"
#include "strata/runtime/sampler.h"

namespace strata {

// A command line that cannot be understood: exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What `strata run` (and the demo) asks of a generation.
struct RunOptions {
  std::string name;  // variant, or an HF directory
  int n = 32;        // new tokens at most
  SamplerOptions sampler;
  bool verbose = false;
  EngineOptions engine;
};
// Engine::Open with a progress bar on stderr while CUDA uploads the weights
// (when `progress` and stderr is a terminal). Throws Error.
std::unique_ptr<Engine> OpenEngine(Store& store, const Hash& variant, EngineOptions eo, bool progress = true);
// --device: throws UsageError unless `device` is cpu or cuda, and Error when
// this build or machine cannot run it (run.cc).
void CheckDevice(const std::string& device);

// A variant name in the store, or an HF model directory compiled on the fly
// into the store (variant_source.cc). Throws Error naming what is missing.
Hash VariantFor(Store& store, const std::string& name_or_dir, bool verbose);
// Writes show's provenance picture to `svg_path` and/or `html_path` (either
// may be empty) and says so on stderr (diff_commands.cc). Throws Error.
void WriteProvenanceFiles(const Json& show, const std::string& svg_path, const std::string& html_path);

int RunCompile(const std::vector<std::string>& args);
int RunExport(const std::vector<std::string>& args);
int RunQuantize(const std::vector<std::string>& args);  // quantize.cc
int RunMaterialize(const std::vector<std::string>& args);  // materialize.cc
int RunSynth(const std::vector<std::string>& args);
int RunLs(const std::vector<std::string>& args);
int RunShow(const std::vector<std::string>& args);
int RunDu(const std::vector<std::string>& args);
int RunRun(const std::vector<std::string>& args);
int RunDemo(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);  // bench.cc
int RunEval(const std::vector<std::string>& args);   // eval.cc
int RunServe(const std::vector<std::string>& args);  // serve.cc
int RunDiff(const std::vector<std::string>& args);  // diff_commands.cc
// Store maintenance (store_commands.cc).
int RunVerify(const std::vector<std::string>& args);
int RunRm(const std::vector<std::string>& args);
int RunGc(const std::vector<std::string>& args);

}  // namespace strata
