// Error checking for every CUDA runtime call: a failure throws strata::Error
// with the failing statement's text and its file:line (cuBLAS: gemm.h).
#pragma once

#include <cuda_runtime.h>

#include "strata/formats/error.h"

namespace strata::cuda {

[[noreturn]] void ThrowCudaError(cudaError_t err, const char* stmt, const char* file, int line);

}  // namespace strata::cuda

#define CUDA_CHECK(stmt)                                                          \
  do {                                                                            \
    const cudaError_t strata_cuda_err_ = (stmt);                                  \
    if (strata_cuda_err_ != cudaSuccess)                                          \
      ::strata::cuda::ThrowCudaError(strata_cuda_err_, #stmt, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch (<<<...>>> returns nothing): a bad configuration is
// reported by cudaGetLastError; `what` names the kernel.
#define CUDA_CHECK_LAUNCH(what)                                                                  \
  do {                                                                                           \
    const cudaError_t strata_cuda_err_ = cudaGetLastError();                                     \
    if (strata_cuda_err_ != cudaSuccess)                                                         \
      ::strata::cuda::ThrowCudaError(strata_cuda_err_, "launch of " what, __FILE__, __LINE__);   \
  } while (0)

namespace strata::cuda {
// " in `stmt` at runtime/cuda/file.cc:line", for other libraries' checks.
std::string WhereIs(const char* stmt, const char* file, int line);
}  // namespace strata::cuda
