// Prefill attention (see attention_prefill.cuh): a tensor-core kernel for head
// dims that are multiples of 16 up to 128 (sm_80 and later), and an fp32
// CUDA-core kernel for every other even head dim up to 256.
//
// Tensor-core kernel (FlashAttention-2 order: queries outer, keys inner).
// Block: one head x 64 queries, 4 warps, warp w owns query rows [16w, 16w+16).
// Per tile of 64 keys the block copies K and V (bf16, rows past the block's
// last query zeroed) into shared memory; each warp then
//   S = Q K^T        wmma m16n16k16, bf16 in, fp32 out, stored to its own
//                    fp32 16x64 tile in shared memory;
//   softmax          lanes 2r and 2r+1 take row r (32 keys each): scale, mask
//                    (causal and sliding window), online update of the row's
//                    running max m and sum l, P = exp(s - m) written as bf16,
//                    and the factor exp(m_old - m_new) for the row;
//   O = O*corr + P V O stays in wmma accumulator fragments for the whole
//                    loop. The accumulator's element -> (row, col) mapping is
//                    unspecified, so the kernel learns it: it loads a 16x16
//                    matrix whose element (r, c) is r into an accumulator
//                    fragment once, and element i of every accumulator
//                    fragment then lies in row rid[i] (load, store and mma
//                    share one register layout per fragment type, which is
//                    what makes store(mma(load(C))) = A B + C). Rescaling
//                    element i by corr[rid[i]] is the per-row rescale.
// Tiles above the block's last query, or before the window of its first, are
// never loaded; a warp skips the tiles none of its rows can see.
//
// Numerics: K and V are used as stored (bf16). Q is rounded to bf16 (round
// to nearest even) once, and P = exp(s - m) is rounded to bf16 before P V;
// l sums the rounded P, so the output is an average of V rows whose weights
// sum to 1 up to fp32 rounding. Products are exact and accumulated in fp32 by
// the tensor cores; scale, max, exp and sums are fp32 with the full-precision
// expf (no fast math). Against an exact reference the error is about 1e-3 of
// max |out| (bf16 rounding of Q and P, as transformers' bf16 attention does);
// tests allow 1e-2 of max |out| against a float64 reference with Q rounded to
// bf16, and 2e-2 against the fp32 CPU kernel.
// Shared memory: 384 * (hd + 8) + 27136 bytes, 35.5 KiB at hd 16 to 77.5 KiB
// at hd 128 (TcSmem), so 2 blocks per SM at hd 128 on H100/H200.
// A row's running max stays -inf until it meets a valid key, and while it is
// -inf the row's P is 0 and its factor 1, so exp(-inf - -inf) never happens.
//
// Fallback kernel (fp32): 4 warps, 16 queries (4 per warp) of one head. Per
// tile of 32 keys, K and V rows are converted to fp32 in shared memory (rows
// padded by one float, so lane l reading row l is conflict-free). Scores: lane
// l computes the dot product of key l with each of its warp's 4 queries.
// Softmax: online (running max m, running sum l) per query. PV: lane owns dims
// lane + 32c and takes each key's probability from a shuffle.
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "attention_prefill.cuh"
#include "cuda_check.h"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

// ---------------------------------------------------------------------------
// Fallback: fp32 on CUDA cores, any even hd <= 256.

constexpr int kFbThreads = 128;
constexpr int kFbWarps = kFbThreads / kWarp;
constexpr int kFbQPerWarp = 4;
constexpr int kFbBq = kFbWarps * kFbQPerWarp;  // 16 queries per block
constexpr int kFbBk = kWarp;                   // 32 keys per tile: one per lane

