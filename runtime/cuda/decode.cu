// The fused decode kernels (see decode.cuh).
//
// GEMV layout: 256 threads = 8 warps per block, one pair of rows per warp at a
// time (grid-stride over pairs). A lane reads 16-byte chunks c = lane + 32u of
// both rows, four per row per iteration: eight independent 16-byte loads in
// flight per lane, 64 KiB per block of 256 threads. The loads are
// ld.global.nc.L1::no_allocate (weights are streamed once: they should not
// evict the input vector from L1). Each input chunk is read once for the two
// rows. The pair's dot products are reduced with shuffles and the epilogue
// (store / accumulate / SwiGLU / RoPE + KV store) is done by lane 0.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "cuda_check.h"
#include "decode.cuh"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;
constexpr int kUnroll = 4;  // 16-byte chunks per row per lane per iteration

enum Kind { kBf16 = 0, kF16 = 1, kF32 = 2, kAnyDtype = 3 };
enum Epi { kStore = 0, kAccumulate = 1, kSwiGlu = 2, kQkvRope = 3 };

struct GemvParams {
  // Input: x, normalized with g when g is not null (kNorm).
  const float* x;
  const void* g;
  DType g_dt;
  double eps;
  // Rows.
  const void* w0;
  const void* w1;
  const void* w2;
  int64_t rows0, rows1, rows2;
  const void* b0;
  const void* b1;
  const void* b2;
  DType b0_dt, b1_dt, b2_dt;
  DType wdt;
  int esz;        // bytes per weight element
  int64_t K;      // columns
  int64_t pairs;  // row pairs
  // Outputs.
  float* y;
  uint16_t* k_cache;
  uint16_t* v_cache;
  const int64_t* pos;
  const double* inv_freq;
  int heads, kv_heads, hd;
  KvPages pages;
};

// Row r of the stack: its bytes and bias (0 without one).
__device__ __forceinline__ const char* RowOf(const GemvParams& p, int64_t r, int elem_bytes, float* bias) {
  const void* base;
  const void* b;
  DType bdt;
  if (r < p.rows0) {
    base = p.w0;
    b = p.b0;
    bdt = p.b0_dt;
  } else if (r < p.rows0 + p.rows1) {
    r -= p.rows0;
    base = p.w1;
    b = p.b1;
    bdt = p.b1_dt;
  } else {
    r -= p.rows0 + p.rows1;
    base = p.w2;
    b = p.b2;
    bdt = p.b2_dt;
  }
  *bias = b ? LoadAsFloat(b, bdt, r) : 0.0f;
  return static_cast<const char*>(base) + r * p.K * elem_bytes;
}

// A 16-byte weight load that is not kept in L1.
__device__ __forceinline__ uint4 LoadStream(const uint4* p) {
#ifdef STRATA_CUDA_EMU
  return *p;
#else
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
#endif
}

template <bool kShared>
__device__ __forceinline__ float4 LoadX4(const float* x) {
  if constexpr (kShared) return *reinterpret_cast<const float4*>(x);
  else return __ldg(reinterpret_cast<const float4*>(x));
}

// Elements of a 16-byte chunk as floats (kElems of them).
template <int kKind>
__device__ __forceinline__ void Unpack(const uint4& w, float* f) {
  if constexpr (kKind == kF32) {
    f[0] = __uint_as_float(w.x);
    f[1] = __uint_as_float(w.y);
    f[2] = __uint_as_float(w.z);
    f[3] = __uint_as_float(w.w);
  } else {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if constexpr (kKind == kBf16) {
        f[2 * j] = __uint_as_float(u[j] << 16);
        f[2 * j + 1] = __uint_as_float(u[j] & 0xFFFF0000u);
      } else {
        f[2 * j] = __half2float(__ushort_as_half(static_cast<unsigned short>(u[j] & 0xFFFFu)));
        f[2 * j + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(u[j] >> 16)));
      }
    }
  }
}

