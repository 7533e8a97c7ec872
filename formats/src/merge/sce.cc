// sce: mergekit's sce_merge (select, calculate, erase). With select_topk < 1
// only the elements where the models' task vectors vary most are kept; each
// model is weighted by the mean square of its task vector; elements whose
// sign disagrees with the sum's are erased.
#include <cmath>
#include <vector>

#include "merge_internal.h"

namespace strata::merge {

void ComputeSce(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out) {
  const float* base = in[m.base];
  const std::vector<const float*> xs = Others(m, in);
  const size_t K = xs.size();
  const double topk = m.Param("select_topk");
  WithDType(d, [&]<DType D>() {
    auto tv = [&](size_t i, size_t j) { return RdT<D>(xs[i][j] - base[j]); };
    // select: keep the int(count_nonzero(var) * topk) elements of largest
    // variance across the models (population variance, in the dtype).
    std::vector<uint8_t> keep;
    if (topk < 1) {
      keep.assign(n, 0);
      if (topk > 0) {
        std::vector<float> var(n);
        ParallelRange(n, [&](size_t jb, size_t je) {
          for (size_t j = jb; j < je; ++j) {
            double mean = 0;
            for (size_t i = 0; i < K; ++i) mean += tv(i, j);
            mean /= static_cast<double>(K);
            double v = 0;
            for (size_t i = 0; i < K; ++i) v += (tv(i, j) - mean) * (tv(i, j) - mean);
            var[j] = RdT<D>(Rd32(v / static_cast<double>(K)));
          }
        });
        size_t nonzero = 0;
        for (float v : var) nonzero += v != 0.0f;
        // int(nonzero * topk): a float32 product
        const auto k = static_cast<size_t>(static_cast<float>(nonzero) * F32(topk));
        keep = KeepLargest(var.data(), n, k);
      }
    }
    auto tvm = [&](size_t i, size_t j) { return keep.empty() ? tv(i, j) : tv(i, j) * (keep[j] ? 1.0f : 0.0f); };
    // calculate: weights mean(tv^2) / sum of them (or 1/K when that is ~0)
    std::vector<float> w(K);
    float wsum = 0.0f;
    for (size_t i = 0; i < K; ++i) {
      const double s = BlockSum(n, [&](size_t j) {
        const float x = tvm(i, j);
        return static_cast<double>(RdT<D>(x * x));
      });
      w[i] = RdT<D>(Rd32(s) / static_cast<float>(n));
      wsum += w[i];
    }
    wsum = RdT<D>(wsum);  // torch.sum(weights).item()
    for (size_t i = 0; i < K; ++i)
      w[i] = std::fabs(static_cast<double>(wsum)) < 1e-6 ? RdT<D>(1.0f / static_cast<float>(K)) : RdT<D>(w[i] / wsum);
    // erase: keep each model's element where its sign is the sum's
    const float lo = RdT<D>(F32(1e-6));
    ParallelRange(n, [&](size_t jb, size_t je) {
      std::vector<float> x(K);
      for (size_t j = jb; j < je; ++j) {
        float s = 0.0f;
        for (size_t i = 0; i < K; ++i) {
          x[i] = tvm(i, j);
          s += x[i];
        }
        const float majority = RdT<D>(s) >= 0.0f ? 1.0f : -1.0f;
        float merged = 0.0f, den = 0.0f;
        for (size_t i = 0; i < K; ++i) {
          const float sign = x[i] > 0 ? 1.0f : (x[i] < 0 ? -1.0f : 0.0f);
          const float ew = w[i] * (sign == majority ? 1.0f : 0.0f);
          merged += RdT<D>(x[i] * ew);
          den += ew;
        }
        den = RdT<D>(den);
        if (den < lo) den = lo;
        out[j] = RdT<D>(base[j] + RdT<D>(RdT<D>(merged) / den));
      }
    });
  });
}

}  // namespace strata::merge