// kDpl: head dims per lane (hd <= 32 * kDpl).
template <int kDpl>
__global__ void __launch_bounds__(kFbThreads)
    FallbackKernel(const float* __restrict__ q_in, int64_t q_ld, const uint16_t* __restrict__ k_cache,
                   const uint16_t* __restrict__ v_cache, const KvPages pages, const AttentionItem* __restrict__ items,
                   const AttentionTile* __restrict__ tiles, const AttentionItem single, int heads, int kv_heads, int hd,
                   int window, float scale, float* __restrict__ out_in, int64_t out_ld) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int ks = hd + 1;  // padded row stride of the K/V tiles
  float* q_s = smem;              // kFbBq x hd
  float* k_s = q_s + kFbBq * hd;  // kFbBk x ks
  float* v_s = k_s + kFbBk * ks;  // kFbBk x ks

  const int h = blockIdx.y;
  const int kvh = h / (heads / kv_heads);
  const int64_t kvd = static_cast<int64_t>(kv_heads) * hd;
  // This block's sequence and queries: a tile of a batch, or of the one item.
  AttentionItem it = single;
  int64_t q0 = static_cast<int64_t>(blockIdx.x) * kFbBq;
  if (items) {
    const AttentionTile tile = tiles[blockIdx.x];
    it = items[tile.item];
    q0 = tile.q0;
  }
  const int64_t M = it.n, pos0 = it.pos0;
  const int32_t* table = pages.table ? pages.table + it.table_off : nullptr;
  const float* q = q_in + it.row0 * q_ld;
  float* out = out_in + it.row0 * out_ld;
  const int nq = static_cast<int>(M - q0 < kFbBq ? M - q0 : kFbBq);  // >= 1: the tiles cover M exactly
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;

  for (int t = threadIdx.x; t < kFbBq * hd; t += kFbThreads) {
    const int r = t / hd, d = t % hd;
    q_s[t] = r < nq ? q[(q0 + r) * q_ld + static_cast<int64_t>(h) * hd + d] : 0.0f;
  }

  int64_t qpos[kFbQPerWarp];  // position of each of this warp's queries; -1: none
#pragma unroll
  for (int i = 0; i < kFbQPerWarp; ++i) {
    const int r = warp * kFbQPerWarp + i;
    qpos[i] = r < nq ? pos0 + q0 + r : -1;
  }
  float m_run[kFbQPerWarp], l_run[kFbQPerWarp], acc[kFbQPerWarp][kDpl];
#pragma unroll
  for (int i = 0; i < kFbQPerWarp; ++i) {
    m_run[i] = -INFINITY;
    l_run[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kDpl; ++c) acc[i][c] = 0.0f;
  }

  const int64_t p_first = pos0 + q0, p_last = pos0 + q0 + nq - 1;
  int64_t j_lo = 0;
  if (window > 0 && p_first - window + 1 > 0) j_lo = p_first - window + 1;
  for (int64_t t0 = j_lo; t0 <= p_last; t0 += kFbBk) {
    __syncthreads();  // the previous tile is consumed (first pass: q_s is written)
    for (int t = threadIdx.x; t < kFbBk * hd; t += kFbThreads) {
      const int r = t / hd, d = t % hd;
      const int64_t j = t0 + r;
      float kf = 0.0f, vf = 0.0f;  // rows past the block's last query stay 0 (masked, never NaN)
      if (j <= p_last) {
        const int64_t off =
            KvRowOffset(table, pages.block_stride, pages.block_tokens, kvd, j) + static_cast<int64_t>(kvh) * hd + d;
        kf = Bf16ToFloat(k_cache[off]);
        vf = Bf16ToFloat(v_cache[off]);
      }
      k_s[r * ks + d] = kf;
      v_s[r * ks + d] = vf;
    }
    __syncthreads();

    float s[kFbQPerWarp];
#pragma unroll
    for (int i = 0; i < kFbQPerWarp; ++i) s[i] = 0.0f;
    const float* kr = k_s + lane * ks;
    const float* qw = q_s + warp * kFbQPerWarp * hd;
    for (int d = 0; d < hd; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int i = 0; i < kFbQPerWarp; ++i) s[i] += qw[i * hd + d] * kd;
    }

    const int64_t j = t0 + lane;
