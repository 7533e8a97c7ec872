// Element-wise kernels of the layer: SwiGLU (CPU: SwiGlu), residual add and
// bias add, and a row gather.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "strata/formats/dtype.h"

namespace strata::cuda {

// out[m, i] = silu(gu[m, i]) * gu[m, I + i] for i < I: gu is (M, ld) fp32
// holding gate in columns [0, I) and up in [I, 2I); out is (M, I) fp32.
void SwiGlu(const float* gu, int64_t ld, int64_t M, int64_t I, float* out, cudaStream_t stream);

// x[i] += y[i] for i < n (fp32).
void ResidualAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

// y[m, n] += bias[n] for m < M, n < N: y is (M, ld) fp32, bias N elements of `bdt`.
void AddBias(float* y, int64_t ld, int64_t M, int64_t N, const void* bias, DType bdt, cudaStream_t stream);

// out[r, j] = src[rows[r] * ld + j] for r < R, j < D: the rows of a batch's
// activations whose logits are wanted, packed (rows: R device ints).
void GatherRows(const float* src, int64_t ld, const int32_t* rows, int64_t R, int64_t D, float* out,
                cudaStream_t stream);

}  // namespace strata::cuda
