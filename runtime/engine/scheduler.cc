// Continuous batching (scheduler.h; docs/serve.md, "Scheduler").
#include "strata/runtime/scheduler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "strata/formats/error.h"

namespace strata {

namespace {

double Secs(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// log-softmax of `logits` at `token`, and the `k` most likely tokens.
void Logprobs(const std::vector<float>& logits, int k, TokenEvent& ev) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
  const double lse = static_cast<double>(mx) + std::log(sum);
  auto lp = [&](int t) { return static_cast<float>(static_cast<double>(logits[static_cast<size_t>(t)]) - lse); };
  ev.logprob = lp(ev.token);
  ev.top.clear();
  if (k <= 0) return;
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t n = std::min(static_cast<size_t>(k), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<int64_t>(n), ids.end(), [&](int a, int b) {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la != lb ? la > lb : a < b;
  });
  for (size_t i = 0; i < n; ++i) ev.top.push_back({ids[i], lp(ids[i])});
}

}  // namespace

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeout: return "timeout";
    case FinishReason::kShutdown: return "shutdown";
    case FinishReason::kError: return "error";
  }
  return "error";
}

struct Scheduler::Active {
  GenerationRequest req;
  std::shared_ptr<RequestHandle> handle;
  std::unique_ptr<Sequence> seq;
  SteadyClock::time_point submitted, admitted;
  int64_t fed = 0;        // prompt tokens queued on the sequence so far
  int64_t generated = 0;  // tokens passed to on_token
  int64_t reserved_blocks = 0;
  double ttft_s = 0;
  bool in_step = false, done = false;
};

Scheduler::Scheduler(std::vector<Engine*> engines, const SchedulerOptions& o) : engines_(std::move(engines)), opts_(o) {
  if (engines_.empty()) throw Error("internal: a scheduler with no engines");
  opts_.max_batch = std::max(1, opts_.max_batch);
  opts_.max_queue = std::max(0, opts_.max_queue);
  opts_.prefill_chunk = std::max<int64_t>(1, opts_.prefill_chunk);
  uint64_t sum = 0;
  for (Engine* e : engines_) {
    kv0_.push_back(e->kv_stats());
    sum += static_cast<uint64_t>(kv0_.back().total_blocks) * kv0_.back().block_bytes;
  }
  budget_bytes_ = opts_.kv_budget_bytes ? std::min(opts_.kv_budget_bytes, sum) : sum;
  queues_.resize(engines_.size());
  reserved_blocks_.assign(engines_.size(), 0);
  kv_snapshot_ = kv0_;
  thread_ = std::thread([this] { Loop(); });
}

Scheduler::~Scheduler() {
  if (thread_.joinable()) Stop(SteadyClock::now());
}

int64_t Scheduler::BlocksFor(int model, int64_t positions) const {
  const int64_t bt = std::max(1, kv0_[static_cast<size_t>(model)].block_tokens);
  return (positions + bt - 1) / bt;
}

uint64_t Scheduler::ReserveBytes(int model, int64_t positions) const {
  return static_cast<uint64_t>(BlocksFor(model, positions)) * kv0_[static_cast<size_t>(model)].block_bytes;
}