// acc_a += chunk wa . xc and acc_b += chunk wb . xc (one 16-byte chunk of each
// row against the same input elements, read once).
template <int kKind, bool kShared>
__device__ __forceinline__ void FmaChunk(const uint4& wa, const uint4& wb, const float* xc, float* acc_a,
                                         float* acc_b) {
  constexpr int kElems = kKind == kF32 ? 4 : 8;
  float fa[kElems], fb[kElems], xv[kElems];
#pragma unroll
  for (int e = 0; e < kElems; e += 4) {
    const float4 t = LoadX4<kShared>(xc + e);
    xv[e] = t.x;
    xv[e + 1] = t.y;
    xv[e + 2] = t.z;
    xv[e + 3] = t.w;
  }
  Unpack<kKind>(wa, fa);
  Unpack<kKind>(wb, fb);
#pragma unroll
  for (int e = 0; e < kElems; ++e) {
    *acc_a += fa[e] * xv[e];
    *acc_b += fb[e] * xv[e];
  }
}

// Partial dot products of rows a and b with x for this lane (not reduced).
template <int kKind, bool kShared>
__device__ __forceinline__ void Dot2(const char* ra, const char* rb, const float* x, int64_t K, DType wdt, int lane,
                                     float* out_a, float* out_b) {
  float sa = 0.0f, sb = 0.0f;
  if constexpr (kKind == kAnyDtype) {
    for (int64_t k = lane; k < K; k += kWarp) {
      const float xv = x[k];
      sa += LoadAsFloat(ra, wdt, k) * xv;
      sb += LoadAsFloat(rb, wdt, k) * xv;
    }
  } else {
    constexpr int kElems = kKind == kF32 ? 4 : 8;
    const uint4* a = reinterpret_cast<const uint4*>(ra);
    const uint4* b = reinterpret_cast<const uint4*>(rb);
    const int64_t chunks = K / kElems;
    float acc_a[kUnroll], acc_b[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc_a[u] = acc_b[u] = 0.0f;
    int64_t c = lane;
    for (; c + (kUnroll - 1) * kWarp < chunks; c += kUnroll * kWarp) {
      uint4 wa[kUnroll], wb[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        wa[u] = LoadStream(a + c + u * kWarp);
        wb[u] = LoadStream(b + c + u * kWarp);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        FmaChunk<kKind, kShared>(wa[u], wb[u], x + (c + u * kWarp) * kElems, &acc_a[u], &acc_b[u]);
    }
    for (; c < chunks; c += kWarp)
      FmaChunk<kKind, kShared>(LoadStream(a + c), LoadStream(b + c), x + c * kElems, &acc_a[0], &acc_b[0]);
    sa = (acc_a[0] + acc_a[1]) + (acc_a[2] + acc_a[3]);
    sb = (acc_b[0] + acc_b[1]) + (acc_b[2] + acc_b[3]);
  }
  *out_a = sa;
  *out_b = sb;
}

// Loads x (K floats) into shared memory normalized by RMSNorm with g: the
// RmsNorm kernel's arithmetic (sum of squares in double).
__device__ __forceinline__ void NormalizeIntoShared(const GemvParams& p, float* xs) {
  __shared__ double partial[kWarps];
  __shared__ float inv_s;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < p.K; i += kThreads) {
    const float v = p.x[i];
    xs[i] = v;
    ss += static_cast<double>(v) * v;
  }
  ss = WarpSumD(ss);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) partial[warp] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int i = 0; i < kWarps; ++i) t += partial[i];
    inv_s = static_cast<float>(1.0 / sqrt(t / static_cast<double>(p.K) + p.eps));
  }
  __syncthreads();
  const float inv = inv_s;
  for (int64_t i = threadIdx.x; i < p.K; i += kThreads) xs[i] = LoadAsFloat(p.g, p.g_dt, i) * (xs[i] * inv);
  __syncthreads();
}

