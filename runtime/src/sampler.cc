// Token sampling with HF generate()'s logits processors, in its order:
// repetition penalty, temperature, top-k, top-p.
#include "strata/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>

namespace strata {

std::string SamplerOptionsProblem(const SamplerOptions& o) {
  auto got = [](double v) {
    std::ostringstream s;
    s << ", got " << v;
    return s.str();
  };
  // Negated comparisons so that NaN fails them too.
  if (!(std::isfinite(o.temperature) && o.temperature >= 0))
    return "temperature must be a finite number >= 0 (0: greedy)" + got(o.temperature);
  if (o.top_k < 0) return "top-k must be an integer >= 0 (0: off)" + got(o.top_k);
  if (!(o.top_p > 0 && o.top_p <= 1)) return "top-p must be in (0, 1] (1: off)" + got(o.top_p);
  if (!(std::isfinite(o.repetition_penalty) && o.repetition_penalty > 0))
    return "repetition-penalty must be a finite number > 0 (1: off)" + got(o.repetition_penalty);
  return "";
}

int Sampler::Next(std::vector<float>& logits, const std::vector<int>& seen) {
  if (o_.repetition_penalty != 1.0) {
    const float p = static_cast<float>(o_.repetition_penalty);
    for (int t : std::set<int>(seen.begin(), seen.end())) {
      if (t < 0 || t >= static_cast<int>(logits.size())) continue;
      logits[t] = logits[t] > 0 ? logits[t] / p : logits[t] * p;
    }
  }
  if (o_.temperature <= 0)
    return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  size_t keep = idx.size();
  if (o_.top_k > 0) keep = std::min(keep, static_cast<size_t>(o_.top_k));
  const double inv_t = 1.0 / o_.temperature;
  std::vector<double> probs(keep);
  double mx = logits[idx[0]] * inv_t, sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += probs[i] = std::exp(logits[idx[i]] * inv_t - mx);
  for (double& p : probs) p /= sum;
  if (o_.top_p < 1.0) {  // smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    size_t n = 0;
    while (n < keep && (n == 0 || cum < o_.top_p)) cum += probs[n++];
    keep = n;
    sum = cum;
    for (size_t i = 0; i < keep; ++i) probs[i] /= sum;
  }
  double r = std::uniform_real_distribution<double>(0, 1)(rng_), acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (r < acc) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace strata
