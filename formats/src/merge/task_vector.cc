// The task-vector family (mergekit's generalized task arithmetic):
// task_arithmetic, ties, dare_*, breadcrumbs*, della*.
#include <algorithm>
#include <cmath>

#include "merge_internal.h"

namespace strata::merge {

void ComputeTaskVector(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                       const std::vector<const float*>& in, size_t n, float* out, const Hash& node) {
  const float* base = in[m.base];
  std::vector<size_t> models;  // the inputs that give a task vector
  for (size_t k = 0; k < in.size(); ++k)
    if (static_cast<int>(k) != m.base) models.push_back(k);
  if (models.empty()) {  // only the base: mergekit returns it
    for (size_t j = 0; j < n; ++j) out[j] = base[j];
    return;
  }
  const size_t nm = models.size();
  // Deltas, each sparsified over the whole tensor when the method says so.
  std::vector<std::vector<float>> delta(nm, std::vector<float>(n));
  for (size_t i = 0; i < nm; ++i) {
    const float* x = in[models[i]];
    float* dl = delta[i].data();
    WithDType(d, [&]<DType D>() {
      ParallelRange(n, [&](size_t b, size_t e) {
        for (size_t j = b; j < e; ++j) dl[j] = RdT<D>(x[j] - base[j]);
      });
    });
    if (m.method->sparsify != Sparsify::kNone) SparsifyDelta(m, models[i], d, shape, dl, n, node);
  }
  std::vector<float> w(nm);
  for (size_t i = 0; i < nm; ++i) w[i] = Rd(d, F32(m.TensorParam(models[i], "weight")));
  float wsum = 0.0f;
  for (float x : w) wsum += x;
  wsum = Rd(d, wsum);
  const bool consensus = m.method->consensus, normalize = m.Param("normalize") != 0.0;
  const double lambda = m.Param("lambda");
  const float lambda32 = F32(lambda);
  WithDType(d, [&]<DType D>() {
    // divisor[divisor.abs() < 1e-8] = 1: torch compares in D, where 1e-8
    // is 0 in float16 (so a float16 zero sum divides by zero, as there).
    const float plain_div = std::fabs(wsum) < RdT<D>(F32(1e-8)) ? 1.0f : wsum;
    ParallelRange(n, [&](size_t b, size_t e) {
      constexpr size_t kBlock = 512;  // elements at a time, so each loop below vectorizes
      std::vector<float> wd(nm * kBlock);
      float s[kBlock], acc[kBlock], wacc[kBlock], mixed[kBlock];
      for (size_t j0 = b; j0 < e; j0 += kBlock) {
        const size_t len = std::min(kBlock, e - j0);
        for (size_t i = 0; i < nm; ++i) {
          const float* dl = delta[i].data() + j0;
          float* o = wd.data() + i * kBlock;
          const float wi = w[i];
          for (size_t j = 0; j < len; ++j) o[j] = RdT<D>(dl[j] * wi);
        }
        for (size_t j = 0; j < len; ++j) s[j] = acc[j] = wacc[j] = 0.0f;
        if (consensus) {
          // get_mask(weighted_deltas, "sum"): the sign of the sum elects (>= 0: +).
          for (size_t i = 0; i < nm; ++i)
            for (size_t j = 0; j < len; ++j) s[j] += wd[i * kBlock + j];
          for (size_t i = 0; i < nm; ++i) {
            const float* x = wd.data() + i * kBlock;
            const float wi = w[i];
            for (size_t j = 0; j < len; ++j) {
              const float majority = RdT<D>(s[j]) >= 0.0f ? 1.0f : -1.0f;
              const float sign = x[j] > 0.0f ? 1.0f : x[j] < 0.0f ? -1.0f : 0.0f;  // NaN: 0, never kept
              const float mask = sign == majority ? 1.0f : 0.0f;
              acc[j] += RdT<D>(x[j] * mask);
              wacc[j] += RdT<D>(wi * mask);
            }
          }
          for (size_t j = 0; j < len; ++j) {
            mixed[j] = RdT<D>(acc[j]);
            const float div = RdT<D>(wacc[j]);
            wacc[j] = div == 0.0f ? 1.0f : div;
          }
        } else {
          for (size_t i = 0; i < nm; ++i)
            for (size_t j = 0; j < len; ++j) acc[j] += wd[i * kBlock + j];
          for (size_t j = 0; j < len; ++j) {
            mixed[j] = RdT<D>(acc[j]);
            wacc[j] = plain_div;
          }
        }
        if (normalize)
          for (size_t j = 0; j < len; ++j) mixed[j] = RdT<D>(mixed[j] / wacc[j]);
        if (lambda != 1.0)
          for (size_t j = 0; j < len; ++j) mixed[j] = RdT<D>(mixed[j] * lambda32);
        const float* bs = base + j0;
        float* o = out + j0;
        for (size_t j = 0; j < len; ++j) o[j] = RdT<D>(bs[j] + mixed[j]);
      }
    });
  });
}

}  // namespace strata::merge
