// One function per strata command; each parses its own options.
#pragma once

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
};
struct GenerateResult {
  std::vector<int> tokens;
  double load_s = 0, prefill_tps = 0, decode_tps = 0;
  int elided = 0, layers = 0, distinct_layers = 0;
  uint64_t mapped = 0, materialized = 0;
};
// Prefill + greedy/sampled decode on the CPU backend. Throws Error.
GenerateResult Generate(Store& store, const GenerateRequest& req);

int RunCompile(const std::vector<std::string>& args);
int RunExport(const std::vector<std::string>& args);
int RunSynth(const std::vector<std::string>& args);
int RunLs(const std::vector<std::string>& args);
int RunShow(const std::vector<std::string>& args);
int RunDu(const std::vector<std::string>& args);
int RunRun(const std::vector<std::string>& args);
int RunDemo(const std::vector<std::string>& args);

}  // namespace strata
