// mergekit's sparsify(): magnitude (TIES), random (DARE), magnitude_outliers
// (breadcrumbs), della_magprune (DELLA), with its l1 rescale. Ties among equal
// magnitudes and the random draws follow docs/merge_methods.md.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <tbb/parallel_reduce.h>

#include "merge_internal.h"
#include "strata/formats/error.h"

namespace strata::merge {

namespace {

// |x| as an integer key that sorts as the float magnitude (NaN above inf, as
// torch sorts it).
inline uint32_t MagKey(float x) { return dtype_internal::FloatBits(x) & 0x7FFFFFFFu; }

// The key at position `rank` (0-based) of the keys of x sorted ascending:
// a two-pass radix select over 16-bit digits, histograms built on every
// core; no copy of the keys.
uint32_t KthKey(const float* x, size_t n, size_t rank) {
  uint32_t prefix = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const int shift = pass == 0 ? 16 : 0;
    std::vector<uint64_t> hist = tbb::parallel_reduce(
        tbb::blocked_range<size_t>(0, n, 1 << 16), std::vector<uint64_t>(),
        [&](const tbb::blocked_range<size_t>& r, std::vector<uint64_t> h) {
          if (h.empty()) h.assign(65536, 0);
          for (size_t j = r.begin(); j < r.end(); ++j) {
            const uint32_t k = MagKey(x[j]);
            if (pass == 0 || (k >> 16) == prefix) ++h[(k >> shift) & 0xFFFFu];
          }
          return h;
        },
        [](std::vector<uint64_t> a, const std::vector<uint64_t>& b) {
          if (a.empty()) return b;
          for (size_t i = 0; i < b.size(); ++i) a[i] += b[i];
          return a;
        });
    size_t bin = 0;
    for (; bin < 65535 && rank >= hist[bin]; ++bin) rank -= hist[bin];
    prefix = pass == 0 ? static_cast<uint32_t>(bin) : (prefix << 16) | static_cast<uint32_t>(bin);
  }
  return prefix;
}

// masked = delta * mask, then the l1 rescale, all in dtype w.
void MaskAndRescale(DType w, bool rescale, float* delta, const std::vector<uint8_t>& keep, size_t n) {
  double before = 0, after = 0;
  for (size_t j = 0; j < n; ++j) {
    const float x = delta[j];
    before += std::fabs(static_cast<double>(x));
    delta[j] = Rd(w, x * (keep[j] ? 1.0f : 0.0f));
    after += std::fabs(static_cast<double>(delta[j]));
  }
  if (!rescale) return;
  const float b = Rd(w, static_cast<float>(before)), a = Rd(w, static_cast<float>(after));
  if (b < 1e-7f || a < 1e-7f) return;
  const float ratio = Rd(w, b / a);
  for (size_t j = 0; j < n; ++j) delta[j] = Rd(w, delta[j] * ratio);
}

// Keeps the elements at sorted positions [lo, hi) of a stable ascending sort
// by magnitude (equal magnitudes in index order).
std::vector<uint8_t> KeepSortedRange(const float* x, size_t n, size_t lo, size_t hi) {
  std::vector<uint8_t> keep(n, 0);
  if (lo >= hi) return keep;
  // The keys at sorted positions lo and hi-1, and how many equal to each
  // come before the range's ends.
  const uint32_t klo = KthKey(x, n, lo), khi = KthKey(x, n, hi - 1);
  size_t below_lo = 0, below_hi = 0;  // elements strictly below klo / at most below khi
  for (size_t j = 0; j < n; ++j) {
    const uint32_t k = MagKey(x[j]);
    below_lo += k < klo;
    below_hi += k < khi;
  }
  // Among the elements equal to klo, the first (lo - below_lo) in index
  // order sort before position lo; among those equal to khi, the first
  // (hi - below_hi) sort before position hi.
  size_t skip_lo = lo - below_lo, take_hi = hi - below_hi;
  for (size_t j = 0; j < n; ++j) {
    const uint32_t k = MagKey(x[j]);
    bool in = k > klo && k < khi;
    if (k == klo && k == khi) {
      // lo and hi-1 fall on one run of equal keys: skip some, take some.
      if (skip_lo > 0) {
        --skip_lo;
        --take_hi;
      } else if (take_hi > 0) {
        --take_hi;
        in = true;
      }
    } else if (k == klo) {
      if (skip_lo > 0) --skip_lo; else in = true;
    } else if (k == khi) {
      if (take_hi > 0) {
        --take_hi;
        in = true;
      }
    }
    keep[j] = in;
  }
  return keep;
}

}  // namespace

std::vector<uint8_t> KeepLargest(const float* x, size_t n, size_t k) {
  std::vector<uint8_t> keep(n, 0);
  if (k == 0) return keep;
  k = std::min(k, n);
  // The k largest: sorted descending, stable = ascending positions [n - k, n)
  // with ties among equal magnitudes taken in index order from the top.
  const uint32_t kth = KthKey(x, n, n - k);
  size_t above = 0;
  for (size_t j = 0; j < n; ++j) above += MagKey(x[j]) > kth;
  size_t ties = k - above;
  for (size_t j = 0; j < n; ++j) {
    const uint32_t key = MagKey(x[j]);
    keep[j] = key > kth;
    if (key == kth && ties > 0) {
      keep[j] = 1;
      --ties;
    }
  }
  return keep;
}

