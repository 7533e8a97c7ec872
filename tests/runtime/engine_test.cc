// Engine and Sequence on the CPU backend: a batched step equals running each
// sequence alone (mixes of prefill and decode, different lengths; base, DUS
// and block-expansion variants), the paged KV cache (blocks reused, a full
// budget refused with nothing changed), truncation, and a conversation
// continued across turns equal to one prefill of the whole of it.
//
// The reference for a batch is each sequence run alone on an engine of its
// own: the single-sequence forward pass that tests/ref checks against an
// independent numpy implementation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../compiler/test_util.h"
#include "tiny_variants.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/synth.h"
#include "strata/formats/error.h"
#include "strata/runtime/engine.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using testutil::ScopedTempDir;

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new ScopedTempDir();
    store_ = testutil::MakeTinyVariantStore(tmp_->path());
  }
  static void TearDownTestSuite() {
    delete store_;
    delete tmp_;
  }

  static std::unique_ptr<Engine> Open(const std::string& variant, EngineOptions o = {}) {
    return Engine::Open(*store_, store_->ResolveRef(variant), o);
  }

  static ScopedTempDir* tmp_;
  static Store* store_;
};
ScopedTempDir* EngineTest::tmp_ = nullptr;
Store* EngineTest::store_ = nullptr;

std::vector<int> Tokens(int n, int salt) {
  std::vector<int> t;
  for (int i = 0; i < n; ++i) t.push_back((i * 37 + salt * 101 + 5) % 256);
  return t;
}

// Largest |a - b| over the largest |b|: fp32 rounding, not a different result.
double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, m = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d = std::max(d, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(double(b[i])));
  }
  return d / m;
}

// What one sequence does alone: the logits after its prompt and after each
// of `decode` greedy tokens, and those tokens.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<int> tokens;
};

Trace RunAlone(Engine& e, const std::vector<int>& prompt, int decode) {
  Trace t;
  auto s = e.NewSequence();
  s->keep_logits(true);
  s->Append(prompt);
  e.Step({s.get()});
  t.logits.push_back(s->logits());
  for (int i = 0; i < decode; ++i) {
    t.tokens.push_back(s->next());
    s->Append({s->next()});
    e.Step({s.get()});
    t.logits.push_back(s->logits());
  }
  t.tokens.push_back(s->next());
  return t;
}

class BatchedTest : public EngineTest, public ::testing::WithParamInterface<const char*> {};

// Three sequences of different prompt lengths: A and B prefill together, then
// C's prefill joins A's and B's first decode steps, then all three decode.
TEST_P(BatchedTest, EqualsEachSequenceAlone) {
  const std::string variant = GetParam();
  const std::vector<int> pa = Tokens(5, 1), pb = Tokens(37, 2), pc = Tokens(3, 3);
  const int decode = 6;
  std::unique_ptr<Engine> ref = Open(variant);
  const Trace ta = RunAlone(*ref, pa, decode), tb = RunAlone(*ref, pb, decode), tc = RunAlone(*ref, pc, decode - 1);
  ASSERT_GT(RelDiff(ta.logits[0], tb.logits[0]), 1e-3) << "different prompts must give different logits";

  std::unique_ptr<Engine> e = Open(variant);
  auto a = e->NewSequence(), b = e->NewSequence(), c = e->NewSequence();
  for (Sequence* s : {a.get(), b.get(), c.get()}) s->keep_logits(true);
  a->Append(pa);
  b->Append(pb);
  e->Step({a.get(), b.get()});
  std::vector<Trace> got(3);
  got[0].logits.push_back(a->logits());
  got[1].logits.push_back(b->logits());
  for (int step = 0; step < decode; ++step) {
    std::vector<Sequence*> batch = {a.get(), b.get()};
    for (size_t i = 0; i < 2; ++i) {
      got[i].tokens.push_back(batch[i]->next());
      batch[i]->Append({batch[i]->next()});
    }
    if (step == 0) {
      c->Append(pc);
    } else {
      got[2].tokens.push_back(c->next());
      c->Append({c->next()});
    }
    batch.push_back(c.get());
    e->Step(batch);
    for (size_t i = 0; i < 3; ++i) got[i].logits.push_back(batch[i]->logits());
  }
  got[0].tokens.push_back(a->next());
  got[1].tokens.push_back(b->next());
  got[2].tokens.push_back(c->next());
  const Trace* want[3] = {&ta, &tb, &tc};
  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    EXPECT_EQ(got[i].tokens, want[i]->tokens);
    ASSERT_EQ(got[i].logits.size(), want[i]->logits.size());
    for (size_t j = 0; j < got[i].logits.size(); ++j) EXPECT_LE(RelDiff(got[i].logits[j], want[i]->logits[j]), 1e-5);
  }
  EXPECT_EQ(a->length(), int64_t(pa.size()) + decode);
  EXPECT_EQ(c->length(), int64_t(pc.size()) + decode - 1);
}

