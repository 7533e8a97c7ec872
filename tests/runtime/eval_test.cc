// Perplexity() (eval.h) against the same method worked out in the test from
// each chunk run alone through Sequence::Generate, on the trained fixture.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "strata/compiler/compile.h"
#include <unistd.h>

#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/runtime/eval.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

const std::string kFixture = std::string(STRATA_SOURCE_DIR) + "/tests/fixtures/kjv";

class EvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("strata-eval-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    store_ = std::make_unique<Store>((dir_ / "store").string());
    CompileOptions o;
    o.name = "kjv";
    variant_ = Compile(*store_, ParsePlan("models:\n  - model: \"" + kFixture + "\"\nmerge_method: passthrough\n", "kjv.yml"), o)
                   .variant;
    tok_ = LoadVariantTokenizer(*store_, variant_);
    ASSERT_TRUE(tok_);
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  fs::path dir_;
  std::unique_ptr<Store> store_;
  Hash variant_;
  std::optional<VariantTokenizer> tok_;
};

TEST_F(EvalTest, EqualsEachChunkRunAlone) {
  const Tokenizer& t = tok_->tokenizer;
  const std::string text = ReadFile(kFixture + "/heldout.txt").substr(0, 4000);
  const std::vector<int> ids = PerplexityTokens(t, text);
  ASSERT_EQ(ids[0], 0);
  PerplexityOptions po;
  po.ctx = 66;  // odd halves: first = 33, 32 scored per chunk
  po.parallel = 3;
  po.chunks = 5;  // 2 groups, the second short
  int64_t progress_calls = 0, last_done = 0;
  po.on_progress = [&](int64_t done, int64_t total) {
    ++progress_calls;
    last_done = done;
    EXPECT_EQ(total, 5);
  };
  std::unique_ptr<Engine> e = Engine::Open(*store_, variant_, PerplexityEngineOptions({}, po));
  const PerplexityResult r = Perplexity(*e, t, ids, po);
  EXPECT_EQ(progress_calls, 2);
  EXPECT_EQ(last_done, 5);
  EXPECT_EQ(r.chunks, 5);
  EXPECT_EQ(r.scored_tokens, 5 * 32);
  EXPECT_EQ(r.text_tokens, static_cast<int64_t>(ids.size()));

  // The same, by hand: each chunk alone, BOS first, every position's logits.
  const int64_t V = e->config().vocab;
  double nll = 0;
  int64_t bytes = 0;
  for (int c = 0; c < 5; ++c) {
    std::vector<int> chunk(ids.begin() + c * 66, ids.begin() + (c + 1) * 66);
    chunk[0] = t.bos_id();
    std::vector<float> logits;
    e->NewSequence()->Generate(chunk, 0, {}, &logits);
    ASSERT_EQ(static_cast<int64_t>(logits.size()), 66 * V);
    for (int i = 33; i < 65; ++i) {
      const float* l = logits.data() + i * V;
      double mx = l[0], sum = 0;
      for (int64_t k = 1; k < V; ++k) mx = std::max(mx, static_cast<double>(l[k]));
      for (int64_t k = 0; k < V; ++k) sum += std::exp(l[k] - mx);
      nll += mx + std::log(sum) - l[chunk[i + 1]];
      bytes += static_cast<int64_t>(t.TokenBytes(chunk[i + 1]).size());
    }
  }
  EXPECT_NEAR(r.nll_sum, nll, 1e-4 * nll);
  EXPECT_EQ(r.scored_bytes, bytes);
  EXPECT_NEAR(r.ppl(), std::exp(nll / 160), 1e-4 * r.ppl());
  EXPECT_NEAR(r.bits_per_byte(), nll / bytes / std::log(2.0), 1e-4);
  EXPECT_GT(r.ppl_error(), 0);
  EXPECT_LT(r.ppl_error(), r.ppl());
}

TEST_F(EvalTest, RefusesWhatItCannotScore) {
  std::unique_ptr<Engine> e = Engine::Open(*store_, variant_, PerplexityEngineOptions({}, PerplexityOptions{}));
  const std::vector<int> few(1023, 5);
  PerplexityOptions po;
  try {
    Perplexity(*e, tok_->tokenizer, few, po);
    FAIL() << "1023 tokens at ctx 512 should be refused";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("needs at least 1024"), std::string::npos) << err.what();
  }
  EXPECT_NE(PerplexityProblem(5000, 1024, 512).find("past the model's context of 512"), std::string::npos);
  EXPECT_NE(PerplexityProblem(5000, 3, 512).find("too small"), std::string::npos);
  EXPECT_EQ(PerplexityProblem(1024, 512, 512), "");
}

TEST(Eval, ErrorBarIsLlamaPerplexitys) {
  PerplexityResult r;
  r.scored_tokens = 4;
  r.nll_sum = 1 + 2 + 3 + 6;
  r.nll2_sum = 1 + 4 + 9 + 36;
  // mean 3, variance (50/4 - 9) = 3.5; error = ppl * sqrt(3.5 / 3).
  EXPECT_DOUBLE_EQ(r.ppl(), std::exp(3.0));
  EXPECT_DOUBLE_EQ(r.ppl_error(), std::exp(3.0) * std::sqrt(3.5 / 3));
}

TEST(Eval, FirstInvalidUtf8) {
  EXPECT_EQ(FirstInvalidUtf8("plain ascii"), -1);
  EXPECT_EQ(FirstInvalidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), -1);
  EXPECT_EQ(FirstInvalidUtf8("ab\xff"), 2);
  EXPECT_EQ(FirstInvalidUtf8("ab\xc3"), 2);            // truncated
  EXPECT_EQ(FirstInvalidUtf8("x\xc0\xaf"), 1);         // overlong
  EXPECT_EQ(FirstInvalidUtf8("\xed\xa0\x80 surrogate"), 0);
}

}  // namespace
}  // namespace strata