namespace {

[[noreturn]] void Refuse(const Hash& node, const std::string& what) {
  throw Error("tensor node " + node.Hex() + " (merge): " + what);
}

}  // namespace

void SparsifyDelta(const MergeSpec& m, size_t k, DType d, const std::vector<int64_t>& shape, float* delta,
                   size_t n, const Hash& node) {
  const double density = m.TensorParam(k, "density");
  if (density >= 1.0) return;
  const bool rescale = m.Param("rescale") != 0.0;
  switch (m.method->sparsify) {
    case Sparsify::kNone:
      return;
    case Sparsify::kMagnitude: {
      const size_t keep_n = static_cast<size_t>(density * static_cast<double>(n));
      if (keep_n == 0 || density <= 0)
        Refuse(node, "density " + std::to_string(density) + " keeps no element of a tensor of " + std::to_string(n));
      std::vector<uint8_t> keep = KeepLargest(delta, n, keep_n);
      MaskAndRescale(d, rescale, delta, keep, n);
      return;
    }
    case Sparsify::kMagnitudeOutliers: {
      const double gamma = m.TensorParam(k, "gamma");
      const int64_t num = static_cast<int64_t>(n);
      const int64_t target = static_cast<int64_t>(density * static_cast<double>(n));
      int64_t n_top = static_cast<int64_t>(gamma * static_cast<double>(n));
      int64_t n_bot = num - target - n_top;
      if (n_bot < 0) {
        n_top += n_bot;
        n_bot = 0;
      }
      // mergekit keeps indices[n_bot:-n_top]: nothing at all when n_top is 0.
      const size_t hi = n_top == 0 ? 0 : static_cast<size_t>(num - n_top);
      MaskAndRescale(d, rescale, delta, KeepSortedRange(delta, n, static_cast<size_t>(n_bot), hi), n);
      return;
    }
    case Sparsify::kRandom: {
      const DType w = WorkDType(d);
      const double p = Rd(w, F32(density));
      const Draws draws(*m.seed, m.salt, k);
      std::vector<uint8_t> keep(n);
      for (size_t j = 0; j < n; ++j) keep[j] = draws.U(j) < p;
      for (size_t j = 0; j < n; ++j) delta[j] = Rd(w, delta[j]);
      MaskAndRescale(w, rescale, delta, keep, n);
      for (size_t j = 0; j < n; ++j) delta[j] = Rd(d, delta[j]);
      return;
    }
    case Sparsify::kDellaMagprune: {
      const double eps = m.TensorParam(k, "epsilon");
      if (density <= 0) {
        std::fill(delta, delta + n, 0.0f);
        return;
      }
      if (density + eps >= 1 || density - eps <= 0)
        Refuse(node, "epsilon " + std::to_string(eps) + " with density " + std::to_string(density) +
                         ": density +/- epsilon must lie in (0, 1)");
      const DType w = WorkDType(d);
      const size_t cols = shape.size() >= 2 ? static_cast<size_t>(shape.back()) : n;
      const size_t rows = cols == 0 ? 0 : n / cols;
      const Draws draws(*m.seed, m.salt, k);
      std::vector<uint8_t> keep(n);
      const float lo = F32(density - eps), eps32 = F32(eps);
      ParallelRange(rows, [&](size_t rb, size_t re) {
        std::vector<size_t> order(cols);
        std::vector<float> r(cols);
        for (size_t row = rb; row < re; ++row) {
          const float* x = delta + row * cols;
          std::iota(order.begin(), order.end(), size_t{0});
          std::stable_sort(order.begin(), order.end(),
                           [&](size_t a, size_t b) { return MagKey(x[a]) < MagKey(x[b]); });
          for (size_t pos = 0; pos < cols; ++pos) r[order[pos]] = Rd(w, Rd(w, static_cast<float>(pos)) + 1.0f);
          const float mn = *std::min_element(r.begin(), r.end()), mx = *std::max_element(r.begin(), r.end());
          const float span = Rd(w, mx - mn);
          for (size_t c = 0; c < cols; ++c) {
            float rn = Rd(w, Rd(w, r[c] - mn) / span);
            if (!std::isnan(rn)) rn = std::clamp(rn, 0.0f, 1.0f);
            const float p = Rd(w, lo + Rd(w, Rd(w, rn * 2.0f) * eps32));
            const size_t i = row * cols + c;
            keep[i] = draws.U(i) < static_cast<double>(p);  // NaN: never
          }
        }
      });
      for (size_t j = 0; j < n; ++j) delta[j] = Rd(w, delta[j]);
      MaskAndRescale(w, rescale, delta, keep, n);
      for (size_t j = 0; j < n; ++j) delta[j] = Rd(d, delta[j]);
      return;
    }
  }
}

}  // namespace strata::merge
