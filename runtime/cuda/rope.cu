// RoPE and KV-cache store (see rope.cuh).
#include "cuda_check.h"
#include "kernel_common.cuh"
#include "rope.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void RopeTableKernel(int64_t pos0, const int64_t* __restrict__ positions, int64_t n, int half,
                                const double* __restrict__ inv_freq, float* __restrict__ table) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t m = t / half;
    const int i = static_cast<int>(t % half);
    const int64_t p = positions ? positions[m] : pos0 + m;
    const double angle = static_cast<double>(p) * inv_freq[i];
    double s, c;
    sincos(angle, &s, &c);
    table[2 * t] = static_cast<float>(c);
    table[2 * t + 1] = static_cast<float>(s);
  }
}

// One block per token.
__global__ void RopeStoreKernel(float* __restrict__ qkv, int64_t ld, int heads, int kv_heads, int hd,
                                const float* __restrict__ table, int64_t pos0, const int64_t* __restrict__ rows,
                                uint16_t* __restrict__ k_cache, uint16_t* __restrict__ v_cache) {
  const int64_t m = blockIdx.x;
  const int half = hd / 2;
  const int64_t kvd = static_cast<int64_t>(kv_heads) * hd;
  float* row = qkv + m * ld;
  const float* cs = table + m * half * 2;
  const int64_t off = rows ? rows[m] : (pos0 + m) * kvd;
  uint16_t* krow = k_cache + off;
  uint16_t* vrow = v_cache + off;
  const int pairs = (heads + kv_heads) * half;
  for (int t = threadIdx.x; t < pairs; t += blockDim.x) {
    const int hh = t / half, i = t % half;
    const float c = cs[2 * i], s = cs[2 * i + 1];
    const float* v = row + static_cast<int64_t>(hh) * hd;
    const float a = v[i], b = v[i + half];
    const float ra = a * c - b * s, rb = b * c + a * s;
    if (hh < heads) {
      row[static_cast<int64_t>(hh) * hd + i] = ra;
      row[static_cast<int64_t>(hh) * hd + i + half] = rb;
    } else {
      const int64_t o = static_cast<int64_t>(hh - heads) * hd;
      krow[o + i] = FloatToBf16(ra);
      krow[o + i + half] = FloatToBf16(rb);
    }
  }
  const float* vsrc = row + static_cast<int64_t>(heads + kv_heads) * hd;
  for (int64_t t = threadIdx.x; t < kvd; t += blockDim.x) vrow[t] = FloatToBf16(vsrc[t]);
}

}  // namespace

void RopeTable(int64_t pos0, int64_t M, int half, const double* inv_freq, float* table, cudaStream_t stream) {
  const int64_t n = M * half;
  if (n <= 0) return;
  STRATA_LAUNCH(RopeTableKernel, GridFor(n, kThreads), kThreads, 0, stream)(pos0, nullptr, n, half, inv_freq, table);
  CUDA_CHECK_LAUNCH("RopeTableKernel");
}

void RopeTableAt(const int64_t* positions, int64_t M, int half, const double* inv_freq, float* table,
                 cudaStream_t stream) {
  const int64_t n = M * half;
  if (n <= 0) return;
  STRATA_LAUNCH(RopeTableKernel, GridFor(n, kThreads), kThreads, 0, stream)(0, positions, n, half, inv_freq, table);
  CUDA_CHECK_LAUNCH("RopeTableKernel");
}

void RopeAndStoreKv(float* qkv, int64_t ld, int64_t M, int heads, int kv_heads, int hd, const float* table,
                    int64_t pos0, uint16_t* k_cache, uint16_t* v_cache, cudaStream_t stream) {
  if (M <= 0) return;
  STRATA_LAUNCH(RopeStoreKernel, static_cast<unsigned>(M), kThreads, 0, stream)(qkv, ld, heads, kv_heads, hd, table, pos0,
                                                                      nullptr, k_cache, v_cache);
  CUDA_CHECK_LAUNCH("RopeStoreKernel");
}

void RopeAndStoreKvRows(float* qkv, int64_t ld, int64_t M, int heads, int kv_heads, int hd, const float* table,
                        const int64_t* rows, uint16_t* k_base, uint16_t* v_base, cudaStream_t stream) {
  if (M <= 0) return;
  STRATA_LAUNCH(RopeStoreKernel, static_cast<unsigned>(M), kThreads, 0, stream)(qkv, ld, heads, kv_heads, hd, table, 0,
                                                                              rows, k_base, v_base);
  CUDA_CHECK_LAUNCH("RopeStoreKernel");
}

}  // namespace strata::cuda
