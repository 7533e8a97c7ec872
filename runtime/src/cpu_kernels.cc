// CPU kernels (see cpu_kernels.h and docs/runtime.md, "CPU kernels").
#include "strata/runtime/cpu_kernels.h"

#include "cpu_quant.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <tbb/parallel_for.h>
#include <unistd.h>
#include <tbb/partitioner.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// GCC 12's AVX-512 headers build some results from _mm512_undefined_ps(),
// which -W(maybe-)uninitialized reports at every inlined use.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define STRATA_AVX2 __attribute__((target("avx2,fma,f16c")))
#define STRATA_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define STRATA_AVX512BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define STRATA_AMX \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#define STRATA_INLINE inline __attribute__((always_inline))

namespace strata {

thread_local int tls_tile_config = 0;

namespace {

// ---------------------------------------------------------------------------
// Tiers: chosen once at start-up (the best this CPU has, or lower when
// STRATA_CPU_KERNELS asks), changed only by SetCpuKernelsForTesting.

enum Tier : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kAmxBf16 = 4 };
constexpr int kTiers = 5;
constexpr std::string_view kTierNames[] = {"portable", "avx2", "avx512", "avx512-bf16", "amx-bf16"};

// AMX: the CPU has AMX-TILE and AMX-BF16 (CPUID.7.0:EDX bits 24, 22) and the
// kernel grants this process the tile data state (once, for every thread).
bool AmxUsable() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 22) & 1) || !((d >> 24) & 1)) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    std::fprintf(stderr, "strata: the kernel refused AMX tile state (arch_prctl); using avx512-bf16\n");
    return false;
  }
  return true;
}

int BestTier() {
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")))
    return kPortable;
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")))
    return kAvx2;
  if (!__builtin_cpu_supports("avx512bf16")) return kAvx512;
  if (!AmxUsable()) return kAvx512Bf16;
  return kAmxBf16;
}

const int kBestTier = BestTier();

int TierByName(std::string_view name) {
  for (int t = 0; t < kTiers; ++t)
    if (kTierNames[t] == name) return t;
  return -1;
}

int InitialTier() {
  const char* env = std::getenv("STRATA_CPU_KERNELS");
  if (!env || !*env) return kBestTier;
  const int t = TierByName(env);
  if (t < 0) {
    std::fprintf(stderr,
                 "strata: STRATA_CPU_KERNELS=%s is not one of portable, avx2, avx512, avx512-bf16, amx-bf16; "
                 "using %s\n",
                 env, kTierNames[kBestTier].data());
    return kBestTier;
  }
  if (t > kBestTier) {
    std::fprintf(stderr, "strata: this CPU has no %s kernels (STRATA_CPU_KERNELS); using %s\n", env,
                 kTierNames[kBestTier].data());
    return kBestTier;
  }
  return t;
}

std::atomic<int> g_tier{InitialTier()};
// STRATA_BATCH_INVARIANT=1: AMX for every M, one token too (SetBatchInvariant).
std::atomic<bool> g_amx_all{[] {
  const char* e = std::getenv("STRATA_BATCH_INVARIANT");
  return e && *e && std::string_view(e) != "0";
}()};

int CurrentTier() { return g_tier.load(std::memory_order_relaxed); }

float ElementAsFloat(const HostTensor& t, int64_t i) {
  float v = 0;
  ConvertElements(t.dtype, static_cast<const char*>(t.data) + i * DTypeSize(t.dtype), DType::kF32, &v, 1);
  return v;
}

// ---------------------------------------------------------------------------
// MatMul. Every tier computes output (m, n) as a dot product of weight row n
// with token row m in lanes (16 on AVX-512, 8 on AVX2 and portable) over K in
// order, then the same fixed reduction tree of the lanes, then + bias: the
// instructions that produce one output do not depend on M, on where the row
// falls in its tile, nor on which thread runs the tile. The tiles (4 weight
// rows x MR tokens of accumulators) only decide what is reused from registers.

constexpr int kNR = 4;  // weight rows per micro-tile (one reduction of 4 lanes-vectors)

struct Product {
  const char* w = nullptr;
  DType dt = DType::kF32;
  int64_t N = 0;
  float* y = nullptr;
  const HostTensor* bias = nullptr;
};

struct Gemm {
  const float* x = nullptr;  // (M, K) fp32
  int64_t M = 0, K = 0;
  const uint16_t* xb = nullptr;  // avx512-bf16: x rounded to bf16, (M, kp), zero padded
  int64_t kp = 0;
  const uint32_t* xv = nullptr;  // amx-bf16: x rounded to bf16 in the VNNI layout (PackVnni)
};

// Bias of weight rows [n0, n0+rows) into b[4] (zeros past rows).
void Bias4(const HostTensor* bias, int64_t n0, int rows, float* b) {
  for (int i = 0; i < kNR; ++i) b[i] = 0;
  if (bias)
    for (int i = 0; i < rows; ++i) b[i] = ElementAsFloat(*bias, n0 + i);
}

// ---- portable ----

// Lane j of the accumulator holds the products of k = j (mod 8); the lanes
// are summed as ((0+4)+(2+6)) + ((1+5)+(3+7)), the AVX2 tree.
float Reduce8(const float* a) {
  const float h0 = a[0] + a[4], h1 = a[1] + a[5], h2 = a[2] + a[6], h3 = a[3] + a[7];
  return (h0 + h2) + (h1 + h3);
}

void PanelPortable(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  const int64_t K = g.K, N = p.N;
  const size_t es = DTypeSize(p.dt);
  thread_local std::vector<float> wf;
  wf.resize(K);
  for (int64_t n = n0; n < n1; ++n) {
    ConvertElements(p.dt, p.w + n * K * es, DType::kF32, wf.data(), K);
    const float b = p.bias ? ElementAsFloat(*p.bias, n) : 0.0f;
    for (int64_t m = m0; m < m1; ++m) {
      const float* xm = g.x + m * K;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t k = 0; k < K; ++k) acc[k & 7] += wf[k] * xm[k];
      const float s = Reduce8(acc);
      p.y[m * N + n] = p.bias ? s + b : s;
    }
  }
}

// ---- AVX2 / FMA ----

// [sum(a), sum(b), sum(c), sum(d)], each as Reduce8.
STRATA_AVX2 STRATA_INLINE __m128 Reduce4x8(__m256 a, __m256 b, __m256 c, __m256 d) {
  // 256 -> 128: lanes j and j+4.
  __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  __m128 b4 = _mm_add_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
  __m128 c4 = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
  __m128 d4 = _mm_add_ps(_mm256_castps256_ps128(d), _mm256_extractf128_ps(d, 1));
  // (h0, h1, h2, h3) -> (h0 + h2) + (h1 + h3): unpack pairs (0,2) and (1,3).
  __m128 ab_lo = _mm_unpacklo_ps(a4, b4), ab_hi = _mm_unpackhi_ps(a4, b4);  // a0 b0 a1 b1 | a2 b2 a3 b3
  __m128 cd_lo = _mm_unpacklo_ps(c4, d4), cd_hi = _mm_unpackhi_ps(c4, d4);
  __m128 ab = _mm_add_ps(ab_lo, ab_hi);  // a0+a2, b0+b2, a1+a3, b1+b3
  __m128 cd = _mm_add_ps(cd_lo, cd_hi);
  __m128 e = _mm_movelh_ps(ab, cd);  // a02 b02 c02 d02
  __m128 o = _mm_movehl_ps(cd, ab);  // a13 b13 c13 d13
  return _mm_add_ps(e, o);
}