Scheduler::Admission Scheduler::Submit(GenerationRequest r) {
  Admission a;
  auto refuse = [&](Verdict v, std::string m) {
    a.verdict = v;
    a.message = std::move(m);
    return a;
  };
  if (r.model < 0 || r.model >= models()) return refuse(Verdict::kInvalid, "unknown model index");
  Engine& e = *engines_[static_cast<size_t>(r.model)];
  if (r.prompt.empty()) return refuse(Verdict::kInvalid, "the prompt is empty: nothing to run");
  if (r.max_tokens < 1) return refuse(Verdict::kInvalid, "max_tokens must be at least 1");
  const int64_t vocab = e.config().vocab;
  for (int t : r.prompt)
    if (t < 0 || t >= vocab)
      return refuse(Verdict::kInvalid, "token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                                           std::to_string(vocab - 1) + ")");
  if (std::string p = SamplerOptionsProblem(r.sampler); !p.empty()) return refuse(Verdict::kInvalid, p);
  const int64_t prompt_n = static_cast<int64_t>(r.prompt.size());
  const int64_t positions = prompt_n + r.max_tokens;
  if (positions > e.max_context())
    return refuse(Verdict::kInvalid, "the prompt's " + std::to_string(prompt_n) + " tokens plus max_tokens " +
                                         std::to_string(r.max_tokens) + " come to " + std::to_string(positions) +
                                         " positions, past this server's context of " +
                                         std::to_string(e.max_context()) + " (--ctx)");
  const int64_t blocks = BlocksFor(r.model, positions);
  const uint64_t bytes = ReserveBytes(r.model, positions);
  const KvStats& kv = kv0_[static_cast<size_t>(r.model)];
  if (blocks > kv.total_blocks || bytes > budget_bytes_)
    return refuse(Verdict::kTooLarge, "the request needs " + std::to_string(bytes >> 20) + " MiB of KV cache (" +
                                          std::to_string(positions) + " positions) and the server's whole budget is " +
                                          std::to_string(std::min<uint64_t>(budget_bytes_, kv.total_blocks * kv.block_bytes) >> 20) +
                                          " MiB (--kv-memory); ask for fewer max_tokens or a shorter prompt");
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return refuse(Verdict::kStopping, "the server is shutting down");
  if (queued_ >= opts_.max_queue) {
    a.retry_after_s = std::clamp(ewma_request_s_ * (queued_ + 1) / opts_.max_batch, 1.0, 60.0);
    return refuse(Verdict::kQueueFull, "the server is busy: " + std::to_string(queued_) +
                                           " requests are waiting (--max-queue); retry later");
  }
  a.handle = std::make_shared<RequestHandle>();
  queues_[static_cast<size_t>(r.model)].push_back({std::move(r), a.handle, SteadyClock::now()});
  ++queued_;
  cv_.notify_one();
  return a;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  SchedulerStats s;
  s.queued = queued_;
  s.kv_budget_bytes = budget_bytes_;
  s.kv_reserved_bytes = reserved_bytes_;
  s.steps = steps_;
  for (size_t m = 0; m < engines_.size(); ++m) {
    SchedulerModelStats ms;
    ms.queued = static_cast<int>(queues_[m].size());
    ms.reserved_blocks = reserved_blocks_[m];
    s.models.push_back(ms);
  }
  for (const auto& a : active_) {
    ++s.active;
    ++s.models[static_cast<size_t>(a->req.model)].active;
  }
  for (size_t m = 0; m < engines_.size(); ++m) s.models[m].kv = kv_snapshot_[m];
  return s;
}

void Scheduler::Admit(std::unique_lock<std::mutex>& lock) {
  const size_t n = queues_.size();
  for (bool any = true; any && static_cast<int>(active_.size()) < opts_.max_batch;) {
    any = false;
    for (size_t k = 0; k < n && static_cast<int>(active_.size()) < opts_.max_batch; ++k) {
      const size_t m = (next_model_ + k) % n;
      auto& q = queues_[m];
      if (q.empty()) continue;
      Queued& head = q.front();
      const int64_t positions = static_cast<int64_t>(head.req.prompt.size()) + head.req.max_tokens;
      const int64_t blocks = BlocksFor(static_cast<int>(m), positions);
      const uint64_t bytes = ReserveBytes(static_cast<int>(m), positions);
      if (reserved_blocks_[m] + blocks > kv0_[m].total_blocks || reserved_bytes_ + bytes > budget_bytes_) continue;
      auto a = std::make_unique<Active>();
      a->req = std::move(head.req);
      a->handle = std::move(head.handle);
      a->submitted = head.submitted;
      a->admitted = SteadyClock::now();
      a->reserved_blocks = blocks;
      q.pop_front();
      --queued_;
      reserved_blocks_[m] += blocks;
      reserved_bytes_ += bytes;
      Engine& e = *engines_[m];
      a->seq = e.NewSequence(a->req.sampler);  // options checked by Submit
      if (a->req.logprobs >= 0) a->seq->keep_logits(true);
      active_.push_back(std::move(a));
      next_model_ = (m + 1) % n;
      any = true;
    }
  }
  (void)lock;
}

void Scheduler::Finish(Active& a, FinishReason r, const std::string& error) {
  if (a.done) return;
  a.done = true;
  RequestResult res;
  res.reason = r;
  res.prompt_tokens = static_cast<int64_t>(a.req.prompt.size());
  res.completion_tokens = a.generated;
  res.queue_s = Secs(a.submitted, a.admitted);
  res.ttft_s = a.ttft_s;
  res.error = error;
  a.seq.reset();  // frees the KV blocks
  {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t m = static_cast<size_t>(a.req.model);
    reserved_blocks_[m] -= a.reserved_blocks;
    reserved_bytes_ -= ReserveBytes(a.req.model, static_cast<int64_t>(a.req.prompt.size()) + a.req.max_tokens);
    const double took = Secs(a.submitted, SteadyClock::now());
    ewma_request_s_ = 0.8 * ewma_request_s_ + 0.2 * took;
    kv_snapshot_[m] = engines_[m]->kv_stats();  // the blocks are free before on_done says so
  }
  if (a.req.on_done) {
    try {
      a.req.on_done(res);
    } catch (...) {  // a front end's failure must not stop the others' requests
    }
  }
}

