// Quantized weights on the CPU: integer dot products of GGML blocks with
// 8-bit activations (AVX-512 VNNI, 256-bit vectors), a dequantizing fp32
// fallback, and bf16 dequantization in row blocks for many-token products.
#include "cpu_quant.h"

#include <cpuid.h>
#include <immintrin.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

#include "strata/formats/dtype.h"
#include "strata/formats/quant.h"
#include "strata/runtime/cpu_kernels.h"


namespace strata {
namespace {

constexpr int64_t kFewTokens = 16;  // up to this many tokens a product runs on quantized rows

bool CpuHasVnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
const bool kHasVnni = CpuHasVnni();

// AMX-INT8: CPUID.(7, 0):EDX bit 25 (the tile state itself is granted with
// AMX-BF16's, by the amx-bf16 tier, cpu_kernels.cc).
bool CpuHasAmxInt8() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 25) & 1);
}
const bool kHasAmxInt8 = CpuHasAmxInt8();



// The few-token kernels the CPU tier in use allows: VNNI from the avx512
// tier up when the CPU has it, else AVX2's from the avx2 tier up (the same
// integers, two instructions where VNNI has one), else fp32 rows.
enum QuantKernelSet { kFloatKernels, kAvx2Kernels, kVnniKernels };
QuantKernelSet QuantKernels() {
  const std::string_view k = CpuKernelsName();
  if (k == "portable") return kFloatKernels;
  if (k != "avx2" && kHasVnni) return kVnniKernels;
  return kAvx2Kernels;
}

// Up to this many tokens a product runs on panels, when it has them; beyond,
// on bf16 row blocks (measured on the mistral-7b preset, bench/RESULTS.md:
// Q8_0's panels and the AMX-BF16 blocks break even near 256 tokens; Q4_K
// and Q6_K panels are still ahead at 512).
int64_t PanelMaxTokens(QuantType t) { return t == QuantType::kQ8_0 ? 256 : 512; }

bool HasIntegerKernel(QuantType t) {
  return t == QuantType::kQ8_0 || t == QuantType::kQ4_0 || t == QuantType::kQ4_K || t == QuantType::kQ5_K ||
         t == QuantType::kQ6_K;
}

void QuantizeActivations(const float* x, int64_t K, int block, ActQ8& a) {
  a.q.resize(K);
  a.d.resize(K / block);
  a.bsums.assign(K / 16, 0);
  for (int64_t b = 0; b < K / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0;
    for (int i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127, id = d != 0.0f ? 1.0f / d : 0.0f;
    a.d[b] = d;
    for (int i = 0; i < block; ++i) {
      const int v = static_cast<int>(std::nearbyint(xb[i] * id));
      a.q[b * block + i] = static_cast<int8_t>(std::clamp(v, -127, 127));
    }
  }
  for (int64_t g = 0; g < K / 16; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += a.q[g * 16 + i];
    a.bsums[g] = static_cast<int16_t>(s);
  }
  a.gsums.resize(K / 32);
  for (int64_t g = 0; g < K / 32; ++g) a.gsums[g] = static_cast<int16_t>(a.bsums[2 * g] + a.bsums[2 * g + 1]);
}

// pshufb masks that broadcast 16-bit word g of a 128-bit lane to all its words.
alignas(32) const uint8_t kWordBroadcast[8][32] = {
#define STRATA_W(g) {2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, \
                     2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, \
                     2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1, 2 * g, 2 * g + 1}
    STRATA_W(0), STRATA_W(1), STRATA_W(2), STRATA_W(3), STRATA_W(4), STRATA_W(5), STRATA_W(6), STRATA_W(7),
#undef STRATA_W
};

// Word 2k of a 128-bit lane to every word of the lower lane, word 2k+1 to the upper.
alignas(32) const uint8_t kPairBroadcast[4][32] = {
#define STRATA_P(k) {4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, \
                     4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, \
                     4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,   \
                     4 * k + 2, 4 * k + 3}
    STRATA_P(0), STRATA_P(1), STRATA_P(2), STRATA_P(3),
