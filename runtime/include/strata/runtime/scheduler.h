// Continuous batching over Engine::Step (docs/serve.md, "Scheduler"): one
// thread runs every request of every served variant. Requests join and leave
// the running batch at every step; prompts are run in chunks so that running
// streams keep their inter-token latency; a request is admitted only when the
// KV blocks it can ever need (prompt + max_tokens) are free in the shared
// budget, so nothing admitted ever fails for memory half way.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "strata/runtime/engine.h"

namespace strata {

using SteadyClock = std::chrono::steady_clock;

struct TokenLogprob {
  int token = -1;
  float logprob = 0;  // natural log of the model's probability (softmax of the raw logits)
};

// One generated token, as the request's on_token sees it.
struct TokenEvent {
  int token = -1;
  int index = 0;  // 0 for the first generated token
  // With GenerationRequest::logprobs >= 0: the token's log-probability and
  // the `logprobs` most likely tokens, most likely first.
  float logprob = 0;
  std::vector<TokenLogprob> top;
};

enum class FinishReason {
  kStop,       // a stop token, or on_token returned false (a stop string)
  kLength,     // max_tokens generated
  kCancelled,  // RequestHandle::Cancel (the client went away)
  kTimeout,    // past the request's deadline
  kShutdown,   // the server stopped before it finished
  kError,      // the forward pass failed (RequestResult::error says why)
};
const char* FinishReasonName(FinishReason r);

struct RequestResult {
  FinishReason reason = FinishReason::kStop;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double queue_s = 0;  // submitted -> admitted
  double ttft_s = 0;   // submitted -> first token (0 when none came)
  std::string error;   // kError
};

struct GenerationRequest {
  int model = 0;  // index into the scheduler's engines
  std::vector<int> prompt;
  int64_t max_tokens = 16;
  SamplerOptions sampler;
  std::vector<int> stop_ids;  // generating one of these ends the request (it is passed to on_token first)
  int logprobs = -1;          // -1: none; else the chosen token's and this many top alternatives
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
  // Both run on the scheduler's thread and must be quick. on_token: each
  // generated token in order; returning false ends the request (kStop).
  // on_done: exactly once, last, also when the request never ran.
  std::function<bool(const TokenEvent&)> on_token;
  std::function<void(const RequestResult&)> on_done;
};

// A submitted request, for its front end: Cancel() from any thread ends it at
// the next step (its KV blocks are freed then).
class RequestHandle {
 public:
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct SchedulerOptions {
  int max_batch = 16;         // sequences in the running batch at most (all variants together)
  int max_queue = 64;         // requests waiting for admission at most; past it Submit refuses
  int64_t prefill_chunk = 256;  // prompt tokens per step at most (all prefills together; >= 1)
  // The KV bytes all variants' sequences may hold together (0: the sum of
  // the engines' own budgets). Each engine's own budget also binds.
  uint64_t kv_budget_bytes = 0;
};

struct SchedulerModelStats {
  int queued = 0, active = 0;
  KvStats kv;                   // the engine's own figures (blocks in use, free)
  int64_t reserved_blocks = 0;  // blocks promised to its admitted requests
};

struct SchedulerStats {
  int queued = 0, active = 0;
  uint64_t kv_budget_bytes = 0, kv_reserved_bytes = 0;
  int64_t steps = 0;
  std::vector<SchedulerModelStats> models;
};

class Scheduler {
 public:
  // The engines must outlive the scheduler; starts its thread.
  Scheduler(std::vector<Engine*> engines, const SchedulerOptions& o);
  // Stop(now): everything not finished ends as kShutdown.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  enum class Verdict { kAccepted, kQueueFull, kTooLarge, kStopping, kInvalid };
  struct Admission {
    Verdict verdict = Verdict::kAccepted;
    std::shared_ptr<RequestHandle> handle;  // kAccepted only
    std::string message;                    // otherwise: why, with the figures
    double retry_after_s = 0;               // kQueueFull: a hint for Retry-After
  };
  // Queues `r`. Refused (on_done is then never called): the queue is full,
  // the request's KV could never fit (its prompt + max_tokens past the
  // budget), the scheduler is stopping, or the request is malformed (no
  // prompt, max_tokens < 1, an unknown model, a token outside the vocabulary,
  // past the engine's context).
  Admission Submit(GenerationRequest r);

  SchedulerStats stats() const;
  int models() const { return static_cast<int>(engines_.size()); }
  // KV bytes a request of `positions` positions on `model` reserves.
  uint64_t ReserveBytes(int model, int64_t positions) const;

  // Refuses new requests from now on; cancels the queued ones (kShutdown);
  // lets the running ones finish until `deadline`, then ends them
  // (kShutdown); returns when none is left and the thread has exited.
  void Stop(SteadyClock::time_point deadline);

 private:
  struct Active;
  struct Queued {
    GenerationRequest req;
    std::shared_ptr<RequestHandle> handle;
    SteadyClock::time_point submitted;
  };
  void Loop();
  void Admit(std::unique_lock<std::mutex>& lock);
  bool RunStep();
  void Finish(Active& a, FinishReason r, const std::string& error = {});
  int64_t BlocksFor(int model, int64_t positions) const;

  std::vector<Engine*> engines_;
  SchedulerOptions opts_;
  std::vector<KvStats> kv0_;  // each engine's KV figures at start (block sizes, budget)
  std::vector<KvStats> kv_snapshot_;  // after the last step (stats() must not touch the engines)
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<Queued>> queues_;  // per model, FIFO
  int queued_ = 0;
  size_t next_model_ = 0;  // round-robin admission across variants
  std::vector<std::unique_ptr<Active>> active_;
  std::vector<int64_t> reserved_blocks_;
  uint64_t reserved_bytes_ = 0;
  uint64_t budget_bytes_ = 0;
  int64_t steps_ = 0;
  bool stopping_ = false;
  SteadyClock::time_point deadline_ = SteadyClock::time_point::max();
  // Completed requests, for the Retry-After hint.
  double ewma_request_s_ = 1.0;
  std::thread thread_;
};

}  // namespace strata
