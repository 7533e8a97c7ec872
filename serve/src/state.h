// The server's shared state and the seam between the HTTP sessions
// (server.cc) and the endpoints (endpoints/*.cc, one file each).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "strata/runtime/chat.h"
#include "strata/runtime/engine.h"
#include "strata/runtime/scheduler.h"
#include "strata/runtime/tokenizer.h"
#include "strata/serve/metrics.h"
#include "strata/serve/openai.h"
#include "strata/serve/server.h"

namespace strata::serve {

struct ServedModel {
  std::string name;
  Hash variant{};
  std::unique_ptr<Engine> engine;
  std::optional<VariantTokenizer> tok;  // none: only token-id prompts
  std::optional<ChatTemplate> chat;     // none: chat_problem says why
  std::string chat_problem;
  std::vector<int> stop_ids;       // completions: end-of-sequence ids
  std::vector<int> chat_stop_ids;  // chat: those and the template's end-of-turn tokens
  int layers = 0, distinct_layers = 0;
  uint64_t distinct_bytes = 0;  // bytes of the distinct tensors it uses
  uint64_t shared_bytes = 0;    // of those, bytes another served variant uses too
  int64_t created = 0;          // unix time it was loaded
};

enum class Phase { kLoading, kReady, kStopping };

struct ServerState {
  ServeOptions opts;
  Metrics metrics;
  std::atomic<Phase> phase{Phase::kLoading};
  mutable std::mutex status_mu;
  std::string status;  // "loading small-dus (2 of 3)"
  // Filled while loading; read only once phase is kReady.
  std::vector<std::unique_ptr<ServedModel>> models;
  std::shared_ptr<WeightPool> pool;
  std::unique_ptr<Scheduler> scheduler;
  int64_t ctx = 0;
  ServedModel* Find(const std::string& name) const;
  std::string Status() const;
};

struct HttpRequest {
  std::string method, path, query, body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::chrono::steady_clock::time_point received;
};

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// How an endpoint answers: once with Send(), or as a stream of server-sent
// events. Thread-safe: calls may come from any thread (the scheduler's), and
// take effect in the order they were made. Calls after the exchange ended,
// or after the client went away, are ignored.
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void Send(Reply r) = 0;
  virtual void StartStream() = 0;                  // 200 text/event-stream, chunked
  virtual void Event(const std::string& json) = 0;  // "data: JSON\n\n"
  // "data: [DONE]\n\n", then the exchange ends; `log_status` is the status its
  // log line and metrics give (the stream began as 200; an error event may
  // have ended it: 503, 504, 500).
  virtual void EndStream(int log_status = 200) = 0;
  // `f` runs (once, on an I/O thread) when the client closes the connection
  // before the exchange ended; also starts watching for it.
  virtual void OnCancel(std::function<void()> f) = 0;
  // For the request's log line and metrics.
  virtual void Note(const std::string& model, int64_t prompt_tokens, int64_t completion_tokens, double ttft_s) = 0;
};

struct Endpoint {
  std::string method, path;
  bool needs_ready = true;  // 503 while loading or stopping
  bool needs_auth = true;
  std::function<void(ServerState&, const HttpRequest&, const std::shared_ptr<Responder>&)> handle;
};

// One per file in endpoints/.
Endpoint HealthEndpoint();
Endpoint ModelsEndpoint();
Endpoint CompletionsEndpoint();
Endpoint ChatCompletionsEndpoint();
Endpoint MetricsEndpoint();

// Shared by the two generation endpoints (generation.cc).
void Generate(ServerState& st, const HttpRequest& req, const std::shared_ptr<Responder>& r, ApiKind kind);

// Helpers for endpoints.
void SendJson(const std::shared_ptr<Responder>& r, int status, const OJson& body);
void SendError(const std::shared_ptr<Responder>& r, const ApiError& e);

}  // namespace strata::serve
