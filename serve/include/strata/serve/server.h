// `strata serve`: every chosen variant of a store behind one OpenAI-compatible
// HTTP server, on one weight pool and one continuous-batching scheduler
// (docs/serve.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/formats/store.h"

namespace strata::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (Server::port() says which)
  std::string device = "cpu";
  std::vector<std::string> models;  // variant names; empty: every variant in the store
  std::string api_key;             // empty: no authentication
  uint64_t kv_memory = 0;          // bytes for all KV caches (0: see docs/serve.md)
  int max_batch = 16;
  int max_queue = 64;
  int64_t ctx = 0;                 // positions per sequence (0: the smaller of the models' and 4096)
  int64_t prefill_chunk = 256;
  double timeout_s = 600;          // per request
  double shutdown_timeout_s = 30;  // SIGTERM: how long running requests may finish
  uint64_t max_body = 8 << 20;
  int io_threads = 2;
  bool json_logs = false;
  bool verify_load = true;
  bool quiet = false;              // no start-up lines (tests)
};

class Server {
 public:
  // Binds host:port (throws Error when it cannot, e.g. in use) and resolves
  // the model names (throws Error for an unknown one); loads nothing yet.
  Server(Store& store, const ServeOptions& o);
  ~Server();
  uint16_t port() const;
  // Serves until Stop() or SIGTERM/SIGINT: loads the models (GET /health
  // answers 503 meanwhile), then answers requests. Returns once running
  // requests have finished or the shutdown deadline has passed.
  void Run();
  // From any thread or a signal handler's thread: begins the shutdown.
  void Stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::serve