INSTANTIATE_TEST_SUITE_P(Variants, BatchedTest, ::testing::Values("base", "dus", "bexp"));

// A batch of 16 decode items against 16 sequences alone (the server's shape).
TEST_F(EngineTest, SixteenDecodingSequencesEqualEachAlone) {
  std::unique_ptr<Engine> e = Open("dus");
  std::vector<std::unique_ptr<Sequence>> seqs;
  std::vector<Sequence*> all;
  std::vector<Trace> want;
  for (int i = 0; i < 16; ++i) {
    want.push_back(RunAlone(*e, Tokens(2 + i, 10 + i), 3));
    seqs.push_back(e->NewSequence());
    seqs.back()->keep_logits(true);
    seqs.back()->Append(Tokens(2 + i, 10 + i));
    all.push_back(seqs.back().get());
  }
  e->Step(all);
  for (int step = 0; step < 3; ++step) {
    for (Sequence* s : all) s->Append({s->next()});
    e->Step(all);
  }
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(all[i]->next(), want[i].tokens.back()) << i;
    EXPECT_LE(RelDiff(all[i]->logits(), want[i].logits.back()), 1e-5) << i;
  }
}

// The bytes of one KV block of the tiny model on the CPU: fp32 K and V rows
// of kv_heads * head_dim = 2 * 16 floats for each computed layer, and one
// 64-byte cache line of padding (docs/runtime.md, "Paged KV cache").
uint64_t BlockBytes(int block_tokens, int layers) { return uint64_t{4} * (2 * 32 * block_tokens * layers + 16); }

TEST_F(EngineTest, PagedKvReusesFreedBlocksAndRefusesAFullBudgetChangingNothing) {
  EngineOptions o;
  o.kv_block_tokens = 4;
  o.kv_budget_bytes = 4 * BlockBytes(4, 4);  // 4 blocks of 4 positions
  std::unique_ptr<Engine> e = Open("base", o);
  std::unique_ptr<Engine> ref = Open("base");
  ASSERT_EQ(e->kv_stats().total_blocks, 4);
  EXPECT_EQ(e->kv_stats().block_bytes, BlockBytes(4, 4));

  auto a = e->NewSequence(), b = e->NewSequence();
  a->keep_logits(true);
  b->keep_logits(true);
  a->Append(Tokens(10, 1));  // 3 blocks
  b->Append(Tokens(4, 2));   // 1 block
  e->Step({a.get(), b.get()});
  EXPECT_EQ(e->kv_stats().used_blocks, 4);
  EXPECT_EQ(e->kv_stats().sequences, 2);

  // Full: C's one token needs a block, and A's next token (position 10) fits
  // in its third block; the step is refused whole.
  auto c = e->NewSequence();
  c->Append(Tokens(1, 3));
  a->Append({a->next()});
  try {
    e->Step({a.get(), c.get()});
    FAIL() << "a full KV cache must be refused";
  } catch (const Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("KV cache is full"), std::string::npos) << m;
    EXPECT_NE(m.find("needs 1 more blocks of 4 positions, 0 of 4 are free"), std::string::npos) << m;
    EXPECT_NE(m.find("--kv-memory"), std::string::npos) << m;
  }
  EXPECT_EQ(a->length(), 10);
  EXPECT_EQ(c->length(), 0);
  EXPECT_EQ(e->kv_stats().used_blocks, 4);

  // A alone still continues exactly as if nothing had happened.
  e->Step({a.get()});
  Trace ta = RunAlone(*ref, Tokens(10, 1), 1);
  EXPECT_LE(RelDiff(a->logits(), ta.logits[1]), 1e-5);

  // B finishes: its block is free, and C (reusing it) computes correctly.
  b.reset();
  EXPECT_EQ(e->kv_stats().used_blocks, 3);
  c->keep_logits(true);
  e->Step({c.get()});
  EXPECT_EQ(e->kv_stats().used_blocks, 4);
  EXPECT_LE(RelDiff(c->logits(), RunAlone(*ref, Tokens(1, 3), 0).logits[0]), 1e-5);
  EXPECT_EQ(e->kv_stats().peak_used_blocks, 4);
}

TEST_F(EngineTest, ABudgetSmallerThanOneBlockIsAClearError) {
  EngineOptions o;
  o.kv_block_tokens = 4;
  o.kv_budget_bytes = BlockBytes(4, 4) - 1;
  try {
    Open("base", o);
    FAIL();
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("smaller than one KV block"), std::string::npos) << err.what();
  }
}

