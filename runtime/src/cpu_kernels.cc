// CPU kernels (see cpu_kernels.h).
#include "strata/runtime/cpu_kernels.h"

#include <immintrin.h>
#include <tbb/parallel_for.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace strata {

namespace {

// ---- dot products of one weight row with one fp32 vector ----

// One loop for every weight type: `load` turns element i of the row into fp32.
// Eight partial sums, like the vector paths, keep the rounding comparable.
template <typename T, float (*Load)(T)>
float DotPortable(const T* w, const float* x, int64_t k) {
  float acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += Load(w[i + j]) * x[i + j];
  float s = 0;
  for (; i < k; ++i) s += Load(w[i]) * x[i];
  for (float a : acc) s += a;
  return s;
}

float Identity(float v) { return v; }
float DotF32Portable(const float* w, const float* x, int64_t k) { return DotPortable<float, Identity>(w, x, k); }
float DotBF16Portable(const uint16_t* w, const float* x, int64_t k) {
  return DotPortable<uint16_t, BF16ToFloat>(w, x, k);
}
float DotF16Portable(const uint16_t* w, const float* x, int64_t k) { return DotPortable<uint16_t, F16ToFloat>(w, x, k); }

__attribute__((target("avx2,fma"))) float HSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) float DotF32Avx2(const float* w, const float* x, int64_t k) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = HSum(_mm256_add_ps(a0, a1));
  for (; i < k; ++i) s += w[i] * x[i];
  return s;
}

__attribute__((target("avx2,fma"))) __m256 LoadBF16(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma"))) float DotBF16Avx2(const uint16_t* w, const float* x, int64_t k) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    a0 = _mm256_fmadd_ps(LoadBF16(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(LoadBF16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = HSum(_mm256_add_ps(a0, a1));
  for (; i < k; ++i) s += BF16ToFloat(w[i]) * x[i];
  return s;
}

__attribute__((target("avx2,fma,f16c"))) float DotF16Avx2(const uint16_t* w, const float* x, int64_t k) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
    __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 8)));
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = HSum(_mm256_add_ps(a0, a1));
  for (; i < k; ++i) s += F16ToFloat(w[i]) * x[i];
  return s;
}

bool DetectAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

const bool kAvx2 = DetectAvx2();

using DotFn = float (*)(const void* w, const float* x, int64_t k);

DotFn DotFor(DType t) {
  switch (t) {
    case DType::kF32:
      return kAvx2 ? [](const void* w, const float* x, int64_t k) { return DotF32Avx2(static_cast<const float*>(w), x, k); }
                   : [](const void* w, const float* x, int64_t k) { return DotF32Portable(static_cast<const float*>(w), x, k); };
    case DType::kBF16:
      return kAvx2 ? [](const void* w, const float* x, int64_t k) { return DotBF16Avx2(static_cast<const uint16_t*>(w), x, k); }
                   : [](const void* w, const float* x, int64_t k) { return DotBF16Portable(static_cast<const uint16_t*>(w), x, k); };
    case DType::kF16:
      return kAvx2 ? [](const void* w, const float* x, int64_t k) { return DotF16Avx2(static_cast<const uint16_t*>(w), x, k); }
                   : [](const void* w, const float* x, int64_t k) { return DotF16Portable(static_cast<const uint16_t*>(w), x, k); };
    default:
      return nullptr;
  }
}

// Prefill: 4 weight rows (already fp32) against 2 tokens at once, so each
// load of x or w feeds several FMAs (8 accumulators stay in registers).
__attribute__((target("avx2,fma"))) void Block4x2Avx2(const float* w, const float* x0, const float* x1, int64_t K,
                                                      int64_t rows, float* out /* [4][2] */) {
  __m256 acc[4][2];
  for (auto& r : acc) r[0] = r[1] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 a = _mm256_loadu_ps(x0 + k), b = _mm256_loadu_ps(x1 + k);
    for (int r = 0; r < 4; ++r) {
      __m256 wv = _mm256_loadu_ps(w + r * K + k);
      acc[r][0] = _mm256_fmadd_ps(wv, a, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(wv, b, acc[r][1]);
    }
  }
  for (int r = 0; r < rows; ++r) {
    float s0 = HSum(acc[r][0]), s1 = HSum(acc[r][1]);
    for (int64_t i = k; i < K; ++i) {
      s0 += w[r * K + i] * x0[i];
      s1 += w[r * K + i] * x1[i];
    }
    out[r * 2] = s0;
    out[r * 2 + 1] = s1;
  }
}

void Block4x2Portable(const float* w, const float* x0, const float* x1, int64_t K, int64_t rows, float* out) {
  for (int r = 0; r < rows; ++r) {
    out[r * 2] = DotF32Portable(w + r * K, x0, K);
    out[r * 2 + 1] = DotF32Portable(w + r * K, x1, K);
  }
}

float ElementAsFloat(const HostTensor& t, int64_t i) {
  float v = 0;
  ConvertElements(t.dtype, static_cast<const char*>(t.data) + i * DTypeSize(t.dtype), DType::kF32, &v, 1);
  return v;
}

}  // namespace

bool CpuHasAvx2() { return kAvx2; }