#pragma unroll
    for (int i = 0; i < kFbQPerWarp; ++i) {
      const int64_t p = qpos[i];
      const bool valid = p >= 0 && j <= p && (window <= 0 || p - j < window);
      const float sc = valid ? s[i] * scale : -INFINITY;
      const float m_new = fmaxf(m_run[i], WarpMax(sc));
      if (m_new == -INFINITY) continue;  // warp-uniform: no valid key for this query yet
      const float corr = expf(m_run[i] - m_new);  // 0 while m_run is -inf
      const float pe = valid ? expf(sc - m_new) : 0.0f;
      l_run[i] = l_run[i] * corr + WarpSum(pe);
#pragma unroll
      for (int c = 0; c < kDpl; ++c) acc[i][c] *= corr;
      for (int kk = 0; kk < kFbBk; ++kk) {
        const float pk = __shfl_sync(0xffffffffu, pe, kk);
        const float* vr = v_s + kk * ks;
#pragma unroll
        for (int c = 0; c < kDpl; ++c) {
          const int d = lane + kWarp * c;
          if (d < hd) acc[i][c] += pk * vr[d];
        }
      }
      m_run[i] = m_new;
    }
  }

#pragma unroll
  for (int i = 0; i < kFbQPerWarp; ++i) {
    const int r = warp * kFbQPerWarp + i;
    if (r >= nq) continue;
    const float inv = 1.0f / l_run[i];  // l_run > 0: key p itself is always valid
    float* o = out + (q0 + r) * out_ld + static_cast<int64_t>(h) * hd;
#pragma unroll
    for (int c = 0; c < kDpl; ++c) {
      const int d = lane + kWarp * c;
      if (d < hd) o[d] = acc[i][c] * inv;
    }
  }
}

// grid.x: the tiles of `items` (n_tiles), or the 16-query tiles of `single`.
template <int kDpl>
void LaunchFallback(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache,
                    const KvPages& pages, const AttentionItem* items, const AttentionTile* tiles, int64_t n_tiles,
                    const AttentionItem& single, int heads, int kv_heads, int hd, int window, float* out,
                    int64_t out_ld, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (static_cast<size_t>(kFbBq) * hd + 2 * static_cast<size_t>(kFbBk) * (hd + 1));
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(FallbackKernel<kDpl>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  const int64_t blocks = items ? n_tiles : CeilDiv(single.n, kFbBq);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(heads));
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  STRATA_LAUNCH(FallbackKernel<kDpl>, grid, kFbThreads, smem, stream)(q, q_ld, k_cache, v_cache, pages, items, tiles,
                                                                      single, heads, kv_heads, hd, window, scale, out,
                                                                      out_ld);
  CUDA_CHECK_LAUNCH("attention prefill FallbackKernel");
}

// ---------------------------------------------------------------------------
// Tensor cores: wmma m16n16k16, bf16 in, fp32 accumulate; hd = kHd, a
// multiple of 16 and <= 128.

namespace wmma = nvcuda::wmma;

constexpr int kTcWarps = 4;
constexpr int kTcThreads = kTcWarps * kWarp;  // 128
constexpr int kTcBq = 16 * kTcWarps;          // 64 queries per block, 16 rows per warp
constexpr int kTcBk = 64;                     // keys per tile
constexpr int kTcK16 = kTcBk / 16;            // 16-key column blocks of a score tile
constexpr int kSLd = kTcBk + 4;               // fp32 score tile row stride: 68 floats (wmma: multiple of 4)
constexpr int kPLd = kTcBk + 8;               // bf16 probability tile row stride: 72 (wmma: multiple of 8)
constexpr int kCols = kTcBk / 2;              // score columns per lane: a lane pair owns a row
static_assert(kTcBk == 2 * kWarp, "softmax: lanes 2r and 2r+1 share row r, 32 keys each");