template <DType DT>
STRATA_AVX2 STRATA_INLINE __m256 LoadW8(const void* w, int64_t k) {
  if constexpr (DT == DType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + k);
  } else if constexpr (DT == DType::kBF16) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + k)));
  }
}

// acc[r][m] += w[r] . x[m] over K (8 lanes), tail from zero-padded copies.
template <DType DT, int MR>
STRATA_AVX2 void MicroAvx2(const void* const* w, const float* x, int64_t K, int rows, const float* bias, float* y,
                           int64_t ldy) {
  constexpr size_t es = DT == DType::kF32 ? 4 : 2;
  __m256 acc[kNR][MR];
  for (auto& r : acc)
    for (auto& a : r) a = _mm256_setzero_ps();
  const int64_t kf = K & ~int64_t{7};
  for (int64_t k = 0; k < kf; k += 8) {
    __m256 xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = _mm256_loadu_ps(x + m * K + k);
    for (int r = 0; r < kNR; ++r) {
      const __m256 wv = LoadW8<DT>(w[r], k);
      for (int m = 0; m < MR; ++m) acc[r][m] = _mm256_fmadd_ps(wv, xv[m], acc[r][m]);
    }
  }
  if (kf < K) {
    const int t = static_cast<int>(K - kf);
    alignas(32) float xt[MR][8] = {};
    alignas(32) char wt[kNR][8 * es] = {};
    for (int m = 0; m < MR; ++m) std::memcpy(xt[m], x + m * K + kf, t * 4);
    for (int r = 0; r < kNR; ++r) std::memcpy(wt[r], static_cast<const char*>(w[r]) + kf * es, t * es);
    for (int r = 0; r < kNR; ++r) {
      const __m256 wv = LoadW8<DT>(wt[r], 0);
      for (int m = 0; m < MR; ++m) acc[r][m] = _mm256_fmadd_ps(wv, _mm256_load_ps(xt[m]), acc[r][m]);
    }
  }
  const __m128 b = bias ? _mm_loadu_ps(bias) : _mm_setzero_ps();
  for (int m = 0; m < MR; ++m) {
    __m128 s = Reduce4x8(acc[0][m], acc[1][m], acc[2][m], acc[3][m]);
    if (bias) s = _mm_add_ps(s, b);
    alignas(16) float o[4];
    _mm_store_ps(o, s);
    for (int r = 0; r < rows; ++r) y[m * ldy + r] = o[r];
  }
}

template <DType DT>
void PanelAvx2T(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  constexpr int MR = 3;
  const int64_t K = g.K;
  const size_t es = DTypeSize(DT);
  float b[kNR];
  for (int64_t m = m0; m < m1; m += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, m1 - m));
    for (int64_t n = n0; n < n1; n += kNR) {
      const int rows = static_cast<int>(std::min<int64_t>(kNR, n1 - n));
      const void* w[kNR];
      for (int r = 0; r < kNR; ++r) w[r] = p.w + (n + std::min(r, rows - 1)) * K * es;
      Bias4(p.bias, n, rows, b);
      const float* bp = p.bias ? b : nullptr;
      float* y = p.y + m * p.N + n;
      const float* x = g.x + m * K;
      switch (mr) {
        case 3: MicroAvx2<DT, 3>(w, x, K, rows, bp, y, p.N); break;
        case 2: MicroAvx2<DT, 2>(w, x, K, rows, bp, y, p.N); break;
        default: MicroAvx2<DT, 1>(w, x, K, rows, bp, y, p.N); break;
      }
    }
  }
}

void PanelAvx2(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  switch (p.dt) {
    case DType::kF32: return PanelAvx2T<DType::kF32>(g, p, n0, n1, m0, m1);
    case DType::kBF16: return PanelAvx2T<DType::kBF16>(g, p, n0, n1, m0, m1);
    default: return PanelAvx2T<DType::kF16>(g, p, n0, n1, m0, m1);
  }
}

// ---- AVX-512F (fp32 FMA) ----

// [sum(a), sum(b), sum(c), sum(d)] of 16 lanes each: lanes j and j+8, then
// j and j+4, then j and j+2, then j and j+1 (the same tree for every slot).
STRATA_AVX512 STRATA_INLINE __m128 Reduce4x16(__m512 a, __m512 b, __m512 c, __m512 d) {
  // 512 -> 256 (blocks 0+2, 1+3), two vectors per register.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  // 256 -> 128 (blocks 0+1): [a, b, c, d] one 128-bit block each.
  const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  // 128 -> 64 -> 32 within each block.
  const __m512 v2 = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));   // lanes j + (j^2)
  const __m512 v1 = _mm512_add_ps(v2, _mm512_permute_ps(v2, 0xB1));  // lanes j + (j^1)
  const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, v1));
}

STRATA_AVX512 STRATA_INLINE void Store4(float* y, __m128 s, const float* bias, int rows) {
  if (bias) s = _mm_add_ps(s, _mm_loadu_ps(bias));
  _mm_mask_storeu_ps(y, static_cast<__mmask8>((1u << rows) - 1), s);
}

template <DType DT>
STRATA_AVX512 STRATA_INLINE __m512 LoadW16(const void* w, int64_t k, __mmask16 mk) {
  if constexpr (DT == DType::kF32) {
    return _mm512_maskz_loadu_ps(mk, static_cast<const float*>(w) + k);
  } else if constexpr (DT == DType::kBF16) {
    __m256i h = _mm256_maskz_loadu_epi16(mk, static_cast<const uint16_t*>(w) + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, static_cast<const uint16_t*>(w) + k));
  }
}

// A block of K (cache blocking) carries its accumulators to the next block
// through `carry` (kLoad: start from them; kStore: leave them there instead of
// reducing): the lanes see the same FMAs in the same order as in one pass.
constexpr int kLoad = 1, kStore = 2;
constexpr int kCarryFloats = kNR * 6 * 16;  // one micro-tile's accumulators, MR <= 6

template <DType DT, int MR>
STRATA_AVX512 void Micro512(const void* const* w, const float* x, int64_t ldx, int64_t K, int rows, const float* bias,
                            float* y, int64_t ldy, float* carry = nullptr, int phase = 0) {
  __m512 acc[kNR][MR];
  for (int r = 0; r < kNR; ++r)
    for (int m = 0; m < MR; ++m)
      acc[r][m] = phase & kLoad ? _mm512_loadu_ps(carry + (r * MR + m) * 16) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 mk = K - k >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 xv[MR];
    for (int m = 0; m < MR; ++m) xv[m] = _mm512_maskz_loadu_ps(mk, x + m * ldx + k);
    for (int r = 0; r < kNR; ++r) {
      const __m512 wv = LoadW16<DT>(w[r], k, mk);
      for (int m = 0; m < MR; ++m) acc[r][m] = _mm512_fmadd_ps(wv, xv[m], acc[r][m]);
    }
  }
  if (phase & kStore) {
    for (int r = 0; r < kNR; ++r)
      for (int m = 0; m < MR; ++m) _mm512_storeu_ps(carry + (r * MR + m) * 16, acc[r][m]);
    return;
  }
  for (int m = 0; m < MR; ++m) Store4(y + m * ldy, Reduce4x16(acc[0][m], acc[1][m], acc[2][m], acc[3][m]), bias, rows);
}