// Many tokens (prefill): convert 4 weight rows to fp32 once, then sweep the
// tokens two at a time.
static void MatMulBlocked(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  const size_t es = DTypeSize(w.dtype);
  const char* base = static_cast<const char*>(w.data);
  auto block = kAvx2 ? Block4x2Avx2 : Block4x2Portable;
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, (N + 3) / 4, 4), [&](const tbb::blocked_range<int64_t>& r) {
    thread_local std::vector<float> wf;
    wf.resize(4 * K);
    for (int64_t b = r.begin(); b < r.end(); ++b) {
      const int64_t n0 = b * 4, rows = std::min<int64_t>(4, N - n0);
      ConvertElements(w.dtype, base + n0 * K * es, DType::kF32, wf.data(), rows * K);
      float bv[4] = {0, 0, 0, 0};
      for (int64_t i = 0; i < rows && bias; ++i) bv[i] = ElementAsFloat(*bias, n0 + i);
      float out[8];
      for (int64_t m = 0; m < M; m += 2) {
        const float* x1 = x + std::min(m + 1, M - 1) * K;  // odd M: the last token twice
        block(wf.data(), x + m * K, x1, K, rows, out);
        for (int64_t i = 0; i < rows; ++i) {
          y[m * N + n0 + i] = out[i * 2] + bv[i];
          if (m + 1 < M) y[(m + 1) * N + n0 + i] = out[i * 2 + 1] + bv[i];
        }
      }
    }
  });
}

void MatMul(const HostTensor& w, const float* x, int64_t M, float* y, const HostTensor* bias) {
  const int64_t N = w.rows(), K = w.cols();
  if (w.zero && !bias) {
    std::memset(y, 0, sizeof(float) * N * M);
    return;
  }
  if (M >= 4) return MatMulBlocked(w, x, M, y, bias);
  const DotFn dot = DotFor(w.dtype);
  const size_t es = DTypeSize(w.dtype);
  const char* base = static_cast<const char*>(w.data);
  // Rows in blocks: each weight row is read once and applied to all M inputs
  // while it is hot in cache.
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, N, 16), [&](const tbb::blocked_range<int64_t>& r) {
    for (int64_t n = r.begin(); n < r.end(); ++n) {
      const void* row = base + n * K * es;
      float b = bias ? ElementAsFloat(*bias, n) : 0.0f;
      for (int64_t m = 0; m < M; ++m) y[m * N + n] = dot(row, x + m * K, K) + b;
    }
  });
}

void RmsNorm(const float* x, const HostTensor& weight, int64_t M, int64_t D, double eps, float* out) {
  std::vector<float> w(D);
  ConvertElements(weight.dtype, weight.data, DType::kF32, w.data(), D);
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * D;
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xm[i]) * xm[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / D + eps));
    for (int64_t i = 0; i < D; ++i) out[m * D + i] = w[i] * (xm[i] * inv);
  }
}

void Rope(float* x, int n_heads, int head_dim, int64_t pos, const double* inv_freq) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq[i];
    const float c = static_cast<float>(std::cos(angle)), s = static_cast<float>(std::sin(angle));
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      const float a = v[i], b = v[i + half];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

void SwiGlu(float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = a[i] / (1.0f + std::exp(-a[i])) * b[i];
}

void EmbeddingGather(const HostTensor& table, const int* tokens, int64_t M, float* out) {
  const int64_t D = table.cols();
  const size_t row_bytes = D * DTypeSize(table.dtype);
  for (int64_t m = 0; m < M; ++m)
    ConvertElements(table.dtype, static_cast<const char*>(table.data) + tokens[m] * row_bytes, DType::kF32,
                    out + m * D, D);
}

void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t M, int64_t pos0, int heads,
               int kv_heads, int hd, int window, float* out) {
  const int group = heads / kv_heads;
  const int64_t q_stride = static_cast<int64_t>(heads) * hd, kv_stride = static_cast<int64_t>(kv_heads) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  tbb::parallel_for(int64_t{0}, M * heads, [&](int64_t task) {
    const int64_t m = task / heads;
    const int h = static_cast<int>(task % heads), kvh = h / group;
    const int64_t p = pos0 + m;
    const int64_t lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
    const float* qv = q + m * q_stride + static_cast<int64_t>(h) * hd;
    thread_local std::vector<float> scores;  // grows once, no allocation per token
    scores.resize(p - lo + 1);
    float mx = -INFINITY;
    for (int64_t j = lo; j <= p; ++j) {
      const float* kv = k_cache + j * kv_stride + static_cast<int64_t>(kvh) * hd;
      float s = 0;
      for (int d = 0; d < hd; ++d) s += qv[d] * kv[d];
      scores[j - lo] = s * scale;
      mx = std::max(mx, scores[j - lo]);
    }
    double sum = 0;
    for (float& s : scores) {
      s = std::exp(s - mx);
      sum += s;
    }
    float* o = out + m * q_stride + static_cast<int64_t>(h) * hd;
    std::fill(o, o + hd, 0.0f);
    for (int64_t j = lo; j <= p; ++j) {
      const float wgt = static_cast<float>(scores[j - lo] / sum);
      const float* vv = v_cache + j * kv_stride + static_cast<int64_t>(kvh) * hd;
      for (int d = 0; d < hd; ++d) o[d] += wgt * vv[d];
    }
  });
}

}  // namespace strata
