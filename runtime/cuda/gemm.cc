// cuBLAS GEMMs (see gemm.h).
#include "gemm.h"

#include "cublas_loader.h"

#include <climits>

namespace strata::cuda {

void ThrowCublasError(cublasStatus_t st, const char* stmt, const char* file, int line) {
  const CublasApi& b = Cublas();
  throw Error(std::string("cuBLAS error ") + b.status_name(st) + " (" + b.status_string(st) + ")" +
              WhereIs(stmt, file, line));
}

void Gemm(cublasHandle_t handle, const void* w, DType dt, int64_t N, int64_t K, const void* x, int64_t M, float* y,
          int64_t ldy, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (N > INT_MAX || K > INT_MAX || M > INT_MAX || ldy > INT_MAX)
    throw Error("GEMM of " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) +
                " is too large for cuBLAS' 32-bit sizes");
  cudaDataType_t t;
  switch (dt) {
    case DType::kBF16: t = CUDA_R_16BF; break;
    case DType::kF16: t = CUDA_R_16F; break;
    case DType::kF32: t = CUDA_R_32F; break;
    default: throw Error("GEMM reads BF16, F16 or F32 weights, not " + std::string(DTypeName(dt)));
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: Y^T (N x M, ld ldy) = W (K x N col-major, transposed) * X^T (K x M, ld K).
  CUBLAS_CHECK(Cublas().gemm_ex(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                            static_cast<int>(K), &alpha, w, t, static_cast<int>(K), x, t, static_cast<int>(K), &beta, y,
                            CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace strata::cuda