// BF16/F16 -> fp32 (exact).
template <DType DT>
STRATA_AVX512 void WidenTo32(const void* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mk = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(dst + i, mk, LoadW16<DT>(src, i, mk));
  }
}

// Weights in BF16/F16 used by more than one tile of tokens are converted to
// fp32 once per block (exactly: the products are the same bits), then each
// tile of 6 tokens (in L1) sweeps the block's rows (in L2).
template <DType DT>
void Panel512T(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  constexpr int MR = 6;
  constexpr int64_t Kc = 512;  // a tile's 6 token rows and 4 weight rows: 12 + 8 KiB, in L1
  const int64_t K = g.K, ntn = (n1 - n0 + kNR - 1) / kNR;
  const size_t es = DTypeSize(DT);
  const bool convert = DT != DType::kF32 && m1 - m0 > MR;
  const bool blocked = K > Kc && m1 - m0 > MR;
  thread_local std::vector<float> wf, carry;
  const char* wbase = p.w + n0 * K * es;
  size_t wes = es;
  if (convert) {
    wf.resize((n1 - n0) * K);
    WidenTo32<DT>(wbase, (n1 - n0) * K, wf.data());
    wbase = reinterpret_cast<const char*>(wf.data());
    wes = 4;
  }
  if (blocked) carry.resize(((m1 - m0 + MR - 1) / MR) * ntn * kCarryFloats);
  float b[kNR];
  for (int64_t k0 = 0; k0 < K; k0 += blocked ? Kc : K) {
    const int64_t kl = blocked ? std::min(Kc, K - k0) : K;
    const int phase = !blocked ? 0 : (k0 > 0 ? kLoad : 0) | (k0 + kl < K ? kStore : 0);
    for (int64_t m = m0; m < m1; m += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, m1 - m));
      const float* x = g.x + m * K + k0;
      for (int64_t n = n0; n < n1; n += kNR) {
        const int rows = static_cast<int>(std::min<int64_t>(kNR, n1 - n));
        const void* w[kNR];
        for (int r = 0; r < kNR; ++r) w[r] = wbase + ((n - n0 + std::min(r, rows - 1)) * K + k0) * wes;
        if (!(phase & kStore)) Bias4(p.bias, n, rows, b);
        const float* bp = p.bias ? b : nullptr;
        float* y = p.y + m * p.N + n;
        float* c = blocked ? carry.data() + (((m - m0) / MR) * ntn + (n - n0) / kNR) * kCarryFloats : nullptr;
        constexpr DType D = DT;
        if (convert) {
          switch (mr) {
            case 6: Micro512<DType::kF32, 6>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 5: Micro512<DType::kF32, 5>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 4: Micro512<DType::kF32, 4>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 3: Micro512<DType::kF32, 3>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 2: Micro512<DType::kF32, 2>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            default: Micro512<DType::kF32, 1>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
          }
        } else {
          switch (mr) {
            case 6: Micro512<D, 6>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 5: Micro512<D, 5>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 4: Micro512<D, 4>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 3: Micro512<D, 3>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            case 2: Micro512<D, 2>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
            default: Micro512<D, 1>(w, x, K, kl, rows, bp, y, p.N, c, phase); break;
          }
        }
      }
    }
  }
}

void Panel512(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  switch (p.dt) {
    case DType::kF32: return Panel512T<DType::kF32>(g, p, n0, n1, m0, m1);
    case DType::kBF16: return Panel512T<DType::kBF16>(g, p, n0, n1, m0, m1);
    default: return Panel512T<DType::kF16>(g, p, n0, n1, m0, m1);
  }
}

// ---- AVX-512 BF16 (vdpbf16ps): BF16 weights as loaded, activations rounded
// to bf16 (RNE) once per call; each instruction adds w[2i]x[2i] + w[2i+1]x[2i+1]
// into lane i of an fp32 accumulator.

STRATA_AVX512BF16 void RoundToBf16(const float* x, int64_t M, int64_t K, uint16_t* xb, int64_t kp) {
  for (int64_t m = 0; m < M; ++m) {
    const float* src = x + m * K;
    uint16_t* dst = xb + m * kp;
    for (int64_t k = 0; k < kp; k += 16) {
      const int64_t left = K - k;
      const __mmask16 mk = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(mk, src + k);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
    }
  }
}

// One token: weight elements fetched ahead of use (2 KiB; measured best of
// 256..4096 on decode of the small preset: 78, 98, 85, 92 tok/s at 256, 1024,
// 2048, 4096 against 72 without).
constexpr int64_t kPrefetchBf16 = 1024;

template <int MR>
STRATA_AVX512BF16 void MicroBf16(const uint16_t* const* w, const uint16_t* xb, int64_t kp, int64_t K, int rows,
                                 const float* bias, float* y, int64_t ldy, float* carry = nullptr, int phase = 0) {
  __m512 acc[kNR][MR];
  for (int r = 0; r < kNR; ++r)
    for (int m = 0; m < MR; ++m)
      acc[r][m] = phase & kLoad ? _mm512_loadu_ps(carry + (r * MR + m) * 16) : _mm512_setzero_ps();
  const int64_t kf = K & ~int64_t{31};
  int64_t k = 0;
  for (; k < kf; k += 32) {
    __m512bh wv[kNR];
    for (int r = 0; r < kNR; ++r) {
      // One token: the weights stream from memory once; fetch ahead of use.
      if constexpr (MR == 1) _mm_prefetch(reinterpret_cast<const char*>(w[r] + k + kPrefetchBf16), _MM_HINT_T0);
      wv[r] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(w[r] + k));
    }
    for (int m = 0; m < MR; ++m) {
      const __m512bh xv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xb + m * kp + k));
      for (int r = 0; r < kNR; ++r) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], wv[r], xv);
    }
  }
  if (k < K) {  // x is zero past K; the weights are masked
    const __mmask32 mk = static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1);
    __m512bh wv[kNR];
    for (int r = 0; r < kNR; ++r) wv[r] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mk, w[r] + k));
    for (int m = 0; m < MR; ++m) {
      const __m512bh xv = reinterpret_cast<__m512bh>(_mm512_loadu_si512(xb + m * kp + k));
      for (int r = 0; r < kNR; ++r) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], wv[r], xv);
    }
  }
  if (phase & kStore) {
    for (int r = 0; r < kNR; ++r)
      for (int m = 0; m < MR; ++m) _mm512_storeu_ps(carry + (r * MR + m) * 16, acc[r][m]);
    return;
  }
  for (int m = 0; m < MR; ++m) Store4(y + m * ldy, Reduce4x16(acc[0][m], acc[1][m], acc[2][m], acc[3][m]), bias, rows);
}

// K blocks of kKcBf16 (a tile's 6 token rows and 4 weight rows: 12 + 8 KiB, in L1).
constexpr int64_t kKcBf16 = 1024, kKc32 = 512;

