// model_stock: mergekit's ModelStockMergeTask. The others' mean is pulled
// towards the base by t = N cos / (1 + (N - 1) cos), cos the mean pairwise
// cosine of the others' offsets from the base: over the whole tensor, or per
// row with filter_wise.
#include <cmath>
#include <vector>

#include "merge_internal.h"

namespace strata::merge {

void ComputeModelStock(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                       const std::vector<const float*>& in, size_t n, float* out) {
  const float* w0 = in[m.base];
  const std::vector<const float*> ws = Others(m, in);
  const size_t N = ws.size();
  const bool filter_wise = m.Param("filter_wise") != 0.0;
  // filter_wise: cosines along the last dimension (a 1-D tensor is one row).
  const size_t cols = filter_wise && shape.size() >= 2 ? static_cast<size_t>(shape.back()) : n;
  const size_t rows = cols == 0 ? 0 : n / cols;
  const float lo = Rd(d, F32(1e-6));
  WithDType(d, [&]<DType D>() {
    // Per row: t of the row (as the tensor's dtype).
    std::vector<float> trow(rows);
    auto row_t = [&](size_t r, bool parallel) {
      const size_t off = r * cols;
      auto sum = [&](auto&& f) {
        if (parallel) return Rd32(BlockSum(cols, f));
        double s = 0;
        for (size_t j = 0; j < cols; ++j) s += f(j);
        return Rd32(s);
      };
      std::vector<float> norm(N);
      for (size_t i = 0; i < N; ++i)
        norm[i] = RdT<D>(std::sqrt(static_cast<double>(sum([&](size_t j) {
          const double o = RdT<D>(ws[i][off + j] - w0[off + j]);
          return o * o;
        }))));
      float cos_sum = 0.0f;  // torch.stack(cos).mean(0): a float32 sum, then / count
      size_t pairs = 0;
      for (size_t a = 0; a < N; ++a)
        for (size_t b = a + 1; b < N; ++b, ++pairs) {
          const float dot = RdT<D>(sum([&](size_t j) {
            const float oa = RdT<D>(ws[a][off + j] - w0[off + j]), ob = RdT<D>(ws[b][off + j] - w0[off + j]);
            return static_cast<double>(RdT<D>(oa * ob));
          }));
          float np = RdT<D>(norm[a] * norm[b]);
          if (np < lo) np = lo;
          float c = RdT<D>(dot / np);
          c = c < -1.0f ? -1.0f : (c > 1.0f ? 1.0f : c);
          cos_sum += c;
        }
      const float cos = RdT<D>(cos_sum / static_cast<float>(pairs));
      const float num = RdT<D>(cos * static_cast<float>(N));
      const float den = RdT<D>(RdT<D>(cos * static_cast<float>(N - 1)) + 1.0f);
      trow[r] = RdT<D>(num / den);
    };
    if (rows == 1) {
      row_t(0, true);
    } else {
      tbb::parallel_for(size_t{0}, rows, [&](size_t r) { row_t(r, false); });
    }
    const float fn = static_cast<float>(N);
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        float avg = RdT<D>(0.0f + ws[0][j]);  // Python's sum(ws) starts from 0
        for (size_t i = 1; i < N; ++i) avg = RdT<D>(avg + ws[i][j]);
        avg = RdT<D>(avg / fn);
        const float t = trow[j / cols];
        out[j] = RdT<D>(RdT<D>(t * avg) + RdT<D>(RdT<D>(1.0f - t) * w0[j]));
      }
    });
  });
}

}  // namespace strata::merge