// Dynamic shared memory, in bytes from a 128-byte aligned base. Every region
// starts at a multiple of 128 bytes, and row strides (hd + 8 bf16, 68 floats,
// 72 bf16) keep every wmma fragment pointer 32-byte aligned: a fragment
// starts at row 16i and column 16j, i.e. at 32 * (i * ld + j) bytes (bf16) or
// 64 * (i * ld + j) bytes (fp32). Strides of 4 words mod 32 banks keep the
// 8-row fragment accesses free of bank conflicts.
template <int kHd>
struct TcSmem {
  static constexpr int kLd = kHd + 8;  // bf16 row stride of the Q, K and V tiles
  static constexpr size_t kQ = 0;                                                        // (64, kLd) bf16
  static constexpr size_t kK = kQ + sizeof(__nv_bfloat16) * kTcBq * kLd;                 // (64, kLd) bf16
  static constexpr size_t kV = kK + sizeof(__nv_bfloat16) * kTcBk * kLd;                 // (64, kLd) bf16
  static constexpr size_t kS = kV + sizeof(__nv_bfloat16) * kTcBk * kLd;                 // (4, 16, 68) fp32
  static constexpr size_t kP = kS + sizeof(float) * kTcWarps * 16 * kSLd;                // (4, 16, 72) bf16
  static constexpr size_t kRow = kP + sizeof(__nv_bfloat16) * kTcWarps * 16 * kPLd;      // (2, 4, 16) fp32
  static constexpr size_t kBytes = kRow + sizeof(float) * 2 * kTcWarps * 16;
  static_assert(kHd % 16 == 0 && kHd >= 16 && kHd <= 128, "tensor-core head dims");
  static_assert(kK % 128 == 0 && kV % 128 == 0 && kS % 128 == 0 && kP % 128 == 0 && kRow % 128 == 0,
                "regions 128-byte aligned");
  static_assert(kLd % 8 == 0 && kSLd % 4 == 0 && kPLd % 8 == 0, "wmma ldm rules");
  static_assert(kBytes <= 160 * 1024, "fits an A100 block (163 KiB) as well as an H100/H200 one (227 KiB)");
};

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
constexpr int kAccElems = FragAcc::num_elements;

// Cache rows [t0, t0 + 64) of kv head kvh into k_s, v_s ((64, kHd + 8) bf16);
// rows past j_end are zero so that masked scores and 0 * V stay finite.
// vec: both caches 16-byte aligned, so every row (kvd and kvh * kHd are
// multiples of 16 elements) can be read in 16-byte pieces.
template <int kHd>
__device__ __forceinline__ void LoadKvTile(const uint16_t* __restrict__ k_cache, const uint16_t* __restrict__ v_cache,
                                           const int32_t* table, const KvPages& pages, int64_t kvd, int kvh,
                                           int64_t t0, int64_t j_end, bool vec, __nv_bfloat16* k_s,
                                           __nv_bfloat16* v_s) {
  constexpr int kLd = TcSmem<kHd>::kLd;
  const int64_t col0 = static_cast<int64_t>(kvh) * kHd;
  if (vec) {
    constexpr int kPieces = kHd / 8;  // 16-byte pieces per row
    for (int t = threadIdx.x; t < kTcBk * kPieces; t += kTcThreads) {
      const int r = t / kPieces, c = (t % kPieces) * 8;
      const int64_t j = t0 + r;
      uint4 kw = make_uint4(0u, 0u, 0u, 0u), vw = kw;
      if (j <= j_end) {
        const int64_t off = KvRowOffset(table, pages.block_stride, pages.block_tokens, kvd, j) + col0 + c;
        kw = __ldg(reinterpret_cast<const uint4*>(k_cache + off));
        vw = __ldg(reinterpret_cast<const uint4*>(v_cache + off));
      }
      *reinterpret_cast<uint4*>(k_s + r * kLd + c) = kw;
      *reinterpret_cast<uint4*>(v_s + r * kLd + c) = vw;
    }
  } else {
    for (int t = threadIdx.x; t < kTcBk * kHd; t += kTcThreads) {
      const int r = t / kHd, d = t % kHd;
      const int64_t j = t0 + r;
      uint16_t kb = 0, vb = 0;
      if (j <= j_end) {
        const int64_t off = KvRowOffset(table, pages.block_stride, pages.block_tokens, kvd, j) + col0 + d;
        kb = k_cache[off];
        vb = v_cache[off];
      }
      k_s[r * kLd + d] = __ushort_as_bfloat16(kb);
      v_s[r * kLd + d] = __ushort_as_bfloat16(vb);
    }
  }
}

