// Sampling: greedy, temperature, top-k, top-p and repetition penalty, with
// expectations worked out by hand from HF generate()'s definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "strata/runtime/sampler.h"

namespace strata {
namespace {

TEST(Sampler, GreedyIsArgmax) {
  Sampler s({});
  std::vector<float> l = {0.1f, 2.5f, -1.0f, 2.4f};
  EXPECT_EQ(s.Next(l, {}), 1);
}

TEST(Sampler, TopKOneIsArgmaxAtAnyTemperature) {
  Sampler s({.temperature = 5.0, .top_k = 1, .seed = 3});
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l = {0.1f, 2.5f, -1.0f, 2.4f};
    EXPECT_EQ(s.Next(l, {}), 1);
  }
}

TEST(Sampler, TemperatureOneFollowsSoftmax) {
  // logits [0, ln 3]: p(1) = 3/4.
  Sampler s({.temperature = 1.0, .seed = 42});
  int ones = 0;
  const int n = 8000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = {0.0f, static_cast<float>(std::log(3.0))};
    ones += s.Next(l, {});
  }
  EXPECT_NEAR(ones / double(n), 0.75, 0.02);
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  // probs 0.6, 0.3, 0.1: top_p 0.5 keeps only the first; top_p 0.8 the first two.
  auto logits = [] { return std::vector<float>{std::log(0.6f), std::log(0.3f), std::log(0.1f)}; };
  Sampler a({.temperature = 1.0, .top_p = 0.5, .seed = 1});
  for (int i = 0; i < 200; ++i) {
    auto l = logits();
    EXPECT_EQ(a.Next(l, {}), 0);
  }
  Sampler b({.temperature = 1.0, .top_p = 0.8, .seed = 1});
  int seen2 = 0;
  for (int i = 0; i < 2000; ++i) {
    auto l = logits();
    int t = b.Next(l, {});
    EXPECT_NE(t, 2);
    seen2 += t == 1;
  }
  EXPECT_NEAR(seen2 / 2000.0, 1.0 / 3.0, 0.04);  // 0.3 / (0.6 + 0.3)
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  Sampler s({.repetition_penalty = 2.0});
  std::vector<float> l = {2.0f, 1.9f, -1.0f};
  EXPECT_EQ(s.Next(l, {0, 0, 2}), 1);  // 2.0 / 2 = 1.0 < 1.9
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[2], -2.0f);
  EXPECT_FLOAT_EQ(l[1], 1.9f);
}

TEST(Sampler, SameSeedSameSequence) {
  auto run = [](uint64_t seed) {
    Sampler s({.temperature = 0.8, .top_k = 5, .top_p = 0.9, .seed = seed});
    std::vector<int> out;
    for (int i = 0; i < 30; ++i) {
      std::vector<float> l = {0.5f, 0.4f, 0.3f, 0.2f, 0.1f, 0.0f};
      out.push_back(s.Next(l, out));
    }
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

// Out-of-range options are refused by name with the valid range, never run:
// temperature -1 used to act as greedy, NaN anything at all.
TEST(SamplerOptionsProblem, DefaultsAndEdgesOfTheRangesAreValid) {
  EXPECT_EQ(SamplerOptionsProblem({}), "");
  EXPECT_EQ(SamplerOptionsProblem({.temperature = 0, .top_k = 0, .top_p = 1, .repetition_penalty = 1}), "");
  EXPECT_EQ(SamplerOptionsProblem({.temperature = 100, .top_k = 1, .top_p = 1e-9, .repetition_penalty = 1e-9}), "");
}

TEST(SamplerOptionsProblem, EachOutOfRangeValueIsNamedWithItsRange) {
  const double nan = std::nan(""), inf = INFINITY;
  struct Case {
    SamplerOptions o;
    std::string message;
  };
  const Case cases[] = {
      {{.temperature = -1}, "temperature must be a finite number >= 0 (0: greedy), got -1"},
      {{.temperature = nan}, "temperature must be a finite number >= 0 (0: greedy), got nan"},
      {{.temperature = inf}, "temperature must be a finite number >= 0 (0: greedy), got inf"},
      {{.top_k = -1}, "top-k must be an integer >= 0 (0: off), got -1"},
      {{.top_p = 2}, "top-p must be in (0, 1] (1: off), got 2"},
      {{.top_p = -1}, "top-p must be in (0, 1] (1: off), got -1"},
      {{.top_p = 0}, "top-p must be in (0, 1] (1: off), got 0"},
      {{.top_p = nan}, "top-p must be in (0, 1] (1: off), got nan"},
      {{.repetition_penalty = 0}, "repetition-penalty must be a finite number > 0 (1: off), got 0"},
      {{.repetition_penalty = -1}, "repetition-penalty must be a finite number > 0 (1: off), got -1"},
      {{.repetition_penalty = inf}, "repetition-penalty must be a finite number > 0 (1: off), got inf"},
  };
  for (const Case& c : cases) EXPECT_EQ(SamplerOptionsProblem(c.o), c.message);
}

}  // namespace
}  // namespace strata
