// The continuous-batching scheduler over engines of one weight pool: greedy
// tokens under load (chunked prefill, requests joining and leaving, three
// variants at once) equal each request run alone with Sequence::Generate;
// admission by KV budget, a bounded queue, cancellation freeing the KV,
// stop tokens, max_tokens, deadlines and shutdown; one pool holding the
// tensors of a base and its DUS once.
//
// The kernels run batch invariant here (SetBatchInvariant), so a row's bits
// do not depend on the batch it ran in: the reference is exact.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "../compiler/test_util.h"
#include "tiny_variants.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/synth.h"
#include "strata/runtime/cpu_kernels.h"
#include "strata/runtime/scheduler.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using testutil::ScopedTempDir;

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SetBatchInvariant(true);
    tmp_ = new ScopedTempDir();
    store_ = testutil::MakeTinyVariantStore(tmp_->path());
  }
  static void TearDownTestSuite() {
    SetBatchInvariant(false);
    delete store_;
    delete tmp_;
  }

  static std::unique_ptr<Engine> Open(const std::string& variant, std::shared_ptr<WeightPool> pool = nullptr,
                                      EngineOptions o = {}) {
    if (!pool) pool = std::make_shared<WeightPool>(*store_, "cpu", true);
    return Engine::Open(*store_, store_->ResolveRef(variant), o, pool);
  }

  // The greedy tokens of `prompt` run alone (the reference).
  static std::vector<int> Alone(const std::string& variant, const std::vector<int>& prompt, int n) {
    auto e = Open(variant);
    auto seq = e->NewSequence();
    return seq->Generate(prompt, n).tokens;
  }

  static ScopedTempDir* tmp_;
  static Store* store_;
};
ScopedTempDir* SchedulerTest::tmp_ = nullptr;
Store* SchedulerTest::store_ = nullptr;

std::vector<int> Tokens(int n, int salt) {
  std::vector<int> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 37 + salt * 101 + 5) % 256);
  return t;
}

// A request whose tokens and result are collected; wait() blocks until done.
struct Collect {
  std::vector<int> tokens;
  RequestResult result;
  std::promise<void> done;
  std::future<void> fut = done.get_future();
  GenerationRequest Make(int model, std::vector<int> prompt, int64_t max_tokens) {
    GenerationRequest r;
    r.model = model;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.on_token = [this](const TokenEvent& ev) {
      tokens.push_back(ev.token);
      return true;
    };
    r.on_done = [this](const RequestResult& res) {
      result = res;
      done.set_value();
    };
    return r;
  }
  void wait() { ASSERT_EQ(fut.wait_for(std::chrono::seconds(60)), std::future_status::ready); }
};

TEST_F(SchedulerTest, GreedyTokensUnderLoadEqualEachRequestAlone) {
  auto pool = std::make_shared<WeightPool>(*store_, "cpu", true);
  const std::vector<std::string> variants = {"base", "dus", "bexp"};
  std::vector<std::unique_ptr<Engine>> engines;
  for (const auto& v : variants) engines.push_back(Open(v, pool));
  SchedulerOptions so;
  so.max_batch = 5;      // fewer than the requests: some wait and join later
  so.prefill_chunk = 7;  // prompts run in several chunks, mixed with decoding
  so.max_queue = 100;
  Scheduler sched({engines[0].get(), engines[1].get(), engines[2].get()}, so);
  constexpr int kRequests = 12;
  std::vector<std::unique_ptr<Collect>> cs;
  std::vector<std::vector<int>> prompts;
  std::vector<int> lengths;
  for (int i = 0; i < kRequests; ++i) {
    cs.push_back(std::make_unique<Collect>());
    prompts.push_back(Tokens(3 + (i * 5) % 17, i));
    lengths.push_back(4 + i % 6);
    auto a = sched.Submit(cs.back()->Make(i % 3, prompts.back(), lengths.back()));
    ASSERT_EQ(a.verdict, Scheduler::Verdict::kAccepted) << a.message;
  }
  for (int i = 0; i < kRequests; ++i) {
    cs[i]->wait();
    EXPECT_EQ(cs[i]->result.reason, FinishReason::kLength);
    EXPECT_EQ(cs[i]->result.completion_tokens, lengths[i]);
    EXPECT_EQ(cs[i]->result.prompt_tokens, static_cast<int64_t>(prompts[i].size()));
    EXPECT_EQ(cs[i]->tokens, Alone(variants[i % 3], prompts[i], lengths[i])) << "request " << i;
  }
  // Every block came back.
  const SchedulerStats st = sched.stats();
  EXPECT_EQ(st.active, 0);
  EXPECT_EQ(st.kv_reserved_bytes, 0u);
  for (const auto& m : st.models) EXPECT_EQ(m.kv.used_blocks, 0);
}

