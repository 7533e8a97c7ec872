// Element-wise dtype work on the device with PyTorch's arithmetic (the device
// twins of formats/dtype.cc ConvertElements and ScaleElements), bit for bit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "strata/formats/dtype.h"

namespace strata::cuda {

// dst[i] = src[i] converted from `from` to `to` (through float; F64 through
// float too, as torch). from == to is a device-to-device copy. BF16, F16, F32
// and F64 only. src and dst must not overlap unless from == to and src == dst.
void CastOnDevice(DType from, const void* src, DType to, void* dst, uint64_t n, cudaStream_t stream);

// dst[i] = src[i] * factor as torch computes `tensor * python_float`: in float
// with the factor rounded to float (double for F64), then rounded to `t`.
// src == dst is allowed.
void ScaleOnDevice(DType t, const void* src, void* dst, uint64_t n, double factor, cudaStream_t stream);

}  // namespace strata::cuda
