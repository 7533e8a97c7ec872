// Shared pieces of the merge methods: PyTorch's per-op rounding, the
// deterministic draws that stand in for torch's global RNG, and the methods'
// entry points (one file each; registry.cc dispatches).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "strata/formats/dtype_convert.h"
#include "strata/formats/merge.h"

namespace strata::merge {

// x rounded to `d` as a tensor op of dtype d stores its float32 result.
inline float Rd(DType d, float x) {
  switch (d) {
    case DType::kBF16: return BF16ToFloat(FloatToBF16(x));
    case DType::kF16: return F16ToFloat(FloatToF16(x));
    default: return x;
  }
}

// Rd with the dtype fixed at compile time: branch-free, so loops over
// elements vectorize. Same results as Rd(D, x).
template <DType D>
inline float RdT(float x) {
  if constexpr (D == DType::kBF16) {
    const uint32_t u = dtype_internal::FloatBits(x);
    const uint32_t r = (u + (((u >> 16) & 1u) + 0x7FFFu)) & 0xFFFF0000u;
    return dtype_internal::BitsFloat((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : r);
  } else if constexpr (D == DType::kF16) {
    return F16ToFloat(FloatToF16(x));
  } else {
    return x;
  }
}

// Calls f.template operator()<D>() for the compute dtype d (BF16, F16, F32).
template <class F>
void WithDType(DType d, F&& f) {
  switch (d) {
    case DType::kBF16: return f.template operator()<DType::kBF16>();
    case DType::kF16: return f.template operator()<DType::kF16>();
    default: return f.template operator()<DType::kF32>();
  }
}

// A Python number met by a tensor of dtype d: rounded to float32 (opmath).
inline float F32(double x) { return static_cast<float>(x); }

// The dtype torch.bernoulli works in for a tensor of dtype d on the CPU.
inline DType WorkDType(DType d) { return d == DType::kBF16 ? DType::kBF16 : DType::kF32; }

inline uint64_t SplitMix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t Fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// The draws of input k of a random method: u(i) in [0, 1), 24 bits.
struct Draws {
  uint64_t key;
  Draws(uint64_t seed, const std::string& salt, size_t k)
      : key(Fnv1a64(std::to_string(seed) + ":" + salt + ":" + std::to_string(k))) {}
  double U(uint64_t i) const {
    return static_cast<double>(SplitMix64(key + (i + 1) * 0x9E3779B97F4A7C15ull) >> 40) / 16777216.0;
  }
};

void ComputeLinear(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out);
void ComputeTaskVector(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                       const std::vector<const float*>& in, size_t n, float* out, const Hash& node);
void ComputeSlerp(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out);
void ComputeNearswap(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out);
void ComputeRam(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out);
void ComputeModelStock(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                       const std::vector<const float*>& in, size_t n, float* out);
void ComputeSce(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out);
void ComputeNuslerp(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                    const std::vector<const float*>& in, size_t n, float* out);
void ComputeMultislerp(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out,
                       const Hash& node);
void ComputeKarcher(const MergeSpec& m, DType d, const std::vector<const float*>& in, size_t n, float* out);
// d: the inputs' dtype; out is float32.
void ComputeArceeFusion(const MergeSpec& m, DType d, const std::vector<int64_t>& shape,
                        const std::vector<const float*>& in, size_t n, float* out);

// The inputs other than the base, in input order (the plan's).
inline std::vector<const float*> Others(const MergeSpec& m, const std::vector<const float*>& in) {
  std::vector<const float*> o;
  for (size_t k = 0; k < in.size(); ++k)
    if (static_cast<int>(k) != m.base) o.push_back(in[k]);
  return o;
}

// A full reduction of float32 values (torch's sum/norm/mean over a tensor): taken
// in float64 and rounded to float32 once; torch's own order is not reproduced
// (docs/merge_methods.md: within one unit in the last place of the output).
inline float Rd32(double x) { return static_cast<float>(x); }

// torch's float32 acos, sin, cos, exp and log, taken here in float64 and
// rounded once (correctly rounded but in the rarest cases; torch's own are
// within one unit in the last place of that, and differ between its SIMD
// paths).
inline float Acos(float x) { return static_cast<float>(std::acos(static_cast<double>(x))); }
inline float Sin(float x) { return static_cast<float>(std::sin(static_cast<double>(x))); }
inline float Cos(float x) { return static_cast<float>(std::cos(static_cast<double>(x))); }
inline float Exp(float x) { return static_cast<float>(std::exp(static_cast<double>(x))); }
inline float Log(float x) { return static_cast<float>(std::log(static_cast<double>(x))); }

// Sparsifies `delta` (n elements of dtype d, a tensor of `shape`) in place as
// mergekit's sparsify() does for input k. Throws Error naming `node` for a
// density or epsilon mergekit refuses.
void SparsifyDelta(const MergeSpec& m, size_t k, DType d, const std::vector<int64_t>& shape, float* delta,
                   size_t n, const Hash& node);

// The k largest |x| (NaN above inf), ties among equal magnitudes kept in
// index order: 1 where kept.
std::vector<uint8_t> KeepLargest(const float* x, size_t n, size_t k);

// sum over j in [0, n) of f(j), in float64, on every core; deterministic (fixed
// blocks added in order), whatever the number of threads.
template <class F>
double BlockSum(size_t n, F&& f);

// Runs f(begin, end) over [0, n) in chunks on every core.
template <class F>
void ParallelRange(size_t n, F&& f);

}  // namespace strata::merge

#include <algorithm>

#include <tbb/parallel_for.h>

template <class F>
void strata::merge::ParallelRange(size_t n, F&& f) {
  constexpr size_t kGrain = 1 << 16;
  tbb::parallel_for(tbb::blocked_range<size_t>(0, n, kGrain),
                    [&](const tbb::blocked_range<size_t>& r) { f(r.begin(), r.end()); });
}

template <class F>
double strata::merge::BlockSum(size_t n, F&& f) {
  constexpr size_t kBlock = 1 << 16;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> part(blocks, 0.0);
  tbb::parallel_for(size_t{0}, blocks, [&](size_t b) {
    double s = 0;
    for (size_t j = b * kBlock, e = std::min(n, j + kBlock); j < e; ++j) s += f(j);
    part[b] = s;
  });
  double s = 0;
  for (double p : part) s += p;
  return s;
}
