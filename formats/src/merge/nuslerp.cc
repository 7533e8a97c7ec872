// nuslerp: mergekit's NuSlerpTask. Two models (minus an optional base)
// interpolated on the sphere with t = w1 / (w0 + w1): as one vector
// (nuslerp_flatten, the default), or row by row (column by column with
// nuslerp_row_wise); nearly colinear vectors are interpolated linearly.
// Every op rounds to the tensor's dtype as torch's do.
#include <cmath>
#include <vector>

#include "merge_internal.h"

namespace strata::merge {

namespace {

// The vectors a tensor is cut into: G vectors of L elements; element i of
// vector g is at g * L + i (`last`: along the last dimension) or i * G + g
// (along the first).
struct Vectors {
  size_t G, L;
  bool last;
  size_t At(size_t g, size_t i) const { return last ? g * L + i : i * G + g; }
  size_t Of(size_t j) const { return last ? j / L : j % G; }
};

// sum over each vector of f(j), float64, rounded to float32 once: the same
// whatever the number of threads.
template <class F>
std::vector<float> VectorSums(const Vectors& v, F&& f) {
  std::vector<float> s(v.G);
  if (v.G == 1) {
    s[0] = Rd32(BlockSum(v.L, f));
  } else if (v.last) {
    tbb::parallel_for(size_t{0}, v.G, [&](size_t g) {
      double a = 0;
      for (size_t i = 0; i < v.L; ++i) a += f(g * v.L + i);
      s[g] = Rd32(a);
    });
  } else {  // columns: a row-major pass over ranges of columns
    ParallelRange(v.G, [&](size_t b, size_t e) {
      std::vector<double> a(e - b, 0.0);
      for (size_t i = 0; i < v.L; ++i)
        for (size_t g = b; g < e; ++g) a[g - b] += f(i * v.G + g);
      for (size_t g = b; g < e; ++g) s[g] = Rd32(a[g - b]);
    });
  }
  return s;
}

}  // namespace

void ComputeNuslerp(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                    const std::vector<const float*>& in, size_t n, float* out) {
  std::vector<size_t> idx;  // the two models, in input order
  for (size_t k = 0; k < in.size(); ++k)
    if (static_cast<int>(k) != m.base) idx.push_back(k);
  const double w0 = m.TensorParam(idx[0], "weight"), w1 = m.TensorParam(idx[1], "weight");
  const double t = std::fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  const float t0 = F32(1 - t), t1 = F32(t);
  Vectors v{1, n, true};
  if (m.Param("nuslerp_flatten") == 0.0 && !shape.empty() && n > 0) {
    const bool row_wise = m.Param("nuslerp_row_wise") != 0.0;  // transpose(0, -1)
    v.L = static_cast<size_t>(row_wise ? shape.front() : shape.back());
    v.G = n / v.L;
    v.last = !row_wise || shape.size() == 1;
  }
  if (n == 0) return;
  const float* b = m.base >= 0 ? in[m.base] : nullptr;
  WithDType(d, [&]<DType D>() {
    // The vectors: the models, or their offsets from the base.
    std::vector<float> da, db;
    const float* x = in[idx[0]];
    const float* y = in[idx[1]];
    if (b) {
      da.resize(n);
      db.resize(n);
      ParallelRange(n, [&](size_t jb, size_t je) {
        for (size_t j = jb; j < je; ++j) {
          da[j] = RdT<D>(x[j] - b[j]);
          db[j] = RdT<D>(y[j] - b[j]);
        }
      });
      x = da.data();
      y = db.data();
    }
    // _normalize: x / norm(x).clamp(min=1e-7), the bound in D.
    const float lo = Rd(D, F32(1e-7));
    auto clamp_norm = [&](std::vector<float> s) {
      for (float& e : s) {
        e = RdT<D>(std::sqrt(e));
        if (e < lo) e = lo;
      }
      return s;
    };
    const std::vector<float> nx = clamp_norm(VectorSums(v, [&](size_t j) { return double(x[j]) * x[j]; }));
    const std::vector<float> ny = clamp_norm(VectorSums(v, [&](size_t j) { return double(y[j]) * y[j]; }));
    const std::vector<float> cs = VectorSums(v, [&](size_t j) {
      const size_t g = v.Of(j);
      return static_cast<double>(RdT<D>(RdT<D>(x[j] / nx[g]) * RdT<D>(y[j] / ny[g])));
    });
    // Per vector: linear or the two sines and the divisor.
    struct Coef {
      bool linear;
      float s0, s1, sin;
    };
    std::vector<Coef> c(v.G);
    const float colinear = Rd(D, F32(1e-8));
    for (size_t g = 0; g < v.G; ++g) {
      float cos = RdT<D>(cs[g]);
      cos = cos < -1.0f ? -1.0f : (cos > 1.0f ? 1.0f : cos);
      const float theta = RdT<D>(Acos(cos));
      const float sin = RdT<D>(Sin(theta));
      c[g].linear = std::fabs(sin) < colinear;
      c[g].s0 = RdT<D>(Sin(RdT<D>(t0 * theta)));
      c[g].s1 = RdT<D>(Sin(RdT<D>(t1 * theta)));
      c[g].sin = sin;
    }
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        const Coef& k = c[v.Of(j)];
        float r = k.linear ? RdT<D>(RdT<D>(t0 * x[j]) + RdT<D>(t1 * y[j]))
                           : RdT<D>(RdT<D>(RdT<D>(k.s0 * x[j]) + RdT<D>(k.s1 * y[j])) / k.sin);
        out[j] = b ? RdT<D>(b[j] + r) : r;
      }
    });
  });
}

}  // namespace strata::merge
