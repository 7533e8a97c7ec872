// nearswap: mergekit's nearswap_merge. Each element moves from the base to the
// other model by weight clamp(t / max(|base - other|, 1e-6), 0, 1): elements
// where the two are near are swapped, distant ones kept.
#include "merge_internal.h"

namespace strata::merge {

void ComputeNearswap(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out) {
  const float* a = in[m.base];
  const float* b = Others(m, in).at(0);
  const float t = F32(m.Param("t"));
  const float lo = Rd(d, F32(1e-6));  // clamp(min=1e-6): the bound in the tensor's dtype
  WithDType(d, [&]<DType D>() {
    ParallelRange(n, [&](size_t jb, size_t je) {
      for (size_t j = jb; j < je; ++j) {
        float diff = RdT<D>(a[j] - b[j]);
        diff = diff < 0 ? -diff : diff;
        if (diff < lo) diff = lo;
        // t / tensor is tensor.reciprocal() * t in PyTorch.
        float w = RdT<D>(RdT<D>(1.0f / diff) * t);
        w = w < 0.0f ? 0.0f : (w > 1.0f ? 1.0f : w);
        out[j] = RdT<D>(RdT<D>(w * b[j]) + RdT<D>(RdT<D>(1.0f - w) * a[j]));
      }
    });
  });
}

}  // namespace strata::merge
