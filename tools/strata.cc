// The strata command line: parses arguments, calls compiler/ and runtime/,
// prints results and errors, picks exit codes (0 ok, 1 failed, 2 bad usage).
#include <signal.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>

#include "commands.h"
#include "interrupt.h"
#include "strata/formats/error.h"

namespace po = boost::program_options;
using namespace strata;

namespace {

struct Command {
  const char* name;
  const char* summary;
  std::function<int(const std::vector<std::string>&)> run;
  bool writes = false;  // catches signals to clean up (interrupt.h)
};

const std::vector<Command>& Commands() {
  static const std::vector<Command> cmds = {
      {"compile", "compile a mergekit plan into the store as a named variant", RunCompile, true},
      {"quantize", "store a quantized twin of a variant (Q8_0, Q4_K_M, ...: llama-quantize's types and bytes)", RunQuantize, true},
      {"materialize", "store a variant's merged (computed) tensors as blobs, so loads map them instead of computing them", RunMaterialize, true},
      {"export", "write a variant as a Hugging Face checkpoint (as mergekit would)", RunExport, true},
      {"synth", "write a deterministic synthetic HF checkpoint of a supported architecture", RunSynth, true},
      {"run", "run a variant (or an HF directory) from the store, on the CPU or a CUDA GPU", RunRun},
      {"serve", "serve the store's variants over an OpenAI-compatible HTTP API, one weight pool, continuous batching", RunServe},
      {"eval", "perplexity of variants on a text, as llama-perplexity computes it: one table, --json, --svg", RunEval},
      {"bench", "load time, prefill and decode tokens/s, peak memory of a variant (cpu or cuda)", RunBench},
      {"ls", "list the variants in the store", RunLs},
      {"show", "show a variant's layers: hash, source model and layer, transforms", RunShow},
      {"diff", "align two variants (or HF directories) by layer hash; per-tensor numbers", RunDiff},
      {"du", "logical bytes of all variants against physical bytes in the store", RunDu},
      {"verify", "check every object of the store (or of NAMEs); report damage and what it breaks", RunVerify},
      {"rm", "remove variant names (their objects go at the next gc)", RunRm},
      {"gc", "remove objects no variant uses, stale temporaries and cache entries", RunGc, true},
      {"demo", "synthesize small models, compile the example plans, show the store", RunDemo},
  };
  return cmds;
}

void PrintUsage(FILE* out) {
  fprintf(out,
          "strata %s: depth-upscaled LLMs stored once, run from the store\n\n"
          "usage: strata COMMAND [options]   (strata COMMAND --help for its options)\n\ncommands:\n",
          STRATA_VERSION);
  for (const Command& c : Commands()) fprintf(out, "  %-9s %s\n", c.name, c.summary);
  fprintf(out,
          "\nThe store is --store DIR, else $STRATA_STORE, else ~/.cache/strata.\n"
          "Models named in plans are local directories or HF ids found in the local HF cache\n"
          "($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub); strata never downloads.\n");
}

}  // namespace

int main(int argc, char** argv) {
  // With RLIMIT_FSIZE (or a quota) a write must fail with EFBIG, not kill us
  // before we can clean up.
  signal(SIGXFSZ, SIG_IGN);
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    PrintUsage(stdout);
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    printf("strata %s\n", STRATA_VERSION);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const Command& c : Commands()) {
    if (cmd != c.name) continue;
    if (c.writes) CatchInterrupts();
    try {
      return c.run(args);
    } catch (const UsageError& e) {
      fprintf(stderr, "strata %s: %s\n(see `strata %s --help`)\n", c.name, e.what(), c.name);
      return 2;
    } catch (const po::error& e) {
      fprintf(stderr, "strata %s: %s\n(see `strata %s --help`)\n", c.name, e.what(), c.name);
      return 2;
    } catch (const Interrupted& e) {
      fprintf(stderr, "strata %s: interrupted (signal %d); what it had written was removed, nothing else changed\n",
              c.name, e.signal());
      return 128 + e.signal();
    } catch (const Error& e) {
      fprintf(stderr, "strata %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const std::filesystem::filesystem_error& e) {
      // "filesystem error: ... [path]" said the way strata says it.
      std::string path = e.path1().empty() ? "" : " " + e.path1().string();
      fprintf(stderr, "strata %s: error: cannot access%s: %s%s\n", c.name, path.c_str(), e.code().message().c_str(),
              e.code() == std::errc::permission_denied ? " (check the permissions of the store and your files)" : "");
      return 1;
    } catch (const std::bad_alloc&) {
      fprintf(stderr, "strata %s: error: out of memory\n", c.name);
      return 1;
    } catch (const std::exception& e) {
      // A bug, not the user's input: say so rather than abort.
      fprintf(stderr, "strata %s: internal error: %s\n(please report it with the command that caused it)\n", c.name,
              e.what());
      return 1;
    }
  }
  fprintf(stderr, "strata: unknown command \"%s\"\n\n", cmd.c_str());
  PrintUsage(stderr);
  return 2;
}
