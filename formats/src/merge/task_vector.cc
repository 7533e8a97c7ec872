// The task-vector family (mergekit's generalized task arithmetic):
// task_arithmetic, ties, dare_*, breadcrumbs*, della*.
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
    ParallelRange(n, [&](size_t b, size_t e) {
      for (size_t j = b; j < e; ++j) dl[j] = Rd(d, x[j] - base[j]);
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
  ParallelRange(n, [&](size_t b, size_t e) {
    std::vector<float> wd(nm);
    for (size_t j = b; j < e; ++j) {
      for (size_t i = 0; i < nm; ++i) wd[i] = Rd(d, delta[i][j] * w[i]);
      float mixed, div;
      if (consensus) {
        // get_mask(weighted_deltas, "sum"): the sign of the sum elects.
        float s = 0.0f;
        for (float x : wd) s += x;
        const float majority = Rd(d, s) >= 0.0f ? 1.0f : -1.0f;
        float acc = 0.0f, wacc = 0.0f;
        for (size_t i = 0; i < nm; ++i) {
          const float sign = wd[i] > 0.0f ? 1.0f : wd[i] < 0.0f ? -1.0f : 0.0f;  // NaN: 0, never kept
          const float mask = sign == majority ? 1.0f : 0.0f;
          acc += Rd(d, wd[i] * mask);
          wacc += Rd(d, w[i] * mask);
        }
        mixed = Rd(d, acc);
        div = Rd(d, wacc);
        if (div == 0.0f) div = 1.0f;
      } else {
        float acc = 0.0f;
        for (float x : wd) acc += x;
        mixed = Rd(d, acc);
        div = std::fabs(static_cast<double>(wsum)) < 1e-8 ? 1.0f : wsum;
      }
      if (normalize) mixed = Rd(d, mixed / div);
      if (lambda != 1.0) mixed = Rd(d, mixed * lambda32);
      out[j] = Rd(d, base[j] + mixed);
    }
  });
}

}  // namespace strata::merge
