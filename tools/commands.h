// One function per strata command; each parses its own options.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "strata/formats/store.h"
#include "strata/runtime/sampler.h"

namespace strata {

// A command line that cannot be understood: exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GenerateRequest {
  std::string name;  // variant, or an HF directory
  std::vector<int> prompt;
  int n = 32;
  SamplerOptions sampler;
  bool elide = true;
  std::string logits_out;
  bool all_logits = false;
  bool verbose = false;
  // Called with each token as it is generated (text output streams from
  // here); returning false stops generation after that token.
  std::function<bool(int)> on_token;
  std::string device = "cpu";  // cpu | cuda
  bool verify_load = true;     // hash every blob once as the weights load
};
struct GenerateResult {
  std::vector<int> tokens;
  double load_s = 0, prefill_tps = 0, decode_tps = 0;
  int elided = 0, layers = 0, distinct_layers = 0;
  uint64_t mapped = 0, materialized = 0;
  uint64_t device_bytes = 0;  // --device cuda: weight bytes resident on the GPU
  std::string device_name;    // --device cuda: the GPU
};
// Prefill + greedy/sampled decode on the CPU or CUDA backend. Throws Error.
GenerateResult Generate(Store& store, const GenerateRequest& req);
// --device: throws UsageError unless `device` is cpu or cuda, and Error when it
// is cuda but this build has no CUDA backend or the machine no device (bench.cc).
void CheckDevice(const std::string& device);

// A variant name in the store, or an HF model directory compiled on the fly
// into the store (variant_source.cc). Throws Error naming what is missing.
Hash VariantFor(Store& store, const std::string& name_or_dir, bool verbose);
// Writes show's provenance picture to `svg_path` and/or `html_path` (either
// may be empty) and says so on stderr (diff_commands.cc). Throws Error.
void WriteProvenanceFiles(const Json& show, const std::string& svg_path, const std::string& html_path);

int RunCompile(const std::vector<std::string>& args);
int RunExport(const std::vector<std::string>& args);
int RunSynth(const std::vector<std::string>& args);
int RunLs(const std::vector<std::string>& args);
int RunShow(const std::vector<std::string>& args);
int RunDu(const std::vector<std::string>& args);
int RunRun(const std::vector<std::string>& args);
int RunDemo(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);  // bench.cc
int RunDiff(const std::vector<std::string>& args);  // diff_commands.cc
// Store maintenance (store_commands.cc).
int RunVerify(const std::vector<std::string>& args);
int RunRm(const std::vector<std::string>& args);
int RunGc(const std::vector<std::string>& args);

}  // namespace strata