// One step: every active request's share of one batched forward pass per
// engine. Returns false when there was nothing to run.
bool Scheduler::RunStep() {
  const auto now = SteadyClock::now();
  SteadyClock::time_point stop_at;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_at = deadline_;
  }
  for (auto& a : active_) {
    if (a->handle->cancelled()) Finish(*a, FinishReason::kCancelled);
    else if (now >= a->req.deadline) Finish(*a, FinishReason::kTimeout);
    else if (now >= stop_at) Finish(*a, FinishReason::kShutdown);
  }
  // Prompt chunks, oldest request first, within the step's prefill budget;
  // decoding requests already hold their next token.
  int64_t budget = opts_.prefill_chunk;
  std::vector<std::vector<Active*>> by_engine(engines_.size());
  for (auto& a : active_) {
    a->in_step = false;
    if (a->done) continue;
    const int64_t prompt_n = static_cast<int64_t>(a->req.prompt.size());
    if (a->fed < prompt_n) {
      if (budget <= 0) continue;
      const int64_t n = std::min(prompt_n - a->fed, budget);
      std::vector<int> chunk(a->req.prompt.begin() + a->fed, a->req.prompt.begin() + a->fed + n);
      if (a->fed + n < prompt_n) a->seq->Prefill(chunk);
      else a->seq->Append(chunk);
      a->fed += n;
      budget -= n;
    }
    a->in_step = true;
    by_engine[static_cast<size_t>(a->req.model)].push_back(a.get());
  }
  bool ran = false;
  for (size_t m = 0; m < engines_.size(); ++m) {
    if (by_engine[m].empty()) continue;
    std::vector<Sequence*> seqs;
    for (Active* a : by_engine[m]) seqs.push_back(a->seq.get());
    ran = true;
    try {
      engines_[m]->Step(seqs);
    } catch (const std::exception& e) {
      for (Active* a : by_engine[m]) Finish(*a, FinishReason::kError, e.what());
      continue;
    }
    for (Active* a : by_engine[m]) {
      const int tok = a->seq->next();
      if (tok < 0) continue;  // a prompt chunk before the last
      TokenEvent ev;
      ev.token = tok;
      ev.index = static_cast<int>(a->generated);
      if (a->req.logprobs >= 0 && !a->seq->logits().empty()) Logprobs(a->seq->logits(), a->req.logprobs, ev);
      if (a->generated == 0) a->ttft_s = Secs(a->submitted, SteadyClock::now());
      ++a->generated;
      bool more = true;
      try {
        more = !a->req.on_token || a->req.on_token(ev);
      } catch (...) {
        more = false;
      }
      if (!more) Finish(*a, a->handle->cancelled() ? FinishReason::kCancelled : FinishReason::kStop);
      else if (std::find(a->req.stop_ids.begin(), a->req.stop_ids.end(), tok) != a->req.stop_ids.end())
        Finish(*a, FinishReason::kStop);
      else if (a->generated >= a->req.max_tokens) Finish(*a, FinishReason::kLength);
      else a->seq->Append({tok});
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (ran) ++steps_;
  active_.erase(std::remove_if(active_.begin(), active_.end(), [](const auto& a) { return a->done; }), active_.end());
  for (size_t m = 0; m < engines_.size(); ++m) kv_snapshot_[m] = engines_[m]->kv_stats();
  return ran;
}

void Scheduler::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      Admit(lock);
      if (active_.empty()) {
        if (stopping_ && queued_ == 0) break;
        cv_.wait(lock, [&] { return stopping_ || queued_ > 0; });
        continue;
      }
    }
    RunStep();
  }
}

void Scheduler::Stop(SteadyClock::time_point deadline) {
  std::vector<Queued> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    deadline_ = std::min(deadline_, deadline);
    for (auto& q : queues_) {
      for (auto& item : q) dropped.push_back(std::move(item));
      q.clear();
    }
    queued_ = 0;
    cv_.notify_all();
  }
  for (auto& d : dropped) {
    if (!d.req.on_done) continue;
    RequestResult res;
    res.reason = FinishReason::kShutdown;
    res.prompt_tokens = static_cast<int64_t>(d.req.prompt.size());
    try {
      d.req.on_done(res);
    } catch (...) {
    }
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace strata