void PanelBf16(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  if (p.dt != DType::kBF16) return Panel512(g, p, n0, n1, m0, m1);  // F32/F16 weights: fp32 FMA
  constexpr int MR = 6;
  const int64_t K = g.K, ntn = (n1 - n0 + kNR - 1) / kNR;
  const uint16_t* w0 = reinterpret_cast<const uint16_t*>(p.w);
  const bool blocked = K > kKcBf16 && m1 - m0 > MR;
  thread_local std::vector<float> carry;
  if (blocked) carry.resize(((m1 - m0 + MR - 1) / MR) * ntn * kCarryFloats);
  float b[kNR];
  for (int64_t k0 = 0; k0 < K; k0 += blocked ? kKcBf16 : K) {
    const int64_t kl = blocked ? std::min(kKcBf16, K - k0) : K;
    const int phase = !blocked ? 0 : (k0 > 0 ? kLoad : 0) | (k0 + kl < K ? kStore : 0);
    for (int64_t m = m0; m < m1; m += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, m1 - m));
      const uint16_t* xb = g.xb + m * g.kp + k0;
      for (int64_t n = n0; n < n1; n += kNR) {
        const int rows = static_cast<int>(std::min<int64_t>(kNR, n1 - n));
        const uint16_t* w[kNR];
        for (int r = 0; r < kNR; ++r) w[r] = w0 + (n + std::min(r, rows - 1)) * K + k0;
        if (!(phase & kStore)) Bias4(p.bias, n, rows, b);
        const float* bp = p.bias ? b : nullptr;
        float* y = p.y + m * p.N + n;
        float* c = blocked ? carry.data() + (((m - m0) / MR) * ntn + (n - n0) / kNR) * kCarryFloats : nullptr;
        switch (mr) {
          case 6: MicroBf16<6>(w, xb, g.kp, kl, rows, bp, y, p.N, c, phase); break;
          case 5: MicroBf16<5>(w, xb, g.kp, kl, rows, bp, y, p.N, c, phase); break;
          case 4: MicroBf16<4>(w, xb, g.kp, kl, rows, bp, y, p.N, c, phase); break;
          case 3: MicroBf16<3>(w, xb, g.kp, kl, rows, bp, y, p.N, c, phase); break;
          case 2: MicroBf16<2>(w, xb, g.kp, kl, rows, bp, y, p.N, c, phase); break;
          default: MicroBf16<1>(w, xb, g.kp, kl, rows, bp, y, p.N, c, phase); break;
        }
      }
    }
  }
}

// ---- AMX-BF16 (tdpbf16ps). Weights (N, K) as loaded are the A operand: a
// tile is 16 weight rows x 32 bf16 of K (tileloadd, stride K*2 bytes).
// Activations are rounded to bf16 (RNE, the avx512-bf16 rounding) once per
// call and packed into the VNNI B layout: per tile of 16 tokens, one 64-byte
// row per pair of k (16 tokens x 2 bf16), tokens past M zero. A C tile is 16
// outputs x 16 tokens in fp32; tdpbf16ps adds, for each element, the pairs of
// k in increasing order, so an output's arithmetic is that of its weight row
// and token row alone: the same whatever M, its place in the tile, the K
// blocking (C carried through memory is exact) and the thread. Shapes with
// K % 32 or N % 16 use the avx512-bf16 kernel (AmxShape).

bool AmxShape(int64_t N, int64_t K) { return K % 32 == 0 && N % 16 == 0 && K > 0 && N > 0; }

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows x 64 bytes, configured once per thread (TBB's workers
// are persistent; the configuration stays until the thread ends).
STRATA_AMX void ConfigureTiles() {
  if (tls_tile_config == 1) return;
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = 64;
    cfg.rows[i] = 16;
  }
  _tile_loadconfig(&cfg);
  tls_tile_config = 1;
}

// 16x16 fp32 transpose in registers (exact data movement).
STRATA_AMX STRATA_INLINE void Transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 4; ++j) {
      t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
      t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
  }
}

// x (M, K) -> xv: token tile t, pair p at xv + (t * K/2 + p) * 16, 16 tokens
// x (bf16 of k = 2p, bf16 of 2p+1) as one uint32 each. K % 32 == 0.
STRATA_AMX void PackVnni(const float* x, int64_t M, int64_t K, uint32_t* xv) {
  const int64_t P = K / 2;
  for (int64_t t = 0; t < (M + 15) / 16; ++t)
    for (int64_t k = 0; k < K; k += 32) {
      __m512 r[16];
      for (int j = 0; j < 16; ++j) {
        const int64_t m = t * 16 + j;
        if (m < M) {
          const float* src = x + m * K + k;
          // Lower 16 bf16 from k..k+15, upper from k+16..k+31 (the same RNE as _mm512_cvtneps_pbh).
          r[j] = reinterpret_cast<__m512>(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src)));
        } else {
          r[j] = _mm512_setzero_ps();
        }
      }
      Transpose16(r);  // r[i]: pair k/2 + i of the 16 tokens
      uint32_t* dst = xv + (t * P + k / 2) * 16;
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(reinterpret_cast<float*>(dst + i * 16), r[i]);
    }
}

