// karcher: mergekit's karcher_merge_tensors. The Riemannian mean of the
// models' directions on the unit sphere (equal weights, every model alike),
// found by at most max_iter steps of its fixed-point iteration, scaled by the
// mean of their norms. Norms are float32 of the float32 tensor (float64 sums
// here, rounded once); the scalars that torch turns into Python numbers with
// .item() are compared with tol as such; every tensor op rounds to the
// tensor's dtype as torch's do.
#include <cmath>
#include <vector>

#include "merge_internal.h"

namespace strata::merge {

void ComputeKarcher(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out) {
  const size_t K = in.size();
  if (K == 1) {
    for (size_t j = 0; j < n; ++j) out[j] = in[0][j];
    return;
  }
  const double tol = m.Param("tol");
  const double iters = m.Param("max_iter");  // range(max_iter): none when negative
  const int max_iter = iters > 0 ? static_cast<int>(iters) : 0;
  auto norm = [&](const float* x) {  // torch.linalg.norm(x.float())
    return std::sqrt(Rd32(BlockSum(n, [&](size_t j) { return double(x[j]) * x[j]; })));
  };
  WithDType(d, [&]<DType D>() {
    const double alpha = 1.0 / static_cast<double>(K);
    std::vector<float> norms(K);
    std::vector<size_t> valid;  // the models that count, and their weights
    std::vector<double> a;
    for (size_t k = 0; k < K; ++k) {
      norms[k] = norm(in[k]);
      if (!(static_cast<double>(norms[k]) > tol)) continue;  // only with tol < 0 is a zero tensor valid
      valid.push_back(k);
      a.push_back(alpha);
    }
    if (valid.empty()) {
      for (size_t j = 0; j < n; ++j) out[j] = 0.0f;
      return;
    }
    // Model k's unit tensor, computed when read (a zero tensor's is 0): no copy per model.
    auto unit = [&](size_t k, size_t j) { return norms[k] == 0.0f ? 0.0f : RdT<D>(in[k][j] / norms[k]); };
    double alpha_sum = 0.0;  // Python's sum(), then a / alpha_sum
    for (double e : a) alpha_sum += e;
    for (double& e : a) e /= alpha_sum;
    // The first guess: the normalized weighted mean.
    std::vector<float> u(n, 0.0f);
    for (size_t i = 0; i < valid.size(); ++i) {
      const float ai = F32(a[i]);
      ParallelRange(n, [&](size_t jb, size_t je) {
        for (size_t j = jb; j < je; ++j) u[j] = RdT<D>(u[j] + RdT<D>(ai * unit(valid[i], j)));
      });
    }
    const float norm_u = norm(u.data());
    if (static_cast<double>(norm_u) < tol) {
      ParallelRange(n, [&](size_t jb, size_t je) {
        for (size_t j = jb; j < je; ++j) u[j] = unit(valid[0], j);
      });
    } else {
      ParallelRange(n, [&](size_t jb, size_t je) {
        for (size_t j = jb; j < je; ++j) u[j] = RdT<D>(u[j] / norm_u);
      });
    }
    std::vector<float> T(n);
    for (int it = 0; it < max_iter; ++it) {
      std::fill(T.begin(), T.end(), 0.0f);
      for (size_t i = 0; i < valid.size(); ++i) {
        const size_t k = valid[i];
        // torch.dot: products and sum in float32 (float64 here), rounded to D.
        float dot = RdT<D>(Rd32(BlockSum(n, [&](size_t j) { return double(u[j]) * unit(k, j); })));
        dot = dot < -1.0f ? -1.0f : (dot > 1.0f ? 1.0f : dot);
        const float theta = RdT<D>(Acos(dot));
        if (static_cast<double>(theta) < tol) continue;
        const float sin = RdT<D>(Sin(theta));
        const float coef = RdT<D>(F32(a[i]) * RdT<D>(theta / sin));
        ParallelRange(n, [&](size_t jb, size_t je) {
          for (size_t j = jb; j < je; ++j)
            T[j] = RdT<D>(T[j] + RdT<D>(coef * RdT<D>(unit(k, j) - RdT<D>(dot * u[j]))));
        });
      }
      const float norm_t = norm(T.data());
      if (static_cast<double>(norm_t) < tol) break;
      // cos(norm_T) * u: the float32 scalar first, so torch rounds it to D
      // before multiplying; T / norm_T divides by the float32 scalar itself.
      const float c = RdT<D>(Cos(norm_t)), s = RdT<D>(Sin(norm_t));
      ParallelRange(n, [&](size_t jb, size_t je) {
        for (size_t j = jb; j < je; ++j) u[j] = RdT<D>(RdT<D>(c * u[j]) + RdT<D>(s * RdT<D>(T[j] / norm_t)));
      });
      const float un = norm(u.data());
      if (static_cast<double>(un) > tol)
        ParallelRange(n, [&](size_t jb, size_t je) {
          for (size_t j = jb; j < je; ++j) u[j] = RdT<D>(u[j] / un);
        });
    }
    double s = 0.0;  // the weighted sum of every model's norm, zeros too
    for (size_t k = 0; k < K; ++k) s += alpha * static_cast<double>(norms[k]);
    const float sf = F32(s);
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) out[j] = RdT<D>(u[j] * sf);
    });
  });
}

}  // namespace strata::merge
