// arcee_fusion: mergekit's ArceeFusionMergeTask. Each element of the other
// model's offset from the base is kept where its importance |p - b| times the
// row's KL divergence KL(softmax p || softmax b) reaches median + 1.5 IQR of
// all importances, else dropped. The importances round to the tensor's dtype
// D as torch's ops do; the result is float32 (torch promotes the D offset
// times the float32 mask). mergekit takes the quantiles from a random sample
// of 1e6 elements of a larger tensor; strata from every element (the
// deterministic rule of docs/plans.md, the same answer up to 1e6).
#include <algorithm>
#include <cmath>
#include <vector>

#include "merge_internal.h"

namespace strata::merge {

namespace {

// torch.sort's order: NaN after everything.
bool SortLess(float a, float b) { return a < b || (!std::isnan(a) && std::isnan(b)); }

}  // namespace

void ComputeArceeFusion(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                        const std::vector<const float*>& in, size_t n, float* out) {
  const float* b = in[m.base];
  const float* p = in[m.base == 0 ? 1 : 0];
  if (n == 0) return;
  const size_t cols = shape.empty() ? n : static_cast<size_t>(shape.back());
  const size_t rows = n / cols;
  std::vector<float> imp(n);
  WithDType(d, [&]<DType D>() {
    const float eps = RdT<D>(F32(1e-8));  // softmax(x) + 1e-8: the number rounded to D
    // softmax along the last dimension, in float32: exp(x - max) * (1 / sum), rounded to D.
    auto softmax = [&](const float* x, size_t off, std::vector<float>& o) {
      float mx = x[off];
      for (size_t j = 1; j < cols; ++j) mx = std::max(mx, x[off + j]);
      double s = 0;
      for (size_t j = 0; j < cols; ++j) {
        o[j] = Exp(x[off + j] - mx);
        s += o[j];
      }
      const float r = 1.0f / Rd32(s);
      for (size_t j = 0; j < cols; ++j) o[j] = RdT<D>(RdT<D>(o[j] * r) + eps);
    };
    auto row = [&](size_t r) {
      const size_t off = r * cols;
      std::vector<float> sp(cols), sq(cols);
      softmax(p, off, sp);
      softmax(b, off, sq);
      double kl = 0;
      for (size_t j = 0; j < cols; ++j) kl += RdT<D>(sp[j] * RdT<D>(Log(RdT<D>(sp[j] / sq[j]))));
      const float k = RdT<D>(Rd32(kl));
      for (size_t j = 0; j < cols; ++j) imp[off + j] = RdT<D>(std::fabs(RdT<D>(p[off + j] - b[off + j])) * k);
    };
    tbb::parallel_for(size_t{0}, rows, row);
    // The quantiles: sorted[int(q * (n - 1))], the index as torch's float32 product.
    std::vector<float> sorted(imp);
    auto quantile = [&](float q) {
      const size_t i = std::min(n - 1, static_cast<size_t>(q * static_cast<float>(n - 1)));
      std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(i), sorted.end(), SortLess);
      return sorted[i];
    };
    const float median = quantile(0.5f), q1 = quantile(0.25f), q3 = quantile(0.75f);
    const float threshold = RdT<D>(median + RdT<D>(F32(1.5) * RdT<D>(q3 - q1)));
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        const float delta = RdT<D>(p[j] - b[j]);
        out[j] = b[j] + delta * (imp[j] >= threshold ? 1.0f : 0.0f);
      }
    });
  });
}

}  // namespace strata::merge