// NA x NB C tiles (NA tiles of 16 weight rows from w, stride ldw bytes; NB
// tiles of 16 tokens from xb[b]) over kl elements of K, starting from zero or
// (kLoad) from c, stored to c: tile (a, b) at c + (2a + b) * 256 (16 rows of
// 16 floats: row = output, column = token). Tile registers: C 0-3, A 4-5, B 6-7.
template <int NA, int NB>
STRATA_AMX void AmxTiles(const uint16_t* w, int64_t ldw, const uint32_t* const* xb, int64_t kl, float* c, int phase) {
  if (phase & kLoad) {
    _tile_loadd(0, c, 64);
    if constexpr (NB > 1) _tile_loadd(1, c + 256, 64);
    if constexpr (NA > 1) _tile_loadd(2, c + 512, 64);
    if constexpr (NA > 1 && NB > 1) _tile_loadd(3, c + 768, 64);
  } else {
    _tile_zero(0);
    if constexpr (NB > 1) _tile_zero(1);
    if constexpr (NA > 1) _tile_zero(2);
    if constexpr (NA > 1 && NB > 1) _tile_zero(3);
  }
  const uint16_t* w1 = w + 16 * (ldw / 2);
  const uint32_t* b0 = xb[0];
  const uint32_t* b1 = NB > 1 ? xb[1] : xb[0];
  for (int64_t k = 0; k < kl; k += 32) {
    _tile_loadd(4, w + k, ldw);
    _tile_loadd(6, b0 + k * 8, 64);  // 16 pairs x 16 tokens per 32 k
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NB > 1) {
      _tile_loadd(7, b1 + k * 8, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (NA > 1) {
      _tile_loadd(5, w1 + k, ldw);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, 64);
  if constexpr (NB > 1) _tile_stored(1, c + 256, 64);
  if constexpr (NA > 1) _tile_stored(2, c + 512, 64);
  if constexpr (NA > 1 && NB > 1) _tile_stored(3, c + 768, 64);
  asm volatile("" ::: "memory");  // the tile stores wrote c (the intrinsics do not say so)
}

// 2 x 1 (32 weight rows, one tile of <= 16 tokens: decode and small batches)
// with the A and B tile registers double-buffered (C 0-1; A 2-3 and B 6 on
// even steps of 32 k, A 4-5 and B 7 on odd ones), so the loads of a step need
// not wait for the previous step's tdpbf16ps to release their registers. The
// same products in the same order as AmxTiles<2, 1>; C stored as it stores it.
STRATA_AMX void AmxTiles21(const uint16_t* w, int64_t ldw, const uint32_t* b0, int64_t kl, float* c, int phase) {
  if (phase & kLoad) {
    _tile_loadd(0, c, 64);
    _tile_loadd(1, c + 512, 64);
  } else {
    _tile_zero(0);
    _tile_zero(1);
  }
  const uint16_t* w1 = w + 16 * (ldw / 2);
  for (int64_t k = 0; k < kl; k += 64) {
    _tile_loadd(2, w + k, ldw);
    _tile_loadd(3, w1 + k, ldw);
    _tile_loadd(6, b0 + k * 8, 64);
    _tile_dpbf16ps(0, 2, 6);
    _tile_dpbf16ps(1, 3, 6);
    if (k + 32 < kl) {
      _tile_loadd(4, w + k + 32, ldw);
      _tile_loadd(5, w1 + k + 32, ldw);
      _tile_loadd(7, b0 + (k + 32) * 8, 64);
      _tile_dpbf16ps(0, 4, 7);
      _tile_dpbf16ps(1, 5, 7);
    }
  }
  _tile_stored(0, c, 64);
  _tile_stored(1, c + 512, 64);
  asm volatile("" ::: "memory");  // the tile stores wrote c (the intrinsics do not say so)
}

// C tiles in c (as AmxTiles leaves them) -> y[m][n] + bias, for the rows of
// tokens [m, m + tokens) and outputs [n, n + 16 * na).
STRATA_AMX void AmxWrite(const float* c, int na, int tokens, const float* bias, float* y, int64_t ldy) {
  for (int a = 0; a < na; ++a) {
    const __m512 bv = bias ? _mm512_loadu_ps(bias + 16 * a) : _mm512_setzero_ps();
    for (int b = 0; b * 16 < tokens; ++b) {
      const float* tile = c + (2 * a + b) * 256;
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(tile + 16 * i);
      Transpose16(r);  // r[j]: token 16b + j, outputs 16a .. 16a + 15
      const int nt = std::min(16, tokens - 16 * b);
      for (int j = 0; j < nt; ++j) {
        const __m512 v = bias ? _mm512_add_ps(r[j], bv) : r[j];
        _mm512_storeu_ps(y + (16 * b + j) * ldy + 16 * a, v);
      }
    }
  }
}

constexpr int64_t kKcAmx = 1024;  // K block when a weight panel serves several token groups

// Weight rows [n0, n1) x tokens [m0, m1) (m0 % 16 == 0): panels of 32 rows x
// groups of 32 tokens, K blocked at kKcAmx when a unit has several groups (the
// panel's block of K stays in L1/L2 for all of them).
STRATA_AMX void PanelAmxImpl(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  ConfigureTiles();
  const int64_t K = g.K, P = K / 2, N = p.N;
  const int64_t groups = (m1 - m0 + 31) / 32, panels = (n1 - n0 + 31) / 32;
  const bool blocked = groups > 1 && K > kKcAmx;
  const int64_t Kc = blocked ? kKcAmx : K;
  thread_local std::vector<float> carry_buf;
  carry_buf.resize((blocked ? panels * groups : 1) * 1024 + 16);
  float* carry = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(carry_buf.data()) + 63) & ~uintptr_t{63});
  const uint16_t* w0 = reinterpret_cast<const uint16_t*>(p.w);
  alignas(64) float bias[32];
  for (int64_t k0 = 0; k0 < K; k0 += Kc) {
    const int64_t kl = std::min(Kc, K - k0);
    const int phase = k0 > 0 ? kLoad : 0;
    const bool last = k0 + kl >= K;
    for (int64_t n = n0, pi = 0; n < n1; n += 32, ++pi) {
      const int na = n1 - n >= 32 ? 2 : 1;
      const uint16_t* w = w0 + n * K + k0;
      if (last && p.bias)
        ConvertElements(p.bias->dtype, static_cast<const char*>(p.bias->data) + n * DTypeSize(p.bias->dtype),
                        DType::kF32, bias, 16 * na);
      for (int64_t m = m0, gi = 0; m < m1; m += 32, ++gi) {
        const int tokens = static_cast<int>(std::min<int64_t>(32, m1 - m));
        const uint32_t* x0 = g.xv + ((m / 16) * P + k0 / 2) * 16;
        const uint32_t* xb[2] = {x0, tokens > 16 ? x0 + P * 16 : x0};  // token tiles m/16, m/16 + 1
        float* c = blocked ? carry + (pi * groups + gi) * 1024 : carry;
        const int64_t ldw = K * 2;
        if (na == 2) {
          if (tokens > 16) AmxTiles<2, 2>(w, ldw, xb, kl, c, phase);
          else AmxTiles21(w, ldw, xb[0], kl, c, phase);
        } else {
          if (tokens > 16) AmxTiles<1, 2>(w, ldw, xb, kl, c, phase);
          else AmxTiles<1, 1>(w, ldw, xb, kl, c, phase);
        }
        if (last) AmxWrite(c, na, tokens, p.bias ? bias : nullptr, p.y + m * N + n, N);
      }
    }
  }
}

void PanelAmx(const Gemm& g, const Product& p, int64_t n0, int64_t n1, int64_t m0, int64_t m1) {
  if (p.dt != DType::kBF16 || !AmxShape(p.N, g.K)) return PanelBf16(g, p, n0, n1, m0, m1);
  PanelAmxImpl(g, p, n0, n1, m0, m1);
}

using PanelFn = void (*)(const Gemm&, const Product&, int64_t, int64_t, int64_t, int64_t);

PanelFn PanelFor(int tier) {
  switch (tier) {
    case kAmxBf16: return PanelAmx;
    case kAvx512Bf16: return PanelBf16;
    case kAvx512: return Panel512;
    case kAvx2: return PanelAvx2;
    default: return PanelPortable;
  }
}

// One unit of work: weight rows [n0, n1) of product p against tokens [m0, m1).
struct Unit {
  int p;
  int64_t n0, n1, m0, m1;
};

