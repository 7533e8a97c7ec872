// Products and gathers of quantized weights (HostTensor::quant != kNone) on
// the CPU; cpu_kernels.cc hands them here. docs/quantization.md, "Running
// quantized weights", has the paths and their numerics.
#pragma once

#include <cstdint>

#include "strata/runtime/weights.h"

namespace strata {

// y[m, n] = sum_k w[n, k] * x[m, k] (+ bias[n]) for a quantized w (N, K).
// Few tokens (decode): activations are quantized to 8 bits per block and
// multiplied in integers (AVX-512 VNNI) as llama.cpp does; without VNNI, or
// for types without an integer kernel, rows are dequantized to fp32 in
// registers. Many tokens: blocks of rows are dequantized to bf16 once per call
// and run through the dense kernels of the tier in use (AMX where present).
void QuantMatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias);

// Row `row` of a quantized table, dequantized to fp32 (cols() floats).
void QuantRowToFloat(const HostTensor& t, int64_t row, float* out);

// True when the integer (VNNI) kernels are in use for few-token products.
bool QuantIntegerKernels();

}  // namespace strata
