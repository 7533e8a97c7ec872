// linear: mergekit's LinearMergeTask, (weights * tensors).sum(0) / weights.sum(0).
#include <algorithm>

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
  WithDType(d, [&]<DType D>() {
    ParallelRange(n, [&](size_t b, size_t e) {
      constexpr size_t kBlock = 512;  // elements at a time, so each loop below vectorizes
      float acc[kBlock];
      for (size_t j0 = b; j0 < e; j0 += kBlock) {
        const size_t len = std::min(kBlock, e - j0);
        for (size_t j = 0; j < len; ++j) acc[j] = 0.0f;  // sum(dim=0): float32 from +0, in input order
        for (size_t i = 0; i < k; ++i) {
          const float* x = in[i] + j0;
          const float wi = w[i];
          for (size_t j = 0; j < len; ++j) acc[j] += RdT<D>(wi * x[j]);
        }
        float* o = out + j0;
        if (normalize) {
          for (size_t j = 0; j < len; ++j) o[j] = RdT<D>(RdT<D>(acc[j]) / wsum);
        } else {
          for (size_t j = 0; j < len; ++j) o[j] = RdT<D>(acc[j]);
        }
      }
    });
  });
}

}  // namespace strata::merge