// All products in one parallel region. Few tokens (decode, small batches):
// the weights stream from memory once, each thread takes one contiguous
// share of all products' rows (static partition: a few large chunks, no
// task per row block). Many tokens: blocks of rows x tokens sized for L2
// (below), scheduled dynamically.
void RunProducts(const Product* prods, int count, const float* x, int64_t M, int64_t K) {
  // One token (a lone sequence's decode step) streams the weights through the
  // avx512-bf16 dot products: AMX's strided tile loads read them slower there.
  const int tier = M == 1 && CurrentTier() == kAmxBf16 && !g_amx_all.load(std::memory_order_relaxed)
                       ? int{kAvx512Bf16}
                       : CurrentTier();
  Gemm g;
  g.x = x;
  g.M = M;
  g.K = K;
  std::vector<uint16_t> xb;
  std::unique_ptr<uint32_t[]> xv;  // not zeroed: PackVnni writes every element
  bool any_bf16 = false, any_amx = false;
  for (int i = 0; i < count; ++i) {
    const bool bf16 = prods[i].dt == DType::kBF16, amx = tier == kAmxBf16 && bf16 && AmxShape(prods[i].N, K);
    any_amx |= amx;
    any_bf16 |= bf16 && !amx;  // row-major bf16 activations for the avx512-bf16 kernel
  }
  if (tier >= kAvx512Bf16 && any_bf16) {
    g.kp = (K + 31) & ~int64_t{31};
    xb.resize(M * g.kp);
    RoundToBf16(x, M, K, xb.data(), g.kp);
    g.xb = xb.data();
  }
  if (any_amx) {
    xv.reset(new uint32_t[((M + 15) / 16) * 16 * (K / 2)]);
    PackVnni(x, M, K, xv.get());
    g.xv = xv.get();
  }
  const PanelFn panel = PanelFor(tier);
  const bool amx = tier == kAmxBf16;
  const bool few = M <= (amx ? 32 : 16);
  // Many tokens: a block's tokens (~512 KiB of bf16 rows) stay in L2 while
  // its weight rows (~256 KiB) are swept once per 6 tokens, so large weight
  // matrices are read from memory ceil(M / MB) times, not once per 48 tokens.
  int64_t NB = amx ? 32 : 16, MB = M;
  int64_t rows_total = 0;
  for (int i = 0; i < count; ++i) rows_total += prods[i].N;
  auto blocks = [&] { return ((M + MB - 1) / MB) * ((rows_total + NB - 1) / NB + count); };
  if (amx && !few) {
    // AMX: units of up to 128 weight rows x 256 tokens (multiples of 32; the
    // token groups start at multiples of 16), then smaller until every thread
    // has several.
    MB = std::min<int64_t>((M + 31) / 32 * 32, 256);
    NB = 128;
    while (blocks() < 8 && (NB > 32 || MB > 32)) {
      if (NB > 32) NB /= 2;
      else MB = std::max<int64_t>(32, MB / 2 / 32 * 32);
    }
  } else if (!few) {
    // Bytes of one row per block of K (the panels block K at 1024 bf16 / 512 fp32).
    const int64_t row_bytes = g.xb ? 2 * std::min<int64_t>(K, 1024) : 4 * std::min<int64_t>(K, 512);
    MB = std::min(M, std::max<int64_t>(48, (512 << 10) / row_bytes / 6 * 6));
    NB = std::clamp<int64_t>((64 << 10) / row_bytes / 4 * 4, 16, 64);  // swept per 6 tokens: near L1
    // Enough blocks for every thread several times over.
    while (blocks() < 16 && (MB > 48 || NB > 16)) {
      if (MB > 48) MB = std::max<int64_t>(48, (MB / 2 + 5) / 6 * 6);
      else NB = std::max<int64_t>(16, NB / 2 / 4 * 4);
    }
  }
  std::vector<Unit> units;
  int64_t macs = 0;
  for (int i = 0; i < count; ++i) {
    macs += prods[i].N * M * K;
    for (int64_t n = 0; n < prods[i].N; n += NB)
      for (int64_t m = 0; m < M; m += MB) units.push_back({i, n, std::min(n + NB, prods[i].N), m, std::min(m + MB, M)});
  }
  auto run = [&](const tbb::blocked_range<size_t>& r) {
    for (size_t u = r.begin(); u < r.end(); ++u) {
      const Unit& un = units[u];
      panel(g, prods[un.p], un.n0, un.n1, un.m0, un.m1);
    }
  };
  const tbb::blocked_range<size_t> all(0, units.size());
  if (macs < (int64_t{1} << 16))
    run(all);
  else if (few)
    tbb::parallel_for(all, run, tbb::static_partitioner());
  else
    tbb::parallel_for(tbb::blocked_range<size_t>(0, units.size(), 1), run);
}

}  // namespace

bool CpuHasAvx2() { return CurrentTier() >= kAvx2; }
std::string_view CpuKernelsName() { return kTierNames[CurrentTier()]; }
std::string_view CpuKernelsBest() { return kTierNames[kBestTier]; }

void SetBatchInvariant(bool on) { g_amx_all.store(on, std::memory_order_relaxed); }
bool BatchInvariant() { return CurrentTier() != kAmxBf16 || g_amx_all.load(std::memory_order_relaxed); }

std::string_view SetCpuKernelsForTesting(std::string_view name) {
  const int t = name.empty() ? kBestTier : TierByName(name);
  if (t >= 0) g_tier.store(std::min(t, kBestTier), std::memory_order_relaxed);
  return CpuKernelsName();
}

void MatMulMany(const MatMulOut* outs, int count, const float* x, int64_t M) {
  if (count <= 0 || M <= 0) return;
  std::vector<Product> prods;
  prods.reserve(count);
  const int64_t K = outs[0].w->cols();
  for (int i = 0; i < count; ++i) {
    const HostTensor& w = *outs[i].w;
    if (w.cols() != K) {  // not one input: run it on its own
      MatMul(w, x, M, outs[i].y, outs[i].bias);
      continue;
    }
    if (w.quant != QuantType::kNone) {  // cpu_quant.cc
      QuantMatMul(w, x, M, outs[i].y, outs[i].bias);
      continue;
    }
    if (w.zero && !outs[i].bias) {
      std::memset(outs[i].y, 0, sizeof(float) * w.rows() * M);
      continue;
    }
    prods.push_back({static_cast<const char*>(w.data), w.dtype, w.rows(), outs[i].y, outs[i].bias});
  }
  if (!prods.empty()) RunProducts(prods.data(), static_cast<int>(prods.size()), x, M, K);
}

void MatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  MatMulOut o{&w, y, bias};
  MatMulMany(&o, 1, x, M);
}

void RopeAngles(int64_t pos, int half, const double* inv_freq, float* cs, float* sn) {
  for (int i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq[i];
    cs[i] = static_cast<float>(std::cos(angle));
    sn[i] = static_cast<float>(std::sin(angle));
  }
}

void RopeApply(float* x, int n_heads, int head_dim, const float* cs, const float* sn) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cs[i] - b * sn[i];
      v[i + half] = b * cs[i] + a * sn[i];
    }
  }
}

void Rope(float* x, int n_heads, int head_dim, int64_t pos, const double* inv_freq) {
  std::vector<float> cs(head_dim / 2), sn(head_dim / 2);
  RopeAngles(pos, head_dim / 2, inv_freq, cs.data(), sn.data());
  RopeApply(x, n_heads, head_dim, cs.data(), sn.data());
}

void EmbeddingGather(const HostTensor& table, const int* tokens, int64_t M, float* out) {
  const int64_t D = table.cols();
  const size_t row_bytes = D * DTypeSize(table.dtype);
  if (table.quant != QuantType::kNone) {
    for (int64_t m = 0; m < M; ++m) QuantRowToFloat(table, tokens[m], out + m * D);
    return;
  }
  for (int64_t m = 0; m < M; ++m)
    ConvertElements(table.dtype, static_cast<const char*>(table.data) + tokens[m] * row_bytes, DType::kF32,
                    out + m * D, D);
}

// ---------------------------------------------------------------------------
// Attention. One task per (job, head, query), two passes over the visible
// keys: scores (dot products over head_dim), then softmax weights and the
// weighted sum of V. Each output depends only on its query, its position and
// the KV rows: not on M, on the other jobs, nor on the thread count.