TEST_F(SchedulerTest, OnePoolHoldsSharedTensorsOnce) {
  auto pool = std::make_shared<WeightPool>(*store_, "cpu", true);
  auto base = Open("base", pool);
  const uint64_t base_bytes = pool->resident_bytes();
  ASSERT_GT(base_bytes, 0u);
  auto dus = Open("dus", pool);  // every DUS layer is a base layer: nothing new
  EXPECT_EQ(pool->resident_bytes(), base_bytes);
  EXPECT_GT(dus->info().layers, base->info().layers);
  // A private pool of its own costs the same again.
  auto lone = Open("dus");
  EXPECT_EQ(lone->info().weight_bytes_mapped + lone->info().weight_bytes_materialized, base_bytes);
}

TEST_F(SchedulerTest, AdmissionWaitsForKvAndRefusesWhatCanNeverFit) {
  EngineOptions eo;
  eo.kv_block_tokens = 8;
  eo.kv_positions = 32;  // 4 blocks in all
  auto e = Open("base", nullptr, eo);
  SchedulerOptions so;
  so.max_batch = 8;
  Scheduler sched({e.get()}, so);
  // 24 positions: 3 blocks each, so only one runs at a time.
  Collect a, b;
  ASSERT_EQ(sched.Submit(a.Make(0, Tokens(12, 1), 12)).verdict, Scheduler::Verdict::kAccepted);
  ASSERT_EQ(sched.Submit(b.Make(0, Tokens(12, 2), 12)).verdict, Scheduler::Verdict::kAccepted);
  a.wait();
  b.wait();
  EXPECT_EQ(a.tokens, Alone("base", Tokens(12, 1), 12));
  EXPECT_EQ(b.tokens, Alone("base", Tokens(12, 2), 12));
  EXPECT_LE(e->kv_stats().peak_used_blocks, 4);
  // 40 positions need 5 blocks: never.
  Collect c;
  auto adm = sched.Submit(c.Make(0, Tokens(20, 3), 20));
  EXPECT_EQ(adm.verdict, Scheduler::Verdict::kTooLarge);
  EXPECT_NE(adm.message.find("--kv-memory"), std::string::npos) << adm.message;
}

TEST_F(SchedulerTest, BadRequestsAreRefusedWithReasons) {
  EngineOptions eo;
  eo.max_context = 64;
  auto e = Open("base", nullptr, eo);
  Scheduler sched({e.get()}, {});
  Collect c;
  EXPECT_EQ(sched.Submit(c.Make(0, {}, 4)).verdict, Scheduler::Verdict::kInvalid);
  EXPECT_EQ(sched.Submit(c.Make(0, {1, 2}, 0)).verdict, Scheduler::Verdict::kInvalid);
  EXPECT_EQ(sched.Submit(c.Make(0, {1, 999}, 4)).verdict, Scheduler::Verdict::kInvalid);
  EXPECT_EQ(sched.Submit(c.Make(3, {1, 2}, 4)).verdict, Scheduler::Verdict::kInvalid);
  auto past = sched.Submit(c.Make(0, Tokens(60, 1), 10));
  EXPECT_EQ(past.verdict, Scheduler::Verdict::kInvalid);
  EXPECT_NE(past.message.find("context of 64"), std::string::npos) << past.message;
  auto r = c.Make(0, {1, 2}, 4);
  r.sampler.top_p = 0;
  EXPECT_EQ(sched.Submit(std::move(r)).verdict, Scheduler::Verdict::kInvalid);
}