TEST_F(EngineTest, ABadItemRefusesTheWholeBatch) {
  std::unique_ptr<Engine> e = Open("base");
  auto a = e->NewSequence(), b = e->NewSequence();
  a->Append(Tokens(3, 1));
  b->Append({256});  // outside the vocabulary of 256
  EXPECT_THROW(e->Step({a.get(), b.get()}), Error);
  EXPECT_EQ(a->length(), 0);
  EXPECT_EQ(e->kv_stats().used_blocks, 0);
  EXPECT_THROW(e->Step({a.get(), a.get()}), Error);  // one sequence twice
  EXPECT_EQ(a->length(), 0);
  e->Step({a.get()});
  EXPECT_EQ(a->length(), 3);
}

TEST_F(EngineTest, TruncatedSequenceContinuesAsAFreshOne) {
  std::unique_ptr<Engine> e = Open("dus");
  auto s = e->NewSequence();
  s->keep_logits(true);
  s->Append(Tokens(40, 1));  // two blocks of 32
  e->Step({s.get()});
  s->Truncate(20);
  EXPECT_EQ(e->kv_stats().used_blocks, 1);
  std::vector<int> rest = Tokens(7, 9);
  s->Append(rest);
  e->Step({s.get()});
  std::vector<int> whole = Tokens(20, 1);
  whole.insert(whole.end(), rest.begin(), rest.end());
  // Tokens(40, 1)'s first 20 are Tokens(20, 1)'s.
  EXPECT_LE(RelDiff(s->logits(), RunAlone(*e, whole, 0).logits[0]), 1e-5);
  EXPECT_EQ(s->tokens(), whole);
}

// A chat: turn 2's prompt is turn 1's prompt, the reply and new text. The
// sequence runs only what is new, and its logits equal one prefill of all.
TEST_F(EngineTest, ConversationAcrossTurnsEqualsOnePrefillOfItAll) {
  std::unique_ptr<Engine> e = Open("dus");
  auto s = e->NewSequence();
  const std::vector<int> turn1 = Tokens(9, 4);
  GenerateStats g1 = s->Generate(turn1, 5);  // may stop early at an end-of-sequence token
  ASSERT_GE(g1.tokens.size(), 1u);
  EXPECT_EQ(g1.reused_tokens, 0);
  std::vector<int> turn2 = turn1;
  turn2.insert(turn2.end(), g1.tokens.begin(), g1.tokens.end());
  for (int t : Tokens(6, 5)) turn2.push_back(t);
  std::vector<float> continued;
  GenerateStats g2 = s->Generate(turn2, 4, {}, &continued);
  // Everything but the last reply token (generated, never run) was kept.
  EXPECT_EQ(g2.reused_tokens, int64_t(turn1.size() + g1.tokens.size()) - 1);
  EXPECT_EQ(g2.prefill_tokens, int64_t(turn2.size()) - g2.reused_tokens);

  auto fresh = e->NewSequence();
  std::vector<float> whole;
  GenerateStats g3 = fresh->Generate(turn2, 4, {}, &whole);
  EXPECT_EQ(g3.reused_tokens, 0);
  EXPECT_EQ(g2.tokens, g3.tokens);
  const size_t V = 256;
  ASSERT_EQ(continued.size(), size_t(g2.prefill_tokens) * V);
  std::vector<float> tail(whole.end() - continued.size(), whole.end());
  EXPECT_LE(RelDiff(continued, tail), 1e-5);

  // A prompt that diverges inside the history keeps only the shared prefix.
  std::vector<int> edited(turn2.begin(), turn2.begin() + 4);
  edited.push_back((turn2[4] + 1) % 256);
  GenerateStats g4 = s->Generate(edited, 1);
  EXPECT_EQ(g4.reused_tokens, 4);
  EXPECT_EQ(g4.prefill_tokens, 1);
}

// keep_logits gives the model's logits whatever the sampler does to its copy
// (the repetition penalty edits the logits it samples from).
TEST_F(EngineTest, KeptLogitsAreTheModelsNotTheSamplers) {
  std::unique_ptr<Engine> e = Open("base");
  SamplerOptions so;
  so.temperature = 0.7;
  so.repetition_penalty = 1.5;
  so.seed = 3;
  auto sampled = e->NewSequence(so), greedy = e->NewSequence();
  sampled->keep_logits(true);
  greedy->keep_logits(true);
  const std::vector<int> p = Tokens(6, 8);  // each token of the prompt is penalized
  sampled->Append(p);
  greedy->Append(p);
  e->Step({sampled.get(), greedy.get()});
  EXPECT_LE(RelDiff(sampled->logits(), greedy->logits()), 1e-5);
  std::vector<float> penalized = greedy->logits();
  for (int t : p) penalized[t] = penalized[t] > 0 ? penalized[t] / 1.5f : penalized[t] * 1.5f;
  EXPECT_GT(RelDiff(sampled->logits(), penalized), 1e-4);
}

TEST_F(EngineTest, UnknownDeviceIsRefused) {
  EngineOptions o;
  o.device = "tpu";
  EXPECT_THROW(Open("base", o), Error);
  EXPECT_EQ(DeviceProblem("cpu"), "");
}

}  // namespace
}  // namespace strata