template <int kKind, int kEpi, bool kNorm>
__global__ void __launch_bounds__(kThreads) DecodeGemvKernel(const GemvParams p) {
  STRATA_DYNAMIC_SHARED(float4, shared4);
  float* xs = reinterpret_cast<float*>(shared4);
  if constexpr (kNorm) NormalizeIntoShared(p, xs);
  const float* x = kNorm ? xs : p.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int half = p.hd / 2;
  const int64_t qk_pairs = static_cast<int64_t>(p.heads + p.kv_heads) * half;
  const int64_t total = p.rows0 + p.rows1 + p.rows2;

  for (int64_t pair = static_cast<int64_t>(blockIdx.x) * kWarps + warp; pair < p.pairs;
       pair += static_cast<int64_t>(gridDim.x) * kWarps) {
    int64_t ra, rb;
    if constexpr (kEpi == kSwiGlu) {
      ra = pair;            // gate row
      rb = p.rows0 + pair;  // up row
    } else if constexpr (kEpi == kQkvRope) {
      if (pair < qk_pairs) {  // rotation partners: dims i and i + hd/2 of one q or k head
        const int64_t hh = pair / half, i = pair % half;
        ra = hh * p.hd + i;
        rb = ra + half;
      } else {  // v: two adjacent rows
        ra = static_cast<int64_t>(p.heads + p.kv_heads) * p.hd + 2 * (pair - qk_pairs);
        rb = ra + 1;
      }
    } else {
      ra = 2 * pair;
      rb = ra + 1 < total ? ra + 1 : ra;  // an odd last row: computed twice, stored once
    }
    float bias_a, bias_b;
    const char* wa = RowOf(p, ra, p.esz, &bias_a);
    const char* wb = RowOf(p, rb, p.esz, &bias_b);
    float sa, sb;
    Dot2<kKind, kNorm>(wa, wb, x, p.K, p.wdt, lane, &sa, &sb);
    sa = WarpSum(sa);
    sb = WarpSum(sb);
    if (lane != 0) continue;  // (no shuffles below: lane 0 alone finishes the pair)
    sa += bias_a;
    sb += bias_b;
    if constexpr (kEpi == kStore) {
      p.y[ra] = sa;
      if (rb != ra) p.y[rb] = sb;
    } else if constexpr (kEpi == kAccumulate) {
      p.y[ra] += sa;
      if (rb != ra) p.y[rb] += sb;
    } else if constexpr (kEpi == kSwiGlu) {
      p.y[pair] = sa / (1.0f + expf(-sa)) * sb;  // the SwiGlu kernel's formula
    } else {
      const int64_t pos = *p.pos;
      const int64_t kvd = static_cast<int64_t>(p.kv_heads) * p.hd;
      if (pair < qk_pairs) {
        const int64_t hh = pair / half;
        const int i = static_cast<int>(pair % half);
        // The RoPE table kernel's arithmetic: angle and sincos in double.
        double sd, cd;
        sincos(static_cast<double>(pos) * p.inv_freq[i], &sd, &cd);
        const float c = static_cast<float>(cd), s = static_cast<float>(sd);
        const float a = sa * c - sb * s, b = sb * c + sa * s;
        if (hh < p.heads) {
          p.y[hh * p.hd + i] = a;
          p.y[hh * p.hd + i + half] = b;
        } else {
          uint16_t* krow = p.k_cache +
                           KvRowOffset(p.pages.table, p.pages.block_stride, p.pages.block_tokens, kvd, pos) +
                           (hh - p.heads) * p.hd;
          krow[i] = FloatToBf16(a);
          krow[i + half] = FloatToBf16(b);
        }
      } else {
        uint16_t* vrow =
            p.v_cache + KvRowOffset(p.pages.table, p.pages.block_stride, p.pages.block_tokens, kvd, pos);
        const int64_t j = 2 * (pair - qk_pairs);
        vrow[j] = FloatToBf16(sa);
        vrow[j + 1] = FloatToBf16(sb);
      }
    }
  }
}