// One block: head blockIdx.y, queries [64 * blockIdx.x, + 64). vec: see
// LoadKvTile. Min 1 block per SM in the launch bounds lets ptxas use up to 255
// registers (shared memory allows only 2 blocks per SM at hd 128 anyway);
// without it ptxas aimed at 168 registers and spilled.
template <int kHd>
__global__ void __launch_bounds__(kTcThreads, 1)
    TensorCoreKernel(const float* __restrict__ q_in, int64_t q_ld, const uint16_t* __restrict__ k_cache,
                     const uint16_t* __restrict__ v_cache, const KvPages pages, const AttentionItem* __restrict__ items,
                     const AttentionTile* __restrict__ tiles, const AttentionItem single, int heads, int kv_heads,
                     int window, bool vec, float scale, float* __restrict__ out_in, int64_t out_ld) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 wmma needs sm_80; AttentionPrefill never selects this kernel below it
#else
  using L = TcSmem<kHd>;
  constexpr int kLd = L::kLd;
  constexpr int kD16 = kHd / 16;  // 16-wide column blocks of a head
  STRATA_DYNAMIC_SHARED(unsigned char, tc_smem);  // 128-byte aligned
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(tc_smem + L::kQ);  // (64, kLd)
  __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(tc_smem + L::kK);  // (64 keys, kLd)
  __nv_bfloat16* v_s = reinterpret_cast<__nv_bfloat16*>(tc_smem + L::kV);  // (64 keys, kLd)
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float* s_w = reinterpret_cast<float*>(tc_smem + L::kS) + warp * 16 * kSLd;                  // (16, kSLd)
  __nv_bfloat16* p_w = reinterpret_cast<__nv_bfloat16*>(tc_smem + L::kP) + warp * 16 * kPLd;  // (16, kPLd)
  float* corr_w = reinterpret_cast<float*>(tc_smem + L::kRow) + warp * 16;                    // (16)
  float* l_w = reinterpret_cast<float*>(tc_smem + L::kRow) + (kTcWarps + warp) * 16;          // (16)

  const int h = blockIdx.y;
  const int kvh = h / (heads / kv_heads);
  const int64_t kvd = static_cast<int64_t>(kv_heads) * kHd;
  // This block's sequence and queries: a tile of a batch, or of the one item.
  AttentionItem it = single;
  int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTcBq;
  if (items) {
    const AttentionTile tile = tiles[blockIdx.x];
    it = items[tile.item];
    q0 = tile.q0;
  }
  const int64_t M = it.n, pos0 = it.pos0;
  const int32_t* table = pages.table ? pages.table + it.table_off : nullptr;
  const float* q = q_in + it.row0 * q_ld;
  float* out = out_in + it.row0 * out_ld;
  const int nq = static_cast<int>(M - q0 < kTcBq ? M - q0 : kTcBq);  // >= 1: the tiles cover M exactly
  const int r0 = warp * 16;                                           // the warp's first row in the block
  const int nr = nq - r0 < 0 ? 0 : (nq - r0 < 16 ? nq - r0 : 16);     // its rows that are queries
  const int64_t wp_first = pos0 + q0 + r0, wp_last = wp_first + nr - 1;

  // Q tile in bf16; rows past M are zero (never written out).
  for (int t = threadIdx.x; t < kTcBq * kHd; t += kTcThreads) {
    const int r = t / kHd, d = t % kHd;
    const float v = r < nq ? q[(q0 + r) * q_ld + static_cast<int64_t>(h) * kHd + d] : 0.0f;
    q_s[r * kLd + d] = __float2bfloat16_rn(v);
  }

  // rid[i]: the row of element i in every accumulator fragment (see the top).
  int rid[kAccElems];
  {
    for (int t = lane; t < 256; t += kWarp) s_w[(t / 16) * kSLd + t % 16] = static_cast<float>(t / 16);
    __syncwarp();
    FragAcc f;
    wmma::load_matrix_sync(f, s_w, kSLd, wmma::mem_row_major);
#pragma unroll
    for (int i = 0; i < kAccElems; ++i) rid[i] = static_cast<int>(f.x[i]);
    __syncwarp();
  }

  FragAcc o[kD16];
