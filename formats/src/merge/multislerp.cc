// multislerp: mergekit's easy_define multislerp. The models (minus an
// optional base) are projected on the unit sphere, averaged with their
// weights in the tangent space at their weighted mean direction, mapped back
// and scaled by the weighted mean of their norms. Every op rounds to the
// tensor's dtype as torch's do; a sum over the models is float32 in model
// order, a sum over the tensor float64 rounded once (docs/merge_methods.md).
#include <cmath>
#include <vector>

#include "merge_internal.h"
#include "strata/formats/error.h"

namespace strata::merge {

void ComputeMultislerp(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out,
                       const Hash& node) {
  std::vector<size_t> idx;  // the models, in input order
  for (size_t k = 0; k < in.size(); ++k)
    if (static_cast<int>(k) != m.base) idx.push_back(k);
  const size_t K = idx.size();
  if (K == 1) {  // one model besides the base: that model's tensor
    for (size_t j = 0; j < n; ++j) out[j] = in[idx[0]][j];
    return;
  }
  const float* b = m.base >= 0 ? in[m.base] : nullptr;
  WithDType(d, [&]<DType D>() {
    const float eps = F32(m.Param("eps"));
    const float eps_d = RdT<D>(eps);  // a Python number added to or compared with a D tensor
    // torch.tensor(weight, dtype=D), normalized by its sum.
    std::vector<float> w(K);
    for (size_t k = 0; k < K; ++k) w[k] = Rd(D, F32(m.TensorParam(idx[k], "weight")));
    if (m.Param("normalize_weights") != 0.0) {
      float s = 0.0f;
      for (float e : w) s += e;
      s = RdT<D>(s);
      for (float& e : w) e = RdT<D>(e / s);
    }
    // The models (or their offsets from the base), computed when read: no copy per model.
    auto v = [&](size_t k, size_t j) { return b ? RdT<D>(in[idx[k]][j] - b[j]) : in[idx[k]][j]; };
    auto norm = [&](auto&& f) { return RdT<D>(std::sqrt(Rd32(BlockSum(n, f)))); };
    std::vector<float> nrm(K), den(K);
    for (size_t k = 0; k < K; ++k) {
      nrm[k] = norm([&](size_t j) {
        const double e = v(k, j);
        return e * e;
      });
      den[k] = RdT<D>(nrm[k] + eps_d);
    }
    auto unit = [&](size_t k, size_t j) { return RdT<D>(v(k, j) / den[k]); };
    // The weighted mean of the unit vectors, and its norm.
    std::vector<float> mean(n);
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        float s = 0.0f;
        for (size_t k = 0; k < K; ++k) s += RdT<D>(unit(k, j) * w[k]);
        mean[j] = RdT<D>(s);
      }
    });
    const float mean_norm = norm([&](size_t j) { return double(mean[j]) * mean[j]; });
    if (mean_norm < eps_d) {
      if (K != 2)
        throw Error("tensor node " + node.Hex() + " (multislerp): the weighted mean of the " + std::to_string(K) +
                    " models' directions is zero (antipodal tensors whose weights cancel out), which mergekit "
                    "refuses too; change the weights");
      ParallelRange(n, [&](size_t jb, size_t je) {  // two models: linear interpolation
        for (size_t j = jb; j < je; ++j) {
          const float r = RdT<D>(RdT<D>(v(0, j) * w[0]) + RdT<D>(v(1, j) * w[1]));
          out[j] = b ? RdT<D>(r + b[j]) : r;
        }
      });
      return;
    }
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) mean[j] = RdT<D>(mean[j] / mean_norm);
    });
    // Project to the tangent space at the mean, and average there.
    std::vector<float> dots(K);
    for (size_t k = 0; k < K; ++k)
      dots[k] = RdT<D>(Rd32(BlockSum(n, [&](size_t j) { return double(RdT<D>(unit(k, j) * mean[j])); })));
    float* tr = out;  // the tangent-space average, then the result in place
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        float s = 0.0f;
        for (size_t k = 0; k < K; ++k) {
          const float tan = RdT<D>(unit(k, j) - RdT<D>(dots[k] * mean[j]));
          s += RdT<D>(tan * w[k]);
        }
        tr[j] = RdT<D>(s);
      }
    });
    // The exponential map back to the sphere, scaled by the mean norm.
    const float tn = RdT<D>(norm([&](size_t j) { return double(tr[j]) * tr[j]; }) + eps_d);
    const float cos_tn = RdT<D>(Cos(tn)), sin_tn = RdT<D>(RdT<D>(Sin(tn)) / tn);
    float avg = 0.0f;
    for (size_t k = 0; k < K; ++k) avg += RdT<D>(nrm[k] * w[k]);
    avg = RdT<D>(avg);
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        const float r = RdT<D>(RdT<D>(RdT<D>(mean[j] * cos_tn) + RdT<D>(tr[j] * sin_tn)) * avg);
        out[j] = b ? RdT<D>(r + b[j]) : r;
      }
    });
  });
}

}  // namespace strata::merge