namespace {

// Visits the visible keys [lo, hi] of a paged sequence as runs of rows that
// are contiguous in one block: f(first key, count, K row, V row).
template <class F>
STRATA_INLINE void ForEachRun(const PagedKv& kv, int64_t kv_stride, int64_t off, int64_t lo, int64_t hi, F&& f) {
  int64_t j = lo;
  while (j <= hi) {
    const int64_t b = j / kv.block_tokens, r = j % kv.block_tokens;
    const int64_t n = std::min<int64_t>(kv.block_tokens - r, hi - j + 1);
    const int64_t base = kv.blocks[b] * kv.block_stride + r * kv_stride + off;
    f(j, n, kv.k + base, kv.v + base);
    j += n;
  }
}

struct AttnShape {
  int heads, kv_heads, hd, window;
  int64_t q_stride, kv_stride;
  float scale;
};

void AttendPortable(const AttnShape& s, const AttentionJob& job, int64_t m, int h, std::vector<float>& sc) {
  const int kvh = h / (s.heads / s.kv_heads), hd = s.hd;
  const int64_t p = job.pos0 + m, lo = s.window > 0 ? std::max<int64_t>(0, p - s.window + 1) : 0;
  const float* qv = job.q + m * s.q_stride + int64_t{h} * hd;
  sc.resize(p - lo + 1);
  float mx = -INFINITY;
  ForEachRun(job.kv, s.kv_stride, int64_t{kvh} * hd, lo, p, [&](int64_t j0, int64_t n, const float* k, const float*) {
    for (int64_t j = 0; j < n; ++j, k += s.kv_stride) {
      float d = 0;
      for (int e = 0; e < hd; ++e) d += qv[e] * k[e];
      sc[j0 + j - lo] = d * s.scale;
      mx = std::max(mx, sc[j0 + j - lo]);
    }
  });
  double sum = 0;
  for (float& v : sc) sum += (v = std::exp(v - mx));
  float* o = job.out + m * s.q_stride + int64_t{h} * hd;
  std::fill(o, o + hd, 0.0f);
  ForEachRun(job.kv, s.kv_stride, int64_t{kvh} * hd, lo, p, [&](int64_t j0, int64_t n, const float*, const float* v) {
    for (int64_t j = 0; j < n; ++j, v += s.kv_stride) {
      const float wgt = static_cast<float>(sc[j0 + j - lo] / sum);
      for (int e = 0; e < hd; ++e) o[e] += wgt * v[e];
    }
  });
}

// exp(x) for x <= 0 (softmax after subtracting the max): Cody-Waite range
// reduction and a degree-6 polynomial, about 1 ulp; exp(x) = 0 below -87.
STRATA_AVX512 STRATA_INLINE __m512 Exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

STRATA_AVX512 STRATA_INLINE float HSum16(__m512 v) {
  return _mm_cvtss_f32(Reduce4x16(v, v, v, v));
}

// SwiGlu and RmsNorm, elementwise / per row: a lane's result depends only on
// its own element (and its row's sum of squares), never on n or M; the tail
// runs the same instructions under a mask.
STRATA_AVX512 void SwiGlu512(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mk = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(mk, a + i);
    // exp(-x) for -x <= 88 (exp(88) is finite; past it silu(x) is 0 to fp32 anyway).
    const __m512 e = Exp512(_mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), x), _mm512_set1_ps(88.0f)));
    const __m512 silu = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    _mm512_mask_storeu_ps(a + i, mk, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(mk, b + i)));
  }
}

STRATA_AVX512 void RmsNorm512(const float* x, const float* w, int64_t M, int64_t D, double eps, float* out) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * D;
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < D; i += 16) {
      const __mmask16 mk = D - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (D - i)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(mk, xm + i);
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
      s0 = _mm512_fmadd_pd(lo, lo, s0);
      s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    alignas(64) double l[8];
    _mm512_store_pd(l, _mm512_add_pd(s0, s1));
    const double ss = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / std::sqrt(ss / D + eps)));
    for (int64_t i = 0; i < D; i += 16) {
      const __mmask16 mk = D - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (D - i)) - 1);
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xm + i), inv);
      _mm512_mask_storeu_ps(out + m * D + i, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, w + i), v));
    }
  }
}

// Head dims up to 256 (NV vectors of q and of the output in registers).
// G queries of one head at once (m0 .. m0+g-1, g <= G): each 4-key group of K
// rows and each V row is fetched once (then from L1) for all of them, instead
// of a sweep of the head's rows per query (a 512-position sweep at a 2 KiB
// stride maps to few cache sets). Per query the instructions and their order
// are those of the query alone: its dot products (the same FMAs and
// reduction tree; a slot's sum depends only on its key), max, exps and sum
// over its own scores, and V accumulated over its keys in increasing order;
// keys outside a query's range are not added.
template <int NV, int G>
STRATA_AVX512 void Attend512(const AttnShape& s, const AttentionJob& job, int64_t m0, int g, int h,
                             std::vector<float>* sc) {
  const int kvh = h / (s.heads / s.kv_heads), hd = s.hd;
  __mmask16 mk[NV];
  for (int i = 0; i < NV; ++i) {
    const int left = hd - 16 * i;
    mk[i] = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
  }
  int64_t p[G], lo[G], n_keys[G];
  float* scores[G];
  for (int t = 0; t < G; ++t) {
    const int64_t m = m0 + std::min(t, g - 1);  // slots past g repeat the last query (not stored)
    p[t] = job.pos0 + m;
    lo[t] = s.window > 0 ? std::max<int64_t>(0, p[t] - s.window + 1) : 0;
    n_keys[t] = p[t] - lo[t] + 1;
    sc[t].resize((n_keys[t] + 15) & ~int64_t{15});
    scores[t] = sc[t].data();
  }
  // q pre-scaled, query t's vector i at qs + (t * NV + i) * 16 (G * NV <= 16).
  alignas(64) float qs[G * NV * 16];
  for (int t = 0; t < G; ++t) {
    const float* qp = job.q + (m0 + std::min(t, g - 1)) * s.q_stride + int64_t{h} * hd;
    for (int i = 0; i < NV; ++i)
      _mm512_store_ps(qs + (t * NV + i) * 16,
                      _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[i], qp + 16 * i), _mm512_set1_ps(s.scale)));
  }
  const int64_t jlo = lo[0], jhi = p[G - 1];  // lo and p increase with m
  const int64_t off = int64_t{kvh} * hd;
  const PagedKv& kv = job.kv;
  // Scores, four keys at a time (one reduction); a short group repeats its last key.
  // (No lambdas here: they would not inherit the function's target.)
  for (int64_t j0 = jlo, n; j0 <= jhi; j0 += n) {
    const int64_t row = j0 % kv.block_tokens;
    n = std::min<int64_t>(kv.block_tokens - row, jhi - j0 + 1);
    const float* k = kv.k + kv.blocks[j0 / kv.block_tokens] * kv.block_stride + row * s.kv_stride + off;
    for (int64_t j = 0; j < n; j += 4) {
      const float* kr[4];
      for (int t = 0; t < 4; ++t) kr[t] = k + std::min<int64_t>(j + t, n - 1) * s.kv_stride;
      const int64_t cnt = std::min<int64_t>(4, n - j);
      for (int qi = 0; qi < G; ++qi) {
        if (qi >= g || j0 + j > p[qi] || j0 + j + cnt - 1 < lo[qi]) continue;
        const float* qv = qs + qi * NV * 16;
        __m512 a[4];
        for (int t = 0; t < 4; ++t) {
          a[t] = _mm512_mul_ps(_mm512_load_ps(qv), _mm512_maskz_loadu_ps(mk[0], kr[t]));
          for (int i = 1; i < NV; ++i)
            a[t] = _mm512_fmadd_ps(_mm512_load_ps(qv + 16 * i), _mm512_maskz_loadu_ps(mk[i], kr[t] + 16 * i), a[t]);
        }
        alignas(16) float o4[4];
        _mm_store_ps(o4, Reduce4x16(a[0], a[1], a[2], a[3]));
        for (int t = 0; t < cnt; ++t) {
          const int64_t key = j0 + j + t;
          if (key >= lo[qi] && key <= p[qi]) scores[qi][key - lo[qi]] = o4[t];
        }
      }
    }
  }
  float inv[G];
  for (int qi = 0; qi < G; ++qi) {
    if (qi >= g) break;
    float* sq = scores[qi];
    const int64_t nk = n_keys[qi];
    __m512 mxv = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 16 <= nk; j += 16) mxv = _mm512_max_ps(mxv, _mm512_loadu_ps(sq + j));
    if (j < nk)
      mxv = _mm512_max_ps(mxv, _mm512_mask_loadu_ps(mxv, static_cast<__mmask16>((1u << (nk - j)) - 1), sq + j));
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mxv));
    __m512 sumv = _mm512_setzero_ps();
    for (j = 0; j < nk; j += 16) {
      const __mmask16 mj = nk - j >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (nk - j)) - 1);
      const __m512 e = _mm512_maskz_mov_ps(mj, Exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mj, sq + j), mx)));
      _mm512_storeu_ps(sq + j, e);
      sumv = _mm512_add_ps(sumv, e);
    }
    inv[qi] = 1.0f / HSum16(sumv);
  }
  __m512 acc[G][NV];
  for (auto& r : acc)
    for (auto& a : r) a = _mm512_setzero_ps();
  for (int64_t j0 = jlo, n; j0 <= jhi; j0 += n) {
    const int64_t row = j0 % kv.block_tokens;
    n = std::min<int64_t>(kv.block_tokens - row, jhi - j0 + 1);
    const float* v = kv.v + kv.blocks[j0 / kv.block_tokens] * kv.block_stride + row * s.kv_stride + off;
    for (int64_t jj = 0; jj < n; ++jj, v += s.kv_stride) {
      const int64_t key = j0 + jj;
      for (int qi = 0; qi < G; ++qi) {
        if (qi >= g || key < lo[qi] || key > p[qi]) continue;
        const __m512 wgt = _mm512_set1_ps(scores[qi][key - lo[qi]]);
        for (int i = 0; i < NV; ++i)
          acc[qi][i] = _mm512_fmadd_ps(wgt, _mm512_maskz_loadu_ps(mk[i], v + 16 * i), acc[qi][i]);
      }
    }
  }
  for (int qi = 0; qi < G && qi < g; ++qi) {
    float* o = job.out + (m0 + qi) * s.q_stride + int64_t{h} * hd;
    for (int i = 0; i < NV; ++i)
      _mm512_mask_storeu_ps(o + 16 * i, mk[i], _mm512_mul_ps(acc[qi][i], _mm512_set1_ps(inv[qi])));
  }
}