#pragma unroll
  for (int n = 0; n < kD16; ++n) wmma::fill_fragment(o[n], 0.0f);

  // Softmax ownership: lanes 2r and 2r+1 hold row r's state (the same values
  // in both). Lane half x reads columns 32x + (i ^ rot), i < 32: rot < 4
  // permutes each group of 4 columns so that the 32 lanes hit 32 different
  // banks of the fp32 score tile (row stride 68 = 4 mod 32 words).
  const int sr = lane >> 1, half = lane & 1;
  const int rot = ((sr >> 3) << 1) | half;
  float m_run = -INFINITY, l_run = 0.0f;

  const int64_t p_first = pos0 + q0, p_last = pos0 + q0 + nq - 1;
  int64_t j_lo = 0;
  if (window > 0 && p_first - window + 1 > 0) j_lo = p_first - window + 1;
  for (int64_t t0 = j_lo; t0 <= p_last; t0 += kTcBk) {  // block-uniform trip count
    __syncthreads();                                    // every warp is done with the previous K/V tile
    LoadKvTile<kHd>(k_cache, v_cache, table, pages, kvd, kvh, t0, p_last, vec, k_s, v_s);
    __syncthreads();
    // Keys the warp's rows can see lie in [wp_first - window + 1, wp_last].
    const bool active = nr > 0 && t0 <= wp_last && (window <= 0 || t0 + kTcBk - 1 > wp_first - window);
    if (!active) continue;  // warp-uniform; the next __syncthreads is reached by every thread

    // S = Q K^T: K_s rows are keys, so K^T is K_s read column-major. Q comes
    // from shared memory every tile: holding it in registers as well as O
    // (up to 96 + 64 registers at hd 128) made ptxas spill.
    {
      FragAcc s[kTcK16];
#pragma unroll
      for (int n = 0; n < kTcK16; ++n) wmma::fill_fragment(s[n], 0.0f);
#pragma unroll 1  // bounds the K fragments in flight (register pressure)
      for (int kk = 0; kk < kD16; ++kk) {
        FragA qa;
        wmma::load_matrix_sync(qa, q_s + r0 * kLd + kk * 16, kLd);
#pragma unroll
        for (int n = 0; n < kTcK16; ++n) {
          FragBCol kb;
          wmma::load_matrix_sync(kb, k_s + n * 16 * kLd + kk * 16, kLd);
          wmma::mma_sync(s[n], qa, kb, s[n]);
        }
      }
#pragma unroll
      for (int n = 0; n < kTcK16; ++n) wmma::store_matrix_sync(s_w + n * 16, s[n], kSLd, wmma::mem_row_major);
    }
    __syncwarp();

    // Row sr sees tile columns [c_lo, c_hi]; none when it is not a query.
    int c_lo = 0, c_hi = -1;
    if (sr < nr) {
      const int64_t p = wp_first + sr;
      const int64_t hi = p - t0;  // >= -63: t0 <= p_last < p + 64
      c_hi = static_cast<int>(hi < kTcBk - 1 ? (hi < -1 ? -1 : hi) : kTcBk - 1);
      if (window > 0) {
        const int64_t lo = p - window + 1 - t0;
        c_lo = static_cast<int>(lo < 0 ? 0 : (lo > kTcBk ? kTcBk : lo));
      }
    }
    float sv[kCols];
    float mt = -INFINITY;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = half * kCols + (i ^ rot);
      const float x = s_w[sr * kSLd + c] * scale;
      sv[i] = c >= c_lo && c <= c_hi ? x : -INFINITY;
      mt = fmaxf(mt, sv[i]);
    }
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    const float m_new = fmaxf(m_run, mt);
    const bool seen = m_new != -INFINITY;  // false: no valid key for this row so far
    const float corr = seen ? expf(m_run - m_new) : 1.0f;  // 0 when m_run is still -inf
    float psum = 0.0f;
