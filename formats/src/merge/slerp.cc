// slerp: mergekit's numpy slerp in float32 (norms and dot product here in
// float64), falling back to linear interpolation for nearly parallel tensors.
#include <cmath>

#include "merge_internal.h"

namespace strata::merge {

void ComputeSlerp(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out) {
  if (in.size() == 1) {  // one model: the tensor itself
    for (size_t j = 0; j < n; ++j) out[j] = in[0][j];
    return;
  }
  const float* v0 = in[m.base];
  const float* v1 = in[m.base == 0 ? 1 : 0];
  const double t = m.Param("t");
  // float64 sums in fixed blocks on every core (BlockSum: the same on any thread count).
  const double s0 = BlockSum(n, [&](size_t j) { return static_cast<double>(v0[j]) * v0[j]; });
  const double s1 = BlockSum(n, [&](size_t j) { return static_cast<double>(v1[j]) * v1[j]; });
  const float n0 = static_cast<float>(std::sqrt(s0)), n1 = static_cast<float>(std::sqrt(s1));
  const double eps = 1e-8;
  const double dot = BlockSum(n, [&](size_t j) {
    const float a = n0 > eps ? v0[j] / n0 : v0[j];
    const float b = n1 > eps ? v1[j] / n1 : v1[j];
    return static_cast<double>(a) * b;
  });
  const float dotf = static_cast<float>(dot);
  float c0, c1;
  if (std::fabs(dotf) > 0.9995f) {
    c0 = F32(1 - t);
    c1 = F32(t);
  } else {
    const double theta0 = std::acos(static_cast<double>(dotf));
    const double sin0 = std::sin(theta0), theta_t = theta0 * t;
    c0 = F32(std::sin(theta0 - theta_t) / sin0);
    c1 = F32(std::sin(theta_t) / sin0);
  }
  WithDType(d, [&]<DType D>() {
    ParallelRange(n, [&](size_t b, size_t e) {
      for (size_t j = b; j < e; ++j) {
        const float p = c0 * v0[j], q = c1 * v1[j];
        out[j] = RdT<D>(p + q);
      }
    });
  });
}

}  // namespace strata::merge
