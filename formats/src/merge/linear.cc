// linear: mergekit's LinearMergeTask, (weights * tensors).sum(0) / weights.sum(0).
#include "merge_internal.h"

namespace strata::merge {

void ComputeLinear(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out) {
  const size_t k = in.size();
  std::vector<float> w(k);
  float wsum = 0.0f;
  for (size_t i = 0; i < k; ++i) {
    w[i] = Rd(d, F32(m.TensorParam(i, "weight")));  // torch.tensor(weights, dtype=D)
    wsum += w[i];
  }
  wsum = Rd(d, wsum);
  const bool normalize = m.Param("normalize") != 0.0;
  ParallelRange(n, [&](size_t b, size_t e) {
    for (size_t j = b; j < e; ++j) {
      float acc = 0.0f;  // sum(dim=0): float32 from +0, in input order
      for (size_t i = 0; i < k; ++i) acc += Rd(d, w[i] * in[i][j]);
      float r = Rd(d, acc);
      if (normalize) r = Rd(d, r / wsum);
      out[j] = r;
    }
  });
}

}  // namespace strata::merge
