// Products and gathers of quantized weights (HostTensor::quant != kNone) on
// the CPU; cpu_kernels.cc hands them here. docs/quantization.md, "Running
// quantized weights", has the paths and their numerics.
#pragma once

#include <cstdint>
#include <string_view>

#include "strata/runtime/weights.h"

namespace strata {

// y[m, n] = sum_k w[n, k] * x[m, k] (+ bias[n]) for a quantized w (N, K).
// Few tokens (decode): activations are quantized to 8 bits per block and
// multiplied in integers (AVX-512 VNNI, else AVX2) as llama.cpp does; on the
// portable tier, or for types without an integer kernel (Q5_0, Q5_1), rows
// are dequantized to fp32 in registers. Many tokens: blocks of rows are dequantized to bf16 once per call
// and run through the dense kernels of the tier in use (AMX where present).
void QuantMatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias);

// Row `row` of a quantized table, dequantized to fp32 (cols() floats).
void QuantRowToFloat(const HostTensor& t, int64_t row, float* out);

// The few-token kernels in use: "avx512-vnni integer", "avx2 integer" or
// "fp32 rows" (they follow the CPU kernel tier, STRATA_CPU_KERNELS).
std::string_view QuantKernelsName();

}  // namespace strata
