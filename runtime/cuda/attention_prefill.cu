// Prefill attention (see attention_prefill.cuh).
//
// Block: 4 warps, 16 queries (4 per warp) of one head. Per tile of 32 keys,
// K and V rows are converted to fp32 in shared memory (rows padded by one
// float, so lane l reading row l is conflict-free). Scores: lane l computes
// the dot product of key l with each of its warp's 4 queries. Softmax: online
// (running max m, running sum l) per query. PV: lane owns dims lane + 32c and
// takes each key's probability from a shuffle.
#include <cmath>
#include <string>

#include "attention_prefill.cuh"
#include "cuda_check.h"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarp;
constexpr int kQPerWarp = 4;
constexpr int kBq = kWarps * kQPerWarp;  // 16 queries per block
constexpr int kBk = kWarp;               // 32 keys per tile: one per lane

// kDpl: head dims per lane (hd <= 32 * kDpl).
template <int kDpl>
__global__ void __launch_bounds__(kThreads) PrefillKernel(const float* __restrict__ q, int64_t q_ld,
                                                          const uint16_t* __restrict__ k_cache,
                                                          const uint16_t* __restrict__ v_cache, int64_t M,
                                                          int64_t pos0, int heads, int kv_heads, int hd, int window,
                                                          float scale, float* __restrict__ out, int64_t out_ld) {
  extern __shared__ float smem[];
  const int ks = hd + 1;  // padded row stride of the K/V tiles
  float* q_s = smem;              // kBq x hd
  float* k_s = q_s + kBq * hd;    // kBk x ks
  float* v_s = k_s + kBk * ks;    // kBk x ks

  const int h = blockIdx.y;
  const int kvh = h / (heads / kv_heads);
  const int64_t kvd = static_cast<int64_t>(kv_heads) * hd;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kBq;
  const int nq = static_cast<int>(M - q0 < kBq ? M - q0 : kBq);  // >= 1: the grid covers M exactly
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;

  for (int t = threadIdx.x; t < kBq * hd; t += kThreads) {
    const int r = t / hd, d = t % hd;
    q_s[t] = r < nq ? q[(q0 + r) * q_ld + static_cast<int64_t>(h) * hd + d] : 0.0f;
  }

  int64_t qpos[kQPerWarp];  // position of each of this warp's queries; -1: none
#pragma unroll
  for (int i = 0; i < kQPerWarp; ++i) {
    const int r = warp * kQPerWarp + i;
    qpos[i] = r < nq ? pos0 + q0 + r : -1;
  }
  float m_run[kQPerWarp], l_run[kQPerWarp], acc[kQPerWarp][kDpl];
#pragma unroll
  for (int i = 0; i < kQPerWarp; ++i) {
    m_run[i] = -INFINITY;
    l_run[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < kDpl; ++c) acc[i][c] = 0.0f;
  }

  const int64_t p_first = pos0 + q0, p_last = pos0 + q0 + nq - 1;
  int64_t j_lo = 0;
  if (window > 0 && p_first - window + 1 > 0) j_lo = p_first - window + 1;
  for (int64_t t0 = j_lo; t0 <= p_last; t0 += kBk) {
    __syncthreads();  // the previous tile is consumed (first pass: q_s is written)
    for (int t = threadIdx.x; t < kBk * hd; t += kThreads) {
      const int r = t / hd, d = t % hd;
      const int64_t j = t0 + r;
      float kf = 0.0f, vf = 0.0f;  // rows past the block's last query stay 0 (masked, never NaN)
      if (j <= p_last) {
        const int64_t off = j * kvd + static_cast<int64_t>(kvh) * hd + d;
        kf = Bf16ToFloat(k_cache[off]);
        vf = Bf16ToFloat(v_cache[off]);
      }
      k_s[r * ks + d] = kf;
      v_s[r * ks + d] = vf;
    }
    __syncthreads();

    float s[kQPerWarp];
#pragma unroll
    for (int i = 0; i < kQPerWarp; ++i) s[i] = 0.0f;
    const float* kr = k_s + lane * ks;
    const float* qw = q_s + warp * kQPerWarp * hd;
    for (int d = 0; d < hd; ++d) {
      const float kd = kr[d];
#pragma unroll
      for (int i = 0; i < kQPerWarp; ++i) s[i] += qw[i * hd + d] * kd;
    }

    const int64_t j = t0 + lane;
#pragma unroll
    for (int i = 0; i < kQPerWarp; ++i) {
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
      for (int kk = 0; kk < kBk; ++kk) {
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
  for (int i = 0; i < kQPerWarp; ++i) {
    const int r = warp * kQPerWarp + i;
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

template <int kDpl>
void Launch(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache, int64_t M, int64_t pos0,
            int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (static_cast<size_t>(kBq) * hd + 2 * static_cast<size_t>(kBk) * (hd + 1));
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(PrefillKernel<kDpl>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(CeilDiv(M, kBq)), static_cast<unsigned>(heads));
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  PrefillKernel<kDpl><<<grid, kThreads, smem, stream>>>(q, q_ld, k_cache, v_cache, M, pos0, heads, kv_heads, hd,
                                                        window, scale, out, out_ld);
  CUDA_CHECK_LAUNCH("PrefillKernel");
}

}  // namespace

void AttentionPrefill(const float* q, int64_t q_ld, const uint16_t* k_cache, const uint16_t* v_cache, int64_t M,
                      int64_t pos0, int heads, int kv_heads, int hd, int window, float* out, int64_t out_ld,
                      cudaStream_t stream) {
  if (M <= 0) return;
  if (hd <= 0 || hd % 2 != 0 || hd > 256 || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || heads > 65535)
    throw Error("attention: unsupported shape (heads " + std::to_string(heads) + ", kv_heads " +
                std::to_string(kv_heads) + ", head_dim " + std::to_string(hd) + "); head_dim must be even and <= 256");
  if (hd <= 64)
    Launch<2>(q, q_ld, k_cache, v_cache, M, pos0, heads, kv_heads, hd, window, out, out_ld, stream);
  else if (hd <= 128)
    Launch<4>(q, q_ld, k_cache, v_cache, M, pos0, heads, kv_heads, hd, window, out, out_ld, stream);
  else
    Launch<8>(q, q_ld, k_cache, v_cache, M, pos0, heads, kv_heads, hd, window, out, out_ld, stream);
}

}  // namespace strata::cuda