#pragma unroll
    for (int i = 0; i < kCols; ++i) {
      const int c = half * kCols + (i ^ rot);
      const __nv_bfloat16 pb = __float2bfloat16_rn(seen ? expf(sv[i] - m_new) : 0.0f);  // masked: exp(-inf) = 0
      p_w[sr * kPLd + c] = pb;
      psum += __bfloat162float(pb);
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l_run = l_run * corr + psum;
    m_run = m_new;
    if (half == 0) corr_w[sr] = corr;
    __syncwarp();

    // O = O * corr (per row) + P V.
    float cf[kAccElems];
#pragma unroll
    for (int i = 0; i < kAccElems; ++i) cf[i] = corr_w[rid[i]];
#pragma unroll
    for (int n = 0; n < kD16; ++n) {
#pragma unroll
      for (int i = 0; i < kAccElems; ++i) o[n].x[i] *= cf[i];
    }
#pragma unroll 1  // bounds the V fragments in flight (register pressure)
    for (int kk = 0; kk < kTcK16; ++kk) {
      FragA pa;
      wmma::load_matrix_sync(pa, p_w + kk * 16, kPLd);
#pragma unroll
      for (int n = 0; n < kD16; ++n) {
        FragBRow vb;
        wmma::load_matrix_sync(vb, v_s + kk * 16 * kLd + n * 16, kLd);
        wmma::mma_sync(o[n], pa, vb, o[n]);
      }
    }
  }
  if (nr == 0) return;  // no __syncthreads below

  // out = O / l, staged through s_w up to 4 fragments (64 columns) at a time.
  // l > 0 for every query row: its own key p is always valid.
  if (half == 0) l_w[sr] = l_run;
  __syncwarp();
  float* o_base = out + (q0 + r0) * out_ld + static_cast<int64_t>(h) * kHd;
#pragma unroll
  for (int n = 0; n < kD16; ++n) {
    wmma::store_matrix_sync(s_w + (n % kTcK16) * 16, o[n], kSLd, wmma::mem_row_major);
    if (n % kTcK16 == kTcK16 - 1 || n == kD16 - 1) {
      __syncwarp();
      const int c0 = (n / kTcK16) * kTcK16 * 16;  // first head column staged
      const int w = (n + 1) * 16 - c0;            // columns staged
      for (int t = lane; t < 16 * w; t += kWarp) {
        const int r = t / w, c = t % w;
        if (r < nr) o_base[r * out_ld + c0 + c] = s_w[r * kSLd + c] / l_w[r];
      }
      __syncwarp();
    }
  }
#endif
}

template <int kHd>
void LaunchTensorCore(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache,
                      const KvPages& pages, const AttentionItem* items, const AttentionTile* tiles, int64_t n_tiles,
                      const AttentionItem& single, int heads, int kv_heads, int window, float* out, int64_t out_ld,
                      cudaStream_t stream) {
  constexpr size_t smem = TcSmem<kHd>::kBytes;
  if constexpr (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(TensorCoreKernel<kHd>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  // Whole 16-byte pieces: both bases aligned, and (paged) every block too.
  const bool vec = reinterpret_cast<uintptr_t>(k_cache) % 16 == 0 && reinterpret_cast<uintptr_t>(v_cache) % 16 == 0 &&
                   (pages.table == nullptr || pages.block_stride % 8 == 0);
  const int64_t blocks = items ? n_tiles : CeilDiv(single.n, kTcBq);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(heads));
  const float scale = 1.0f / sqrtf(static_cast<float>(kHd));
  STRATA_LAUNCH(TensorCoreKernel<kHd>, grid, kTcThreads, smem, stream)(q, q_ld, k_cache, v_cache, pages, items, tiles,
                                                                       single, heads, kv_heads, window, vec, scale, out,
                                                                       out_ld);
  CUDA_CHECK_LAUNCH("attention prefill TensorCoreKernel");
}

// bf16 wmma needs compute capability 8.0 (the build targets sm_80 and sm_90).
bool DeviceHasBf16TensorCores() {
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 8;
}

}  // namespace

