// Split-K decode attention (see attention_decode.cuh).
//
// Split kernel: grid (heads, splits), 4 warps. Each warp walks keys of the
// block's chunk (key j per warp, stride 4): lane reads bf16 pairs of K at dims
// 2(lane + 32c), the warp reduces the score with shuffles, and keeps an online
// softmax with its V accumulation in registers. The 4 warps then merge through
// shared memory and write (acc[hd], m, l) for the (head, split).
// Combine kernel: grid (heads); merges the splits and normalizes.
#include <algorithm>
#include <cmath>
#include <string>

#include "attention_decode.cuh"
#include "cuda_check.h"
#include "kernel_common.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarp;
constexpr int kMaxHd = 256;

// kPairs: bf16 pairs per lane (hd <= 64 * kPairs).
template <int kPairs>
__global__ void __launch_bounds__(kThreads) DecodeSplitKernel(const float* __restrict__ q,
                                                              const uint16_t* __restrict__ k_cache,
                                                              const uint16_t* __restrict__ v_cache, int64_t pos,
                                                              int heads, int kv_heads, int hd, int window, float scale,
                                                              int splits, int64_t chunk, float* __restrict__ ws) {
  __shared__ float sm_acc[kWarps][kMaxHd];
  __shared__ float sm_m[kWarps], sm_l[kWarps];
  const int h = blockIdx.x, split = blockIdx.y;
  const int kvh = h / (heads / kv_heads);
  const int64_t kvd = static_cast<int64_t>(kv_heads) * hd;
  const int64_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  const int64_t k_begin = lo + split * chunk;
  const int64_t k_end = k_begin + chunk < pos + 1 ? k_begin + chunk : pos + 1;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int half_hd = hd / 2;

  float2 qv[kPairs], acc[kPairs];
#pragma unroll
  for (int c = 0; c < kPairs; ++c) {
    const int pr = lane + kWarp * c;  // pair index: dims 2pr, 2pr+1
    qv[c] = pr < half_hd ? make_float2(q[static_cast<int64_t>(h) * hd + 2 * pr], q[static_cast<int64_t>(h) * hd + 2 * pr + 1])
                         : make_float2(0.0f, 0.0f);
    acc[c] = make_float2(0.0f, 0.0f);
  }
  float m_run = -INFINITY, l_run = 0.0f;
  for (int64_t j = k_begin + warp; j < k_end; j += kWarps) {
    // Row offsets are even (hd even), so the pairs are 4-byte aligned.
    const uint32_t* kr = reinterpret_cast<const uint32_t*>(k_cache + j * kvd + static_cast<int64_t>(kvh) * hd);
    const uint32_t* vr = reinterpret_cast<const uint32_t*>(v_cache + j * kvd + static_cast<int64_t>(kvh) * hd);
    float part = 0.0f;
    uint32_t vu[kPairs];
#pragma unroll
    for (int c = 0; c < kPairs; ++c) {
      const int pr = lane + kWarp * c;
      vu[c] = 0;
      if (pr < half_hd) {
        const uint32_t ku = kr[pr];
        vu[c] = vr[pr];  // issued with K's load, used after the reduction
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
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, sm_m[w]);
  float* dst = ws + (static_cast<int64_t>(h) * splits + split) * (hd + 2);
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    float a = 0.0f;
    if (m_all != -INFINITY)
      for (int w = 0; w < kWarps; ++w)
        if (sm_m[w] != -INFINITY) a += expf(sm_m[w] - m_all) * sm_acc[w][d];
    dst[d] = a;
  }
  if (threadIdx.x == 0) {
    float l_all = 0.0f;
    if (m_all != -INFINITY)
      for (int w = 0; w < kWarps; ++w)
        if (sm_m[w] != -INFINITY) l_all += expf(sm_m[w] - m_all) * sm_l[w];
    dst[hd] = m_all;  // -inf: this split had no keys
    dst[hd + 1] = l_all;
  }
}

__global__ void __launch_bounds__(kThreads) DecodeCombineKernel(const float* __restrict__ ws, int splits, int hd,
                                                                float* __restrict__ out) {
  const int h = blockIdx.x;
  const float* base = ws + static_cast<int64_t>(h) * splits * (hd + 2);
  float m_all = -INFINITY;
  for (int s = 0; s < splits; ++s) m_all = fmaxf(m_all, base[s * (hd + 2) + hd]);
  float l_all = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float m = base[s * (hd + 2) + hd];
    if (m != -INFINITY) l_all += expf(m - m_all) * base[s * (hd + 2) + hd + 1];
  }
  const float inv = 1.0f / l_all;  // > 0: key `pos` is always in some split
  for (int d = threadIdx.x; d < hd; d += kThreads) {
    float a = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = base[s * (hd + 2) + hd];
      if (m != -INFINITY) a += expf(m - m_all) * base[s * (hd + 2) + d];
    }
    out[static_cast<int64_t>(h) * hd + d] = a * inv;
  }
}

}  // namespace

void AttentionDecode(const float* q, const uint16_t* k_cache, const uint16_t* v_cache, int64_t pos, int heads,
                     int kv_heads, int hd, int window, int sm_count, float* workspace, float* out,
                     cudaStream_t stream) {
  if (hd <= 0 || hd % 2 != 0 || hd > kMaxHd || heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0)
    throw Error("attention: unsupported shape (heads " + std::to_string(heads) + ", kv_heads " +
                std::to_string(kv_heads) + ", head_dim " + std::to_string(hd) + "); head_dim must be even and <= 256");
  const int64_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  const int64_t len = pos - lo + 1;
  // Enough blocks to fill the device twice over, at least 32 keys per split.
  int64_t splits = CeilDiv(2 * static_cast<int64_t>(sm_count > 0 ? sm_count : 1), heads);
  splits = std::min<int64_t>(splits, CeilDiv(len, 32));
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, kDecodeMaxSplits));
  const int64_t chunk = CeilDiv(len, splits);
  const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(splits));
  const float scale = 1.0f / sqrtf(static_cast<float>(hd));
  const int s = static_cast<int>(splits);
  if (hd <= 64)
    DecodeSplitKernel<1><<<grid, kThreads, 0, stream>>>(q, k_cache, v_cache, pos, heads, kv_heads, hd, window, scale, s,
                                                        chunk, workspace);
  else if (hd <= 128)
    DecodeSplitKernel<2><<<grid, kThreads, 0, stream>>>(q, k_cache, v_cache, pos, heads, kv_heads, hd, window, scale, s,
                                                        chunk, workspace);
  else
    DecodeSplitKernel<4><<<grid, kThreads, 0, stream>>>(q, k_cache, v_cache, pos, heads, kv_heads, hd, window, scale, s,
                                                        chunk, workspace);
  CUDA_CHECK_LAUNCH("DecodeSplitKernel");
  DecodeCombineKernel<<<static_cast<unsigned>(heads), kThreads, 0, stream>>>(workspace, s, hd, out);
  CUDA_CHECK_LAUNCH("DecodeCombineKernel");
}

}  // namespace strata::cuda
