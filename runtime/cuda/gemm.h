// Prefill GEMMs through cuBLAS: Y (M, N) = X (M, K) . W (N, K)^T, weights and
// inputs in the weight dtype (BF16/F16/F32), fp32 output and compute. cuBLAS
// is dlopen'd on first use (cublas_loader.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda_check.h"
#include "strata/formats/dtype.h"

namespace strata::cuda {

[[noreturn]] void ThrowCublasError(cublasStatus_t st, const char* stmt, const char* file, int line);

}  // namespace strata::cuda

#define CUBLAS_CHECK(stmt)                                                            \
  do {                                                                                \
    const cublasStatus_t strata_cublas_st_ = (stmt);                                  \
    if (strata_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::strata::cuda::ThrowCublasError(strata_cublas_st_, #stmt, __FILE__, __LINE__); \
  } while (0)

namespace strata::cuda {

// y[m * ldy + n] = (accumulate ? y[m * ldy + n] : 0) + sum_k w[n * K + k] * x[m * K + k].
// w, x: device arrays of `dt`; y: fp32 with row stride ldy >= N.
void Gemm(cublasHandle_t handle, const void* w, DType dt, int64_t N, int64_t K, const void* x, int64_t M, float* y,
          int64_t ldy, bool accumulate);

}  // namespace strata::cuda
