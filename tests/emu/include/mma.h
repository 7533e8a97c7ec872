// CPU kernel emulator: the nvcuda::wmma subset the kernels use (16x16x16,
// bf16 A/B, fp32 accumulator). A fragment's 256 elements are spread over the
// warp's 32 lanes, 8 each, lane l holding elements 8l..8l+7 of the row-major
// 16x16 tile (the hardware's layout is unspecified; code must not depend on
// it). mma_sync gathers the warp's fragments through per-warp scratch.
#pragma once

#include "cuda_bf16.h"
#include "cuda_runtime.h"

namespace strata::emu {
void WarpSync();
float* WarpScratch();  // 3 x 256 floats per warp
int LaneId();
}  // namespace strata::emu

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has 16x16x16 fragments only");
  static constexpr int num_elements = 8;
  T x[8];
};

namespace detail {
inline int Row(int e) { return (::strata::emu::LaneId() * 8 + e) / 16; }
inline int Col(int e) { return (::strata::emu::LaneId() * 8 + e) % 16; }
inline float F(float v) { return v; }
inline float F(__nv_bfloat16 v) { return __bfloat162float(v); }
}  // namespace detail

template <typename Use, typename T, typename L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, T v) {
  for (T& e : f.x) e = v;
}
template <typename Use, typename L>
void fill_fragment(fragment<Use, 16, 16, 16, float, L>& f, float v) {
  for (float& e : f.x) e = v;
}

// A (row r, col k) and B (row k, col n) tiles as the layout parameter says.
template <typename Use, typename T, typename L>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  for (int e = 0; e < 8; ++e) {
    const int r = detail::Row(e), c = detail::Col(e);
    f.x[e] = std::is_same_v<L, col_major> ? p[r + c * ldm] : p[r * ldm + c];
  }
}
template <typename T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T>& f, const T* p, unsigned ldm, layout_t l) {
  for (int e = 0; e < 8; ++e) {
    const int r = detail::Row(e), c = detail::Col(e);
    f.x[e] = l == mem_col_major ? p[r + c * ldm] : p[r * ldm + c];
  }
}
template <typename T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T>& f, unsigned ldm, layout_t l) {
  for (int e = 0; e < 8; ++e) {
    const int r = detail::Row(e), c = detail::Col(e);
    (l == mem_col_major ? p[r + c * ldm] : p[r * ldm + c]) = f.x[e];
  }
}

template <typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float* s = ::strata::emu::WarpScratch();
  float* sa = s;        // A (r, k) row-major
  float* sb = s + 256;  // B (k, n) row-major
  for (int e = 0; e < 8; ++e) {
    const int i = ::strata::emu::LaneId() * 8 + e;
    sa[i] = detail::F(a.x[e]);
    sb[i] = detail::F(b.x[e]);
  }
  ::strata::emu::WarpSync();  // the whole warp's A and B are in scratch
  float out[8];
  for (int e = 0; e < 8; ++e) {
    const int r = detail::Row(e), n = detail::Col(e);
    float acc = c.x[e];
    for (int k = 0; k < 16; ++k) acc += sa[r * 16 + k] * sb[k * 16 + n];
    out[e] = acc;
  }
  ::strata::emu::WarpSync();  // every lane has read before the scratch is reused
  for (int e = 0; e < 8; ++e) d.x[e] = out[e];
}

}  // namespace nvcuda::wmma