int64_t g_max_norm_cols = 48 * 1024 / sizeof(float);  // default dynamic shared memory: 48 KiB

template <int kEpi, bool kNorm>
void LaunchKind(const GemvParams& p, Kind kind, size_t smem, cudaStream_t stream) {
  const int64_t blocks64 = std::min<int64_t>(CeilDiv(p.pairs, kWarps), int64_t{1} << 30);
  const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(blocks64, 1));
  void (*kernel)(GemvParams);
  switch (kind) {
    case kBf16: kernel = DecodeGemvKernel<kBf16, kEpi, kNorm>; break;
    case kF16: kernel = DecodeGemvKernel<kF16, kEpi, kNorm>; break;
    case kF32: kernel = DecodeGemvKernel<kF32, kEpi, kNorm>; break;
    default: kernel = DecodeGemvKernel<kAnyDtype, kEpi, kNorm>; break;
  }
  STRATA_LAUNCH(kernel, blocks, kThreads, smem, stream)(p);
  CUDA_CHECK_LAUNCH("DecodeGemvKernel");
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The vector path needs whole 16-byte chunks per row and 16-byte aligned rows
// and input; anything else takes the per-element path.
Kind KindFor(const GemvParams& p, bool x_in_shared) {
  if (p.wdt != DType::kBF16 && p.wdt != DType::kF16 && p.wdt != DType::kF32)
    throw Error("decode GEMV reads BF16, F16 or F32 weights, not " + std::string(DTypeName(p.wdt)));
  const int elems = p.wdt == DType::kF32 ? 4 : 8;
  bool vec = p.K % elems == 0 && (x_in_shared || Aligned16(p.x));
  for (const void* w : {p.w0, p.w1, p.w2}) vec = vec && (w == nullptr || Aligned16(w));
  if (!vec) return kAnyDtype;
  return p.wdt == DType::kBF16 ? kBf16 : p.wdt == DType::kF16 ? kF16 : kF32;
}

GemvParams ParamsFor(const RowStack& w) {
  GemvParams p{};
  p.w0 = w.w[0];
  p.w1 = w.w[1];
  p.w2 = w.w[2];
  p.rows0 = w.rows[0];
  p.rows1 = w.rows[1];
  p.rows2 = w.rows[2];
  p.b0 = w.bias[0];
  p.b1 = w.bias[1];
  p.b2 = w.bias[2];
  p.b0_dt = w.bias_dt[0];
  p.b1_dt = w.bias_dt[1];
  p.b2_dt = w.bias_dt[2];
  p.wdt = w.dtype;
  p.esz = static_cast<int>(DTypeSize(w.dtype));
  p.K = w.cols;
  return p;
}

template <int kEpi>
void LaunchNorm(const NormInput& in, GemvParams p, cudaStream_t stream) {
  if (p.pairs <= 0) return;
  if (p.K > g_max_norm_cols)
    throw Error("fused RMSNorm GEMV: a hidden size of " + std::to_string(p.K) +
                " needs ConfigureDecodeKernels first (internal error)");
  p.x = in.x;
  p.g = in.g;
  p.g_dt = in.g_dt;
  p.eps = in.eps;
  // Shared rows are 16-byte aligned chunks of floats: round up to 4 floats.
  const size_t smem = sizeof(float) * static_cast<size_t>(CeilDiv(p.K, 4) * 4);
  LaunchKind<kEpi, true>(p, KindFor(p, true), smem, stream);
}

