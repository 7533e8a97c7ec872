// RMSNorm over rows (CPU: RmsNorm): out[m] = w * (x[m] / sqrt(mean(x[m]^2) + eps)).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "strata/formats/dtype.h"

namespace strata::cuda {

// x, out: (M, D) fp32 device arrays (may alias); w: D elements of `wdt`.
void RmsNorm(const float* x, const void* w, DType wdt, int64_t M, int64_t D, double eps, float* out,
             cudaStream_t stream);

}  // namespace strata::cuda