// Queries m0 .. m0+g-1 of head h, one at a time.
void AttendPortableGroup(const AttnShape& s, const AttentionJob& job, int64_t m0, int g, int h,
                         std::vector<float>* sc) {
  for (int i = 0; i < g; ++i) AttendPortable(s, job, m0 + i, h, sc[0]);
}

using AttendFn = void (*)(const AttnShape&, const AttentionJob&, int64_t, int, int, std::vector<float>*);
constexpr int kMaxGroup = 4;

// The kernels for this head dim: `group` takes G queries at once (its
// accumulators, G x NV vectors, stay within 16 registers), `one` a single
// query (jobs of M = 1: decode). Per query both run the same instructions.
struct AttendKernels {
  AttendFn group, one;
  int G;
};

AttendKernels AttendFor(int tier, int hd) {
  if (tier < kAvx512 || hd > 256) return {AttendPortableGroup, AttendPortableGroup, 1};
  switch ((hd + 15) / 16) {
    case 1: return {Attend512<1, 4>, Attend512<1, 1>, 4};
    case 2: return {Attend512<2, 4>, Attend512<2, 1>, 4};
    case 3: return {Attend512<3, 4>, Attend512<3, 1>, 4};
    case 4: return {Attend512<4, 4>, Attend512<4, 1>, 4};
    case 5: return {Attend512<5, 2>, Attend512<5, 1>, 2};
    case 6: return {Attend512<6, 2>, Attend512<6, 1>, 2};
    case 7: return {Attend512<7, 2>, Attend512<7, 1>, 2};
    case 8: return {Attend512<8, 2>, Attend512<8, 1>, 2};
    default: return {Attend512<16, 1>, Attend512<16, 1>, 1};
  }
}

}  // namespace

void AttentionBatch(const AttentionJob* jobs, int count, int heads, int kv_heads, int hd, int window) {
  AttnShape s{heads, kv_heads, hd, window, int64_t{heads} * hd, int64_t{kv_heads} * hd,
              1.0f / std::sqrt(static_cast<float>(hd))};
  const AttendKernels kern = AttendFor(CurrentTier(), hd);
  // One task per (job, head, group of G consecutive queries), head-major within a job.
  auto group_of = [&](const AttentionJob& j) { return j.M > 1 ? kern.G : 1; };
  std::vector<int64_t> first(count + 1, 0);  // first task of each job
  for (int i = 0; i < count; ++i) {
    const int G = group_of(jobs[i]);
    first[i + 1] = first[i] + (jobs[i].M + G - 1) / G * heads;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, first[count]), [&](const tbb::blocked_range<int64_t>& r) {
    thread_local std::vector<float> scores[kMaxGroup];  // grow once, no allocation per task
    for (int64_t task = r.begin(); task < r.end(); ++task) {
      const int i = static_cast<int>(std::upper_bound(first.begin(), first.end(), task) - first.begin()) - 1;
      const AttentionJob& job = jobs[i];
      const int G = group_of(job);
      const int64_t local = task - first[i], groups = (job.M + G - 1) / G;
      const int64_t m0 = (local % groups) * G;
      (G > 1 ? kern.group : kern.one)(s, job, m0, static_cast<int>(std::min<int64_t>(G, job.M - m0)),
                                      static_cast<int>(local / groups), scores);
    }
  });
}

void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t M, int64_t pos0, int heads,
               int kv_heads, int hd, int window, float* out) {
  // The contiguous cache is one block holding every position.
  const int32_t block0 = 0;
  AttentionJob job;
  job.q = q;
  job.kv.k = k_cache;
  job.kv.v = v_cache;
  job.kv.block_stride = 0;
  job.kv.block_tokens = static_cast<int>(pos0 + M);
  job.kv.blocks = &block0;
  job.M = M;
  job.pos0 = pos0;
  job.out = out;
  AttentionBatch(&job, 1, heads, kv_heads, hd, window);
}

void RmsNorm(const float* x, const HostTensor& weight, int64_t M, int64_t D, double eps, float* out) {
  std::vector<float> w(D);
  ConvertElements(weight.dtype, weight.data, DType::kF32, w.data(), D);
  if (CurrentTier() >= kAvx512) return RmsNorm512(x, w.data(), M, D, eps, out);
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xm[i]) * xm[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
    for (int64_t i = 0; i < D; ++i) out[m * D + i] = w[i] * (xm[i] * inv);
  }
}

void SwiGlu(float* a, const float* b, int64_t n) {
  if (CurrentTier() >= kAvx512) return SwiGlu512(a, b, n);
  for (int64_t i = 0; i < n; ++i) a[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
}

}  // namespace strata