template <int kKind, int kEpi>
void SetSmem(int bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(DecodeGemvKernel<kKind, kEpi, true>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <int kEpi>
void SetSmemAllKinds(int bytes) {
  SetSmem<kBf16, kEpi>(bytes);
  SetSmem<kF16, kEpi>(bytes);
  SetSmem<kF32, kEpi>(bytes);
  SetSmem<kAnyDtype, kEpi>(bytes);
}

}  // namespace

void RowStack::Add(const void* weights, DType dt, int64_t r, int64_t c, const void* b, DType bdt) {
  if (parts == 3) throw Error("a decode GEMV stacks at most three tensors (internal error)");
  if (parts > 0 && (dt != dtype || c != cols))
    throw Error(std::string("stacked decode GEMV parts differ: ") + std::string(DTypeName(dtype)) + " x" + std::to_string(cols) +
                " and " + std::string(DTypeName(dt)) + " x" + std::to_string(c));
  w[parts] = weights;
  rows[parts] = r;
  bias[parts] = b;
  bias_dt[parts] = bdt;
  dtype = dt;
  cols = c;
  ++parts;
}

void ConfigureDecodeKernels(int64_t max_cols) {
  const int64_t cols = CeilDiv(max_cols, 4) * 4;
  if (cols <= g_max_norm_cols) return;
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  // The block's own static shared memory (the norm reduction) needs a little more.
  const int64_t bytes = cols * static_cast<int64_t>(sizeof(float));
  if (bytes + 1024 > optin)
    throw Error("the fused decode kernels keep the normalized hidden state in shared memory: a hidden size of " +
                std::to_string(max_cols) + " needs " + std::to_string(bytes) + " bytes, this device allows " +
                std::to_string(optin) + "; use --device cpu");
  SetSmemAllKinds<kStore>(static_cast<int>(bytes));
  SetSmemAllKinds<kSwiGlu>(static_cast<int>(bytes));
  SetSmemAllKinds<kQkvRope>(static_cast<int>(bytes));
  g_max_norm_cols = cols;
}

void NormGemv(const NormInput& in, const RowStack& w, float* y, cudaStream_t stream) {
  GemvParams p = ParamsFor(w);
  p.pairs = CeilDiv(w.total_rows(), 2);
  p.y = y;
  LaunchNorm<kStore>(in, p, stream);
}

void NormGemvSwiGlu(const NormInput& in, const RowStack& w, float* h, cudaStream_t stream) {
  if (w.parts != 2 || w.rows[0] != w.rows[1])
    throw Error("SwiGLU GEMV: expected gate and up of equal rows (internal error)");
  GemvParams p = ParamsFor(w);
  p.pairs = w.rows[0];
  p.y = h;
  LaunchNorm<kSwiGlu>(in, p, stream);
}

void NormGemvQkvRope(const NormInput& in, const RowStack& w, const QkvRopeOutput& out, cudaStream_t stream) {
  const int64_t q = int64_t{out.heads} * out.hd, kv = int64_t{out.kv_heads} * out.hd;
  if (w.parts != 3 || w.rows[0] != q || w.rows[1] != kv || w.rows[2] != kv || out.hd % 2 != 0)
    throw Error("QKV GEMV: q/k/v rows do not match the heads (internal error)");
  GemvParams p = ParamsFor(w);
  p.pairs = (q + 2 * kv) / 2;
  p.y = out.q;
  p.k_cache = out.k_cache;
  p.v_cache = out.v_cache;
  p.pos = out.pos;
  p.inv_freq = out.inv_freq;
  p.heads = out.heads;
  p.kv_heads = out.kv_heads;
  p.hd = out.hd;
  p.pages = out.pages;
  LaunchNorm<kQkvRope>(in, p, stream);
}

void GemvAccumulate(const void* w, DType wdt, int64_t N, int64_t K, const float* x, float* y, cudaStream_t stream) {
  if (N <= 0) return;
  RowStack s;
  s.Add(w, wdt, N, K);
  GemvParams p = ParamsFor(s);
  p.pairs = CeilDiv(N, 2);
  p.x = x;
  p.y = y;
  LaunchKind<kAccumulate, false>(p, KindFor(p, false), 0, stream);
}

// ------------------------------------------------------------------ attention

namespace {

constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / kWarp;
constexpr int kMaxHd = 256;
constexpr int kMaxSplits = 32;

// Grid (heads, splits), 4 warps. A split covers keys [k_begin, k_end) of
// the window [lo, pos]; a warp walks keys j = k_begin + warp + 4t: lane reads
// bf16 pairs of K at dims 2(lane + 32c), the warp reduces the score, keeps an
// online softmax and its V accumulation in registers. The warps merge in
// shared memory; the block writes (acc[hd], m, l) for (head, split). The last
// split block of a head to finish (a counter per head) merges the splits and
// writes the output, then zeroes the counter for the next step.
template <int kPairs>
__global__ void __launch_bounds__(kAttnThreads) DecodeAttentionKernel(
    const float* __restrict__ q, const uint16_t* __restrict__ k_cache, const uint16_t* __restrict__ v_cache,
    const int64_t* __restrict__ pos_ptr, int heads, int kv_heads, int hd, int window, float scale, int splits,
    float* __restrict__ ws, unsigned* __restrict__ counters, float* __restrict__ out, const KvPages pages) {
  __shared__ float sm_acc[kAttnWarps][kMaxHd];
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ bool last_block;
  const int64_t pos = *pos_ptr;
  const int h = blockIdx.x, split = blockIdx.y;
  const int kvh = h / (heads / kv_heads);
  const int64_t kvd = static_cast<int64_t>(kv_heads) * hd;
  const int64_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  const int64_t len = pos - lo + 1;
  const int64_t chunk = (len + splits - 1) / splits;
  const int64_t k_begin = lo + split * chunk;
  const int64_t k_end = k_begin + chunk < pos + 1 ? k_begin + chunk : pos + 1;  // may be <= k_begin: no keys
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int half_hd = hd / 2;

  float2 qv[kPairs], acc[kPairs];
#pragma unroll
  for (int c = 0; c < kPairs; ++c) {
    const int pr = lane + kWarp * c;  // pair index: dims 2pr, 2pr+1
    qv[c] = pr < half_hd ? make_float2(q[static_cast<int64_t>(h) * hd + 2 * pr],
                                       q[static_cast<int64_t>(h) * hd + 2 * pr + 1])
                         : make_float2(0.0f, 0.0f);
    acc[c] = make_float2(0.0f, 0.0f);
  }
  float m_run = -INFINITY, l_run = 0.0f;
  for (int64_t j = k_begin + warp; j < k_end; j += kAttnWarps) {
    const int64_t row = KvRowOffset(pages.table, pages.block_stride, pages.block_tokens, kvd, j);
    const uint32_t* kr = reinterpret_cast<const uint32_t*>(k_cache + row + static_cast<int64_t>(kvh) * hd);
    const uint32_t* vr = reinterpret_cast<const uint32_t*>(v_cache + row + static_cast<int64_t>(kvh) * hd);
    float part = 0.0f;
    uint32_t vu[kPairs];
#pragma unroll
    for (int c = 0; c < kPairs; ++c) {
      const int pr = lane + kWarp * c;
      vu[c] = 0;
      if (pr < half_hd) {
        const uint32_t ku = kr[pr];
        vu[c] = vr[pr];
        part += __uint_as_float(ku << 16) * qv[c].x + __uint_as_float(ku & 0xFFFF0000u) * qv[c].y;
      }
    }
    const float s = WarpSum(part) * scale;
    const float m_new = fmaxf(m_run, s);
    const float corr = expf(m_run - m_new);
    const float pe = expf(s - m_new);
    l_run = l_run * corr + pe;
#pragma unroll
    for (int c = 0; c < kPairs; ++c) {
      acc[c].x = acc[c].x * corr + pe * __uint_as_float(vu[c] << 16);
      acc[c].y = acc[c].y * corr + pe * __uint_as_float(vu[c] & 0xFFFF0000u);
    }
    m_run = m_new;
  }

#pragma unroll
  for (int c = 0; c < kPairs; ++c) {
    const int pr = lane + kWarp * c;
    if (pr < half_hd) {
      sm_acc[warp][2 * pr] = acc[c].x;
      sm_acc[warp][2 * pr + 1] = acc[c].y;
    }
  }
  if (lane == 0) {
    sm_m[warp] = m_run;
    sm_l[warp] = l_run;
  }
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) m_all = fmaxf(m_all, sm_m[w]);
  float* dst = ws + (static_cast<int64_t>(h) * splits + split) * (hd + 2);
  for (int d = threadIdx.x; d < hd; d += kAttnThreads) {
    float a = 0.0f;
    if (m_all != -INFINITY)
      for (int w = 0; w < kAttnWarps; ++w)
        if (sm_m[w] != -INFINITY) a += expf(sm_m[w] - m_all) * sm_acc[w][d];
    dst[d] = a;
  }
  if (threadIdx.x == 0) {
    float l_all = 0.0f;
    if (m_all != -INFINITY)
      for (int w = 0; w < kAttnWarps; ++w)
        if (sm_m[w] != -INFINITY) l_all += expf(sm_m[w] - m_all) * sm_l[w];
    dst[hd] = m_all;  // -inf: this split had no keys
    dst[hd + 1] = l_all;
  }

  // Publish this split; the head's last block combines.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last_block = atomicAdd(&counters[h], 1u) == static_cast<unsigned>(splits - 1);
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  const float* base = ws + static_cast<int64_t>(h) * splits * (hd + 2);
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, __ldcg(base + s * (hd + 2) + hd));
  float l_sum = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float m = __ldcg(base + s * (hd + 2) + hd);
    if (m != -INFINITY) l_sum += expf(m - mx) * __ldcg(base + s * (hd + 2) + hd + 1);
  }
  const float inv = 1.0f / l_sum;  // > 0: key `pos` is in some split
  for (int d = threadIdx.x; d < hd; d += kAttnThreads) {
    float a = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = __ldcg(base + s * (hd + 2) + hd);
      if (m != -INFINITY) a += expf(m - mx) * __ldcg(base + s * (hd + 2) + d);
    }
    out[static_cast<int64_t>(h) * hd + d] = a * inv;
  }
  if (threadIdx.x == 0) counters[h] = 0;
}

}  // namespace