#undef STRATA_P
};

// VNNI (AVX-512 VL) and AVX2 instances of the same kernels.
namespace vnni {
#define STRATA_QT __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define STRATA_DPBUSD(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define STRATA_DPWSSD(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#include "cpu_quant_dot.inc"
#undef STRATA_QT
#undef STRATA_DPBUSD
#undef STRATA_DPWSSD
}  // namespace vnni

namespace avx2 {
#define STRATA_QT __attribute__((target("avx2,fma,f16c")))
#define STRATA_DPBUSD(acc, u, s) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#define STRATA_DPWSSD(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#include "cpu_quant_dot.inc"
#undef STRATA_QT
#undef STRATA_DPBUSD
#undef STRATA_DPWSSD
}  // namespace avx2

float BiasAt(const HostTensor* bias, int64_t n) {
  if (!bias) return 0.0f;
  float v = 0;
  ConvertElements(bias->dtype, static_cast<const char*>(bias->data) + n * DTypeSize(bias->dtype), DType::kF32, &v, 1);
  return v;
}

// Few tokens through the integer kernels: weights read once, in place (or
// from their panels, 16 rows at a time).
void IntegerProducts(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  const int block = QuantTypeInfo(w.quant).block_elems;
  const bool vnni = QuantKernels() == kVnniKernels;
  const int64_t panels = vnni && w.panels ? N / kPanelRows : 0;
  // AMX tiles take whole tiles of 16 tokens; the tokens after them run on the
  // VNNI panel kernels.
  const int64_t M16 = panels > 0 && CpuRunsAmxPanels() ? M / 16 * 16 : 0;
  std::vector<ActQ8> acts(M);
  // Kept between calls (a fresh one would be fresh pages, zeroed, each time);
  // the workers below use the calling thread's through the reference.
  thread_local std::vector<int8_t> xq_kept;
  std::vector<int8_t>& xq = xq_kept;
  if (xq.size() < static_cast<size_t>(M16 * K)) xq.resize(static_cast<size_t>(M16 * K));
  tbb::parallel_for(int64_t{0}, M, [&](int64_t m) {
    QuantizeActivations(x + m * K, K, block, acts[m]);
    if (m < M16) AmxActivations(acts[m].q.data(), m, K, xq.data());
  });
  const auto dot = vnni ? vnni::DotFor(w.quant) : avx2::DotFor(w.quant);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const uint64_t rb = w.row_bytes();
  // Units of work: panels first, then the rows after them one at a time.
  const int64_t units = panels + (N - panels * kPanelRows);
  tbb::parallel_for(
      tbb::blocked_range<int64_t>(0, units, panels ? 1 : 16),
      [&](const tbb::blocked_range<int64_t>& r) {
        float out[kFewTokens];
        for (int64_t u = r.begin(); u < r.end(); ++u) {
          if (u < panels) {
            float b16[kPanelRows];
            for (int i = 0; i < kPanelRows; ++i) b16[i] = BiasAt(bias, u * kPanelRows + i);
            if (M16) PanelProductsAmx(w, u, acts.data(), xq.data(), M16, y, b16);
            if (M > M16) PanelProducts(w, u, acts.data() + M16, M - M16, y + M16 * N, b16);
            continue;
          }
          const int64_t n = u - panels + panels * kPanelRows;
          const float b = BiasAt(bias, n);
          for (int64_t m0 = 0; m0 < M; m0 += kFewTokens) {  // panels take more tokens than a row kernel
            const int64_t mc = std::min(kFewTokens, M - m0);
            dot(base + n * rb, K, acts.data() + m0, static_cast<int>(mc), out);
            for (int64_t m = 0; m < mc; ++m) y[(m0 + m) * N + n] = out[m] + b;
          }
        }
      },
      tbb::static_partitioner());
}

