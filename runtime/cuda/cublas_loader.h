// cuBLAS, loaded on first use with dlopen (libcublas.so.13, then
// libcublas.so, then both in the toolkit's library directory known at build
// time), so that a `strata` process that never runs a GEMM on the device (any
// --device cpu run, `strata --help`) neither maps libcublas/libcublasLt nor
// pays their ~200 MiB of startup RSS. Only the handful of entry points the
// backend uses are resolved. Under the CPU kernel emulator (STRATA_CUDA_EMU)
// the table points straight at tests/emu's stand-ins: nothing is dlopen'd.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace strata::cuda {

struct CublasApi {
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType_t, int, const void*, cudaDataType_t, int, const void*, void*,
                            cudaDataType_t, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  const char* (*status_name)(cublasStatus_t) = nullptr;
  const char* (*status_string)(cublasStatus_t) = nullptr;
};

// The loaded table (loaded once, thread-safe). Throws Error saying which
// libraries were tried and why they failed (dlerror) when cuBLAS is missing
// or lacks an entry point.
const CublasApi& Cublas();

}  // namespace strata::cuda
