// `strata serve`: options and start-up messages; the server is serve/.
#include <tbb/global_control.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "cli.h"
#include "commands.h"
#include "strata/formats/error.h"
#include "strata/runtime/cpu_kernels.h"
#include "strata/serve/server.h"

namespace po = boost::program_options;

namespace strata {

namespace {

// "512M", "4G", "4GiB", "1.5g", "1048576": bytes (K/M/G/T are powers of 1024).
uint64_t ParseSize(const std::string& flag, const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  std::string unit(end ? end : "");
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.back() == 'b')) unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'i') unit.pop_back();
  double mult = 1;
  if (unit == "k") mult = 1024.0;
  else if (unit == "m") mult = 1024.0 * 1024;
  else if (unit == "g") mult = 1024.0 * 1024 * 1024;
  else if (unit == "t") mult = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty()) throw UsageError(flag + " wants a size such as 512M or 4G, not \"" + s + "\"");
  if (end == s.c_str() || !std::isfinite(v) || v <= 0 || v * mult > 1e18)
    throw UsageError(flag + " wants a positive size such as 512M or 4G, not \"" + s + "\"");
  return static_cast<uint64_t>(v * mult);
}

std::vector<std::string> SplitModels(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty() || s == "all") return out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (item.empty()) throw UsageError("--models has an empty name in \"" + s + "\"");
    if (std::find(out.begin(), out.end(), item) != out.end()) throw UsageError("--models names \"" + item + "\" twice");
    out.push_back(item);
  }
  return out;
}

}  // namespace

int RunServe(const std::vector<std::string>& args) {
  serve::ServeOptions o;
  std::string store_dir, models = "all", kv_memory;
  int threads = 0;
  bool batch_invariant = false, no_verify_load = false;
  po::options_description d("options");
  d.add_options()("host", po::value(&o.host), "address to listen on (default 127.0.0.1: this machine only)")(
      "port", po::value(&o.port), "port (default 8080; 0: any free port, printed at start)")(
      "device", po::value(&o.device), "cpu (default) | cuda")(
      "models", po::value(&models), "variants to serve, comma-separated, or all (default: every variant in the store)")(
      "api-key", po::value(&o.api_key), "require Authorization: Bearer KEY on every request but /health (default: $STRATA_API_KEY)")(
      "kv-memory", po::value(&kv_memory),
      "KV cache for all sequences of all models, e.g. 4G (default: room for --max-batch sequences of --ctx)")(
      "max-batch", po::value(&o.max_batch), "sequences running at once, all models together (default 16)")(
      "max-queue", po::value(&o.max_queue), "requests waiting at most; past it 429 with Retry-After (default 64)")(
      "ctx", po::value(&o.ctx), "positions per sequence, prompt + max_tokens (default: the models' context, at most 4096)")(
      "prefill-chunk", po::value(&o.prefill_chunk), "prompt tokens run per step at most, so streams keep flowing (default 256)")(
      "threads", po::value(&threads), "worker threads for the forward pass (default: all cores)")(
      "timeout", po::value(&o.timeout_s), "seconds a request may take (default 600)")(
      "shutdown-timeout", po::value(&o.shutdown_timeout_s),
      "on SIGTERM/SIGINT, seconds running requests may take to finish (default 30)")(
      "max-body", po::value(&o.max_body), "largest request body in bytes (default 8 MiB)")(
      "batch-invariant", po::bool_switch(&batch_invariant),
      "the same kernels for a lone decode step as inside a batch: greedy output then equals `strata run`'s bit for bit "
      "under any load (with STRATA_BATCH_INVARIANT=1 for run), at some decode speed (docs/serve.md)")(
      "no-verify-load", po::bool_switch(&no_verify_load), "do not hash the weights' blobs as they load")(
      "json", po::bool_switch(&o.json_logs), "log one JSON object per request instead of a text line");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata serve [--models a,b | all] [--port 8080] [--kv-memory 4G]",
                 "Serves every chosen variant of the store through one OpenAI-compatible HTTP server: GET /health,\n"
                 "GET /v1/models, POST /v1/completions, POST /v1/chat/completions (streaming as server-sent\n"
                 "events), GET /metrics (Prometheus). Variants share one weight pool: a base, its depth-upscaled\n"
                 "variant and its block expansion cost the base's weights once, plus their KV caches. Requests\n"
                 "of all variants run in one continuously batched loop. Chat prompts use the model's own Jinja\n"
                 "chat_template. Stop with SIGTERM or Ctrl-C: running requests may finish (--shutdown-timeout).\n"
                 "Design and API: docs/serve.md."))
    return 0;
  CheckDevice(o.device);
  CheckThreads(threads);
  if (o.max_batch < 1) throw UsageError("--max-batch must be at least 1");
  if (o.max_queue < 0) throw UsageError("--max-queue must be >= 0");
  if (o.ctx < 0) throw UsageError("--ctx must be >= 1");
  if (o.prefill_chunk < 1) throw UsageError("--prefill-chunk must be at least 1");
  if (!(o.timeout_s > 0)) throw UsageError("--timeout must be > 0 seconds");
  if (!(o.shutdown_timeout_s >= 0)) throw UsageError("--shutdown-timeout must be >= 0 seconds");
  if (o.max_body < 1024) throw UsageError("--max-body must be at least 1024 bytes");
  if (!kv_memory.empty()) o.kv_memory = ParseSize("--kv-memory", kv_memory);
  if (o.api_key.empty())
    if (const char* k = std::getenv("STRATA_API_KEY")) o.api_key = k;
  o.models = SplitModels(models);
  o.verify_load = !no_verify_load;
  if (batch_invariant) SetBatchInvariant(true);
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  Store store(Store::DefaultRoot(store_dir), /*create=*/false);
  serve::Server server(store, o);
  if (!o.api_key.empty()) fprintf(stderr, "strata serve: requests need Authorization: Bearer <the API key>\n");
  if (o.host != "127.0.0.1" && o.host != "::1" && o.api_key.empty())
    fprintf(stderr, "strata serve: warning: listening on %s without --api-key: anyone who can reach it may use it\n",
            o.host.c_str());
  fprintf(stderr, "strata serve: loading %s on port %u ...\n", models.c_str(), server.port());
  server.Run();
  return 0;
}

}  // namespace strata