// Few tokens without an integer kernel: each row dequantized to fp32 once.
void FloatProducts(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, N, 8), [&](const tbb::blocked_range<int64_t>& r) {
    std::vector<float> wf(K);
    for (int64_t n = r.begin(); n < r.end(); ++n) {
      QuantRowToFloat(w, n, wf.data());
      const float b = BiasAt(bias, n);
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = x + m * K;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t k = 0; k < K; ++k) acc[k & 7] += wf[k] * xm[k];
        const float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        y[m * N + n] = s + b;
      }
    }
  });
}

// Many tokens: blocks of rows dequantized to bf16 (about 8 MiB at a time),
// multiplied by the dense kernels, scattered into y.
void BlockProducts(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  const int64_t C = std::clamp<int64_t>((8 << 20) / (2 * K) / 32 * 32, 32, 1024);
  std::vector<uint16_t> wb(static_cast<size_t>(std::min(C, N) * K));
  std::vector<float> yb(static_cast<size_t>(std::min(C, N) * M));
  for (int64_t n0 = 0; n0 < N; n0 += C) {
    const int64_t c = std::min(C, N - n0);
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, c, 4), [&](const tbb::blocked_range<int64_t>& r) {
      std::vector<float> f(K);
      for (int64_t i = r.begin(); i < r.end(); ++i) {
        QuantRowToFloat(w, n0 + i, f.data());
        uint16_t* dst = wb.data() + i * K;
        for (int64_t k = 0; k < K; ++k) dst[k] = FloatToBF16(f[k]);
      }
    });
    HostTensor block;
    block.dtype = DType::kBF16;
    block.shape = {c, K};
    block.data = wb.data();
    HostTensor bias_rows;  // bias[n0, n0 + c), added by the dense kernels
    if (bias) {
      bias_rows = *bias;
      bias_rows.shape = {c};
      bias_rows.data = static_cast<const char*>(bias->data) + n0 * DTypeSize(bias->dtype);
    }
    MatMul(block, x, M, yb.data(), bias ? &bias_rows : nullptr);
    for (int64_t m = 0; m < M; ++m) std::memcpy(y + m * N + n0, yb.data() + m * c, sizeof(float) * c);
  }
}

}  // namespace

bool CpuRunsPanels() { return QuantKernels() == kVnniKernels; }

bool CpuRunsAmxPanels() { return kHasAmxInt8 && CpuRunsPanels() && CpuKernelsName() == "amx-bf16"; }

std::string_view QuantKernelsName() {
  static constexpr std::string_view kNames[] = {"fp32 rows", "avx2 integer", "avx512-vnni integer"};
  if (CpuRunsAmxPanels()) return "avx512-vnni integer, amx-int8 panels";
  return kNames[QuantKernels()];
}

void QuantRowToFloat(const HostTensor& t, int64_t row, float* out) {
  if (t.panels && row < t.rows() / kPanelRows * kPanelRows) {
    // The mapped rows' pages went back when the panels were made.
    thread_local std::vector<uint8_t> bytes;
    bytes.resize(t.row_bytes());
    PanelRowBytes(t, row, bytes.data());
    return DequantizeRow(t.quant, bytes.data(), t.cols(), out);
  }
  DequantizeRow(t.quant, static_cast<const uint8_t*>(t.data) + row * t.row_bytes(), t.cols(), out);
}

void QuantMatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  if (w.panels && QuantKernels() == kVnniKernels && M <= PanelMaxTokens(w.quant)) return IntegerProducts(w, x, M, y, bias);
  if (M > kFewTokens) return BlockProducts(w, x, M, y, bias);
  if (HasIntegerKernel(w.quant) && QuantKernels() != kFloatKernels) return IntegerProducts(w, x, M, y, bias);
  FloatProducts(w, x, M, y, bias);
}

}  // namespace strata
