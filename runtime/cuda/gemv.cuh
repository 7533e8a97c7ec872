// Batch-1 decode GEMV: y[n] (+)= sum_k w[n, k] * x[k] (+ bias[n]), weights
// BF16/F16/F32 read with 16-byte vector loads, fp32 accumulation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "strata/formats/dtype.h"

namespace strata::cuda {

// w: (N, K) row-major device array of `wdt`; x: K fp32; y: N fp32 (not
// aliasing x). With `accumulate`, adds to y instead of overwriting it. bias:
// null or N elements of `bdt`. Any K (a scalar path serves K or pointers that
// do not allow 16-byte loads).
void Gemv(const void* w, DType wdt, int64_t N, int64_t K, const float* x, float* y, bool accumulate,
          const void* bias, DType bdt, cudaStream_t stream);

}  // namespace strata::cuda
