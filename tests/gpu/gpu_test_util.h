// Helpers for the GPU tests: skipping without a device, device buffers that
// copy to and from host vectors, random data, comparisons.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cuda_check.h"
#include "strata/cuda/cuda_backend.h"
#include "strata/formats/dtype.h"

// Every GPU test starts with this: without a device (or driver) it skips.
#define STRATA_REQUIRE_CUDA()                                            \
  do {                                                                   \
    if (::strata::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

namespace strata::gputest {

template <typename T>
class Dev {
 public:
  explicit Dev(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T))); }
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) { Upload(v); }
  ~Dev() { (void)cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void Upload(const std::vector<T>& v) {
    CUDA_CHECK(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> Download() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> v(n_);
    CUDA_CHECK(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

inline std::vector<float> RandomFloats(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

// Random values stored in `dt` (BF16/F16: the bit patterns; F32: the floats),
// and what they mean as floats.
struct TypedData {
  DType dtype;
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

inline TypedData RandomTyped(DType dt, size_t n, uint64_t seed, float scale = 1.0f) {
  TypedData d{dt, {}, RandomFloats(n, seed, scale)};
  d.bytes.resize(n * DTypeSize(dt));
  ConvertElements(DType::kF32, d.values.data(), dt, d.bytes.data(), n);
  ConvertElements(dt, d.bytes.data(), DType::kF32, d.values.data(), n);  // the representable values
  return d;
}

inline std::vector<float> Poison(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// max |a - b| / max |b|; NaN when any element of a is not finite.
inline double RelErr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::quiet_NaN();
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

inline size_t CountNonFinite(const std::vector<float>& a) {
  return static_cast<size_t>(std::count_if(a.begin(), a.end(), [](float x) { return !std::isfinite(x); }));
}

}  // namespace strata::gputest