int DecodeSplits(int heads, int sm_count) {
  // Blocks enough to fill the device twice over.
  const int64_t s = CeilDiv(2 * static_cast<int64_t>(std::max(sm_count, 1)), std::max(heads, 1));
  return static_cast<int>(std::clamp<int64_t>(s, 1, kMaxSplits));
}

uint64_t DecodeAttentionWorkspaceBytes(int heads, int hd, int splits) {
  return sizeof(float) * static_cast<uint64_t>(heads) * splits * (hd + 2) + sizeof(unsigned) * heads;
}

void AttentionDecodeAt(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, const int64_t* pos,
                       int heads, int kv_heads, int hd, int window, int splits, void* workspace, float* out,
                       cudaStream_t stream, const KvPages& pages) {
  if (hd <= 0 || hd % 2 != 0 || hd > kMaxHd || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 ||
      heads > 65535 || splits < 1 || splits > kMaxSplits)
    throw Error("decode attention: unsupported shape (heads " + std::to_string(heads) + ", kv_heads " +
                std::to_string(kv_heads) + ", head_dim " + std::to_string(hd) + ", splits " + std::to_string(splits) +
                "); head_dim must be even and <= 256");
  float* ws = static_cast<float*>(workspace);
  unsigned* counters = reinterpret_cast<unsigned*>(ws + static_cast<int64_t>(heads) * splits * (hd + 2));
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(splits));
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  auto kernel = hd <= 64 ? DecodeAttentionKernel<1> : hd <= 128 ? DecodeAttentionKernel<2> : DecodeAttentionKernel<4>;
  STRATA_LAUNCH(kernel, grid, kAttnThreads, 0, stream)(q, k_cache, v_cache, pos, heads, kv_heads, hd, window, scale,
                                                       splits, ws, counters, out, pages);
  CUDA_CHECK_LAUNCH("DecodeAttentionKernel");
}

}  // namespace strata::cuda
