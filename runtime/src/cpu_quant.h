// Products and gathers of quantized weights (HostTensor::quant != kNone) on
// the CPU; cpu_kernels.cc hands them here. docs/quantization.md, "Running
// quantized weights", has the paths and their numerics.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

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

// --- Panels (cpu_quant_panels.cc; docs/quantization.md, "Panels") ---
// Rows of a Q8_0, Q4_K or Q6_K tensor interleaved 16 at a time, for the
// AVX-512 VNNI few-token kernels. HostTensor::panels holds rows() / 16 of
// them (the first rows() / 16 * 16 rows); the rest run on the row kernels.
constexpr int kPanelRows = 16;
bool HasPanelKernel(QuantType t);
// Bytes of one panel of 16 rows of `K` elements.
uint64_t PanelBytes(QuantType t, int64_t K);
// Panels [first, first + count) of `w` (quantized rows at w.data) into `out`,
// which holds rows() / 16 panels of PanelBytes each.
void PackPanels(const HostTensor& w, int64_t first, int64_t count, uint8_t* out);
// Quantized row `row` (< rows() / 16 * 16) of `w`, from its panels: the
// bytes it has at w.data, so reads need not touch the mapped rows again.
void PanelRowBytes(const HostTensor& w, int64_t row, uint8_t* out);
// Whether the few-token kernels in use run panels (the VNNI set): the
// weight store packs them only then.
bool CpuRunsPanels();

// One token's activations quantized to int8 in blocks of 32 (legacy types)
// or 256 (K types): x ~= d[b] * q[i].
struct ActQ8 {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int16_t> bsums;  // sums of q over each 16
  std::vector<int16_t> gsums;  // sums of q over each 32 (|sum| <= 4064)
};
// y[m * N + 16 * panel + r] = row (16 * panel + r) . token m + bias16[r], for
// the M tokens `acts` and r < 16 (N = w.rows()).
void PanelProducts(const HostTensor& w, int64_t panel, const ActQ8* acts, int64_t M, float* y, const float* bias16);

// The same products through AMX-INT8 tiles, bit for bit those of
// PanelProducts, for M a multiple of 16 tokens: xq holds their int8
// activations laid out by AmxActivations. Only where CpuRunsAmxPanels().
void PanelProductsAmx(const HostTensor& w, int64_t panel, const ActQ8* acts, const int8_t* xq, int64_t M,
                      float* y, const float* bias16);
// Whether products of 16 or more tokens over panels run on AMX-INT8 (16 at
// a time; the rest on PanelProducts): the CPU kernel tier is amx-bf16 (AMX
// granted to this process) and the CPU has AMX-INT8.
bool CpuRunsAmxPanels();
// Token m's int8 activations `q` (K) into xq as A tiles: per tile of 16
// tokens (16 K bytes) and per 32 elements of K, 16 tokens x 32 bytes, so an
// A tile is 512 contiguous bytes.
void AmxActivations(const int8_t* q, int64_t m, int64_t K, int8_t* xq);

// The tile configuration this thread has loaded (AMX keeps one per thread):
// 0 none, 1 the bf16 products' (cpu_kernels.cc), 2 the int8 panels'. Each
// kernel loads its own when it finds another.
extern thread_local int tls_tile_config;

}  // namespace strata