namespace {

bool OnTensorCores(int hd) { return hd % 16 == 0 && hd <= 128 && DeviceHasBf16TensorCores(); }

void CheckShape(int heads, int kv_heads, int hd) {
  if (hd <= 0 || hd % 2 != 0 || hd > 256 || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || heads > 65535)
    throw Error("attention: unsupported shape (heads " + std::to_string(heads) + ", kv_heads " +
                std::to_string(kv_heads) + ", head_dim " + std::to_string(hd) + "); head_dim must be even and <= 256");
}

void Dispatch(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache, const KvPages& pages,
              const AttentionItem* items, const AttentionTile* tiles, int64_t n_tiles, const AttentionItem& single,
              int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld, cudaStream_t stream) {
  if (OnTensorCores(hd)) {
    using Launcher = void (*)(const float*, int64_t, const uint16_t*, const uint16_t*, const KvPages&,
                              const AttentionItem*, const AttentionTile*, int64_t, const AttentionItem&, int, int, int,
                              float*, int64_t, cudaStream_t);
    constexpr Launcher kByHd16[] = {LaunchTensorCore<16>, LaunchTensorCore<32>, LaunchTensorCore<48>,
                                    LaunchTensorCore<64>, LaunchTensorCore<80>, LaunchTensorCore<96>,
                                    LaunchTensorCore<112>, LaunchTensorCore<128>};
    kByHd16[hd / 16 - 1](q, q_ld, k_cache, v_cache, pages, items, tiles, n_tiles, single, heads, kv_heads, window, out,
                         out_ld, stream);
    return;
  }
  if (hd <= 64)
    LaunchFallback<2>(q, q_ld, k_cache, v_cache, pages, items, tiles, n_tiles, single, heads, kv_heads, hd, window,
                      out, out_ld, stream);
  else if (hd <= 128)
    LaunchFallback<4>(q, q_ld, k_cache, v_cache, pages, items, tiles, n_tiles, single, heads, kv_heads, hd, window,
                      out, out_ld, stream);
  else
    LaunchFallback<8>(q, q_ld, k_cache, v_cache, pages, items, tiles, n_tiles, single, heads, kv_heads, hd, window,
                      out, out_ld, stream);
}

}  // namespace

int AttentionPrefillTileQueries(int hd) { return OnTensorCores(hd) ? kTcBq : kFbBq; }

void AttentionPrefill(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache, int64_t M,
                      int64_t pos0, int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld,
                      cudaStream_t stream) {
  if (M <= 0) return;
  CheckShape(heads, kv_heads, hd);
  AttentionItem single;
  single.n = M;
  single.pos0 = pos0;
  Dispatch(q, q_ld, k_cache, v_cache, KvPages{}, nullptr, nullptr, 0, single, heads, kv_heads, hd, window, out, out_ld,
           stream);
}

void AttentionPrefillBatch(const float* q, int64_t q_ld, const uint16_t* k_base, const uint16_t* v_base,
                           const KvPages& pages, const AttentionItem* items, const AttentionTile* tiles,
                           int64_t n_tiles, int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld,
                           cudaStream_t stream) {
  if (n_tiles <= 0) return;
  CheckShape(heads, kv_heads, hd);
  if (n_tiles > INT32_MAX) throw Error("attention: too many query tiles in one batch");
  Dispatch(q, q_ld, k_base, v_base, pages, items, tiles, n_tiles, AttentionItem{}, heads, kv_heads, hd, window, out,
           out_ld, stream);
}

}  // namespace strata::cuda
