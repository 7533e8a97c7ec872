// ram: mergekit's ram_merge (Reinforced Agent Merging). Task vectors below
// epsilon in magnitude are dropped; an element changed by one model takes that
// model's change, one changed by several the mean of their changes.
#include <vector>

#include "merge_internal.h"

namespace strata::merge {

void ComputeRam(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out) {
  const float* base = in[m.base];
  const std::vector<const float*> xs = Others(m, in);
  const size_t k = xs.size();
  const float eps = Rd(d, F32(m.Param("epsilon")));  // |tv| > epsilon compares in the tensor's dtype
  WithDType(d, [&]<DType D>() {
    ParallelRange(n, [&](size_t jb, size_t je) {
      std::vector<float> tv(k);
      for (size_t j = jb; j < je; ++j) {
        int count = 0;
        for (size_t i = 0; i < k; ++i) {
          const float x = RdT<D>(xs[i][j] - base[j]);
          const bool nz = (x < 0 ? -x : x) > eps;
          tv[i] = x * (nz ? 1.0f : 0.0f);  // tv * mask: a dropped change is a signed zero
          count += nz;
        }
        const float unique = count == 1 ? 1.0f : 0.0f, overlap = count > 1 ? 1.0f : 0.0f;
        const float div = static_cast<float>(count < 1 ? 1 : count);
        float acc = 0.0f;  // sum(dim=0): float32 from +0, in input order
        for (size_t i = 0; i < k; ++i) acc += RdT<D>(tv[i] * unique + RdT<D>(tv[i] * overlap / div));
        out[j] = RdT<D>(base[j] + RdT<D>(acc));
      }
    });
  });
}

}  // namespace strata::merge