TEST_F(SchedulerTest, AFullQueueRefusesWithARetryHint) {
  auto e = Open("base");
  SchedulerOptions so;
  so.max_batch = 1;
  so.max_queue = 2;
  Scheduler sched({e.get()}, so);
  std::vector<std::unique_ptr<Collect>> cs;
  int accepted = 0, full = 0;
  for (int i = 0; i < 8; ++i) {
    cs.push_back(std::make_unique<Collect>());
    auto a = sched.Submit(cs.back()->Make(0, Tokens(8, i), 40));
    if (a.verdict == Scheduler::Verdict::kAccepted) ++accepted;
    else {
      EXPECT_EQ(a.verdict, Scheduler::Verdict::kQueueFull);
      EXPECT_GE(a.retry_after_s, 1.0);
      ++full;
      cs.pop_back();
    }
  }
  // One may be admitted before the others arrive, two wait: at most 3 in.
  EXPECT_LE(accepted, 3);
  EXPECT_GE(full, 5);
  for (auto& c : cs) c->wait();
}

TEST_F(SchedulerTest, CancelledAndTimedOutRequestsFreeTheirBlocks) {
  auto e = Open("base");
  Scheduler sched({e.get()}, {});
  Collect c;
  GenerationRequest r = c.Make(0, Tokens(10, 1), 100000 / 2);
  std::atomic<int> seen{0};
  std::shared_ptr<RequestHandle> handle;
  std::promise<void> started;
  auto started_f = started.get_future();
  r.max_tokens = 200;
  r.on_token = [&](const TokenEvent& ev) {
    c.tokens.push_back(ev.token);
    if (++seen == 3) started.set_value();
    return true;
  };
  auto a = sched.Submit(std::move(r));
  ASSERT_EQ(a.verdict, Scheduler::Verdict::kAccepted);
  ASSERT_EQ(started_f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  a.handle->Cancel();
  c.wait();
  EXPECT_EQ(c.result.reason, FinishReason::kCancelled);
  EXPECT_LT(c.result.completion_tokens, 200);
  EXPECT_EQ(sched.stats().models[0].kv.used_blocks, 0);
  EXPECT_EQ(sched.stats().kv_reserved_bytes, 0u);

  Collect t;
  GenerationRequest tr = t.Make(0, Tokens(10, 2), 200);
  tr.deadline = SteadyClock::now();  // already past
  ASSERT_EQ(sched.Submit(std::move(tr)).verdict, Scheduler::Verdict::kAccepted);
  t.wait();
  EXPECT_EQ(t.result.reason, FinishReason::kTimeout);
  EXPECT_EQ(sched.stats().models[0].kv.used_blocks, 0);
}

TEST_F(SchedulerTest, StopTokensAndOnTokenEndARequest) {
  auto e = Open("base");
  Scheduler sched({e.get()}, {});
  const std::vector<int> prompt = Tokens(9, 4);
  const std::vector<int> ref = Alone("base", prompt, 8);
  Collect s;
  GenerationRequest r = s.Make(0, prompt, 8);
  r.stop_ids = {ref[2]};
  ASSERT_EQ(sched.Submit(std::move(r)).verdict, Scheduler::Verdict::kAccepted);
  s.wait();
  EXPECT_EQ(s.result.reason, FinishReason::kStop);
  const size_t first = std::find(ref.begin(), ref.end(), ref[2]) - ref.begin();
  EXPECT_EQ(s.tokens, std::vector<int>(ref.begin(), ref.begin() + first + 1));

  Collect f;
  GenerationRequest fr = f.Make(0, prompt, 8);
  fr.on_token = [&](const TokenEvent& ev) {
    f.tokens.push_back(ev.token);
    return f.tokens.size() < 2;
  };
  ASSERT_EQ(sched.Submit(std::move(fr)).verdict, Scheduler::Verdict::kAccepted);
  f.wait();
  EXPECT_EQ(f.result.reason, FinishReason::kStop);
  EXPECT_EQ(f.tokens, std::vector<int>(ref.begin(), ref.begin() + 2));
}

TEST_F(SchedulerTest, LogprobsAreTheModelsDistribution) {
  auto e = Open("base");
  Scheduler sched({e.get()}, {});
  const std::vector<int> prompt = Tokens(6, 5);
  // The reference: the raw logits of the prompt's last position.
  auto ref_e = Open("base");
  auto seq = ref_e->NewSequence();
  seq->keep_logits(true);
  seq->Append(prompt);
  ref_e->Step({seq.get()});
  const std::vector<float> l = seq->logits();
  double z = 0;
  const float mx = *std::max_element(l.begin(), l.end());
  for (float v : l) z += std::exp(double(v) - mx);
  Collect c;
  GenerationRequest r = c.Make(0, prompt, 1);
  r.logprobs = 3;
  std::vector<TokenEvent> evs;
  r.on_token = [&](const TokenEvent& ev) {
    evs.push_back(ev);
    return true;
  };
  ASSERT_EQ(sched.Submit(std::move(r)).verdict, Scheduler::Verdict::kAccepted);
  c.wait();
  ASSERT_EQ(evs.size(), 1u);
  const int tok = evs[0].token;
  EXPECT_EQ(tok, seq->next());
  EXPECT_NEAR(evs[0].logprob, double(l[tok]) - mx - std::log(z), 1e-5);
  ASSERT_EQ(evs[0].top.size(), 3u);
  EXPECT_EQ(evs[0].top[0].token, tok);  // greedy: the most likely
  EXPECT_GE(evs[0].top[0].logprob, evs[0].top[1].logprob);
  EXPECT_GE(evs[0].top[1].logprob, evs[0].top[2].logprob);
}

TEST_F(SchedulerTest, StopEndsQueuedAndRunningRequests) {
  auto e = Open("base");
  SchedulerOptions so;
  so.max_batch = 1;
  auto sched = std::make_unique<Scheduler>(std::vector<Engine*>{e.get()}, so);
  Collect a, b;
  ASSERT_EQ(sched->Submit(a.Make(0, Tokens(8, 1), 500)).verdict, Scheduler::Verdict::kAccepted);
  ASSERT_EQ(sched->Submit(b.Make(0, Tokens(8, 2), 500)).verdict, Scheduler::Verdict::kAccepted);
  sched->Stop(SteadyClock::now() + std::chrono::milliseconds(50));
  a.wait();
  b.wait();
  EXPECT_EQ(b.result.reason, FinishReason::kShutdown);  // never admitted
  EXPECT_TRUE(a.result.reason == FinishReason::kShutdown || a.result.reason == FinishReason::kLength);
  Collect c;
  EXPECT_EQ(sched->Submit(c.Make(0, Tokens(4, 3), 4)).verdict, Scheduler::Verdict::kStopping);
}

TEST_F(SchedulerTest, APrefillChunkSamplesNothing) {
  // A seeded sampler draws the same tokens whether the prompt ran in one
  // step or in chunks: chunks before the last draw nothing.
  SamplerOptions so;
  so.temperature = 0.9;
  so.seed = 42;
  auto e = Open("base");
  auto whole = e->NewSequence(so);
  const std::vector<int> prompt = Tokens(20, 6);
  const std::vector<int> ref = whole->Generate(prompt, 6).tokens;
  auto chunked = e->NewSequence(so);
  chunked->Prefill(std::vector<int>(prompt.begin(), prompt.begin() + 7));
  e->Step({chunked.get()});
  EXPECT_EQ(chunked->next(), -1);
  chunked->Prefill(std::vector<int>(prompt.begin() + 7, prompt.begin() + 15));
  e->Step({chunked.get()});
  chunked->Append(std::vector<int>(prompt.begin() + 15, prompt.end()));
  e->Step({chunked.get()});
  std::vector<int> got = {chunked->next()};
  while (got.size() < ref.size()) {
    chunked->Append({got.back()});
    e->Step({chunked.get()});
    got.push_back(chunked->next());
  }
  EXPECT_EQ(got, ref);
}

}  // namespace
}  // namespace strata
