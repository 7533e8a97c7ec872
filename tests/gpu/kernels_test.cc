// Each CUDA kernel against the CPU kernel it mirrors (runtime/cpu_kernels.h),
// or against formats/dtype.cc bit for bit, on random inputs. Output buffers
// are poisoned with NaN first so an element the kernel never wrote fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "attention_prefill.cuh"
#include "convert.cuh"
#include "cublas_loader.h"
#include "decode.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.h"
#include "gpu_test_util.h"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sampling.cuh"
#include "strata/runtime/config.h"
#include "strata/runtime/cpu_kernels.h"

namespace strata {
namespace {

using gputest::CountNonFinite;
using gputest::Dev;
using gputest::Poison;
using gputest::RandomFloats;
using gputest::RandomTyped;
using gputest::RelErr;
using gputest::TypedData;

HostTensor Host(const TypedData& d, std::vector<int64_t> shape) {
  HostTensor t;
  t.dtype = d.dtype;
  t.shape = std::move(shape);
  t.data = d.bytes.data();
  return t;
}

const DType kWeightTypes[] = {DType::kBF16, DType::kF16, DType::kF32};

TEST(CudaKernels, EmbeddingGatherIsExact) {
  STRATA_REQUIRE_CUDA();
  const int64_t vocab = 50, D = 72;
  for (DType dt : kWeightTypes) {
    TypedData table = RandomTyped(dt, vocab * D, 1);
    std::vector<int> toks = {3, 0, 49, 3, 17};
    const int64_t M = static_cast<int64_t>(toks.size());
    std::vector<float> want(M * D);
    EmbeddingGather(Host(table, {vocab, D}), toks.data(), M, want.data());
    Dev<uint8_t> dtable(table.bytes);
    Dev<int> dtoks(toks);
    Dev<float> out(Poison(M * D));
    cuda::EmbeddingGather(dtable.get(), dt, D, dtoks.get(), M, out.get(), nullptr);
    EXPECT_EQ(out.Download(), want) << DTypeName(dt);
  }
}

TEST(CudaKernels, RmsNormMatchesCpu) {
  STRATA_REQUIRE_CUDA();
  const int64_t M = 5, D = 333;
  std::vector<float> x = RandomFloats(M * D, 2, 3.0f);
  for (DType dt : kWeightTypes) {
    TypedData w = RandomTyped(dt, D, 3);
    std::vector<float> want(M * D);
    RmsNorm(x.data(), Host(w, {D}), M, D, 1e-5, want.data());
    Dev<float> dx(x);
    Dev<uint8_t> dw(w.bytes);
    Dev<float> out(Poison(M * D));
    cuda::RmsNorm(dx.get(), dw.get(), dt, M, D, 1e-5, out.get(), nullptr);
    std::vector<float> got = out.Download();
    EXPECT_EQ(CountNonFinite(got), 0u);
    EXPECT_LE(RelErr(got, want), 1e-6) << DTypeName(dt);
    // In place (x and out alias), as the backend never does but the API allows.
    cuda::RmsNorm(dx.get(), dw.get(), dt, M, D, 1e-5, dx.get(), nullptr);
    EXPECT_LE(RelErr(dx.Download(), want), 1e-6) << DTypeName(dt);
  }
}

TEST(CudaKernels, RopeRotatesQAndStoresKv) {
  STRATA_REQUIRE_CUDA();
  for (int hd : {16, 128}) {
    const int heads = 4, kvh = 2;
    const int64_t M = 7, pos0 = 37, ctx = 64, Q = heads * hd, KV = kvh * hd, ld = Q + 2 * KV + 3;  // padded rows
    ModelConfig c;
    c.head_dim = hd;
    c.rope_theta = 10000;
    const std::vector<double> inv = RopeInvFreq(c);
    std::vector<float> qkv = RandomFloats(M * ld, 4);
    // CPU: rotate q and k of each token.
    std::vector<float> want = qkv;
    for (int64_t m = 0; m < M; ++m) {
      Rope(want.data() + m * ld, heads, hd, pos0 + m, inv.data());
      Rope(want.data() + m * ld + Q, kvh, hd, pos0 + m, inv.data());
    }
    Dev<double> dinv(inv);
    Dev<float> table(static_cast<size_t>(M) * hd);
    Dev<float> dqkv(qkv);
    std::vector<uint16_t> sentinel(ctx * KV, 0xFFFF);
    Dev<uint16_t> kc(sentinel), vc(sentinel);
    cuda::RopeTable(pos0, M, hd / 2, dinv.get(), table.get(), nullptr);
    cuda::RopeAndStoreKv(dqkv.get(), ld, M, heads, kvh, hd, table.get(), pos0, kc.get(), vc.get(), nullptr);
    std::vector<float> got = dqkv.Download();
    std::vector<uint16_t> k = kc.Download(), v = vc.Download();
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t i = 0; i < Q; ++i)
        EXPECT_NEAR(got[m * ld + i], want[m * ld + i], 1e-5f * (1 + std::abs(want[m * ld + i]))) << "q " << m << "," << i;
      for (int64_t i = 0; i < KV; ++i) {
        // bf16 of the rotated k: at most one bf16 step from rounding the CPU's value.
        const float kw = want[m * ld + Q + i], kg = BF16ToFloat(k[(pos0 + m) * KV + i]);
        EXPECT_NEAR(kg, kw, std::abs(kw) / 128 + 1e-6f) << "k " << m << "," << i;
        EXPECT_EQ(v[(pos0 + m) * KV + i], FloatToBF16(qkv[m * ld + Q + KV + i])) << "v " << m << "," << i;
      }
    }
    // Rows outside [pos0, pos0 + M) are untouched.
    for (int64_t r = 0; r < ctx; ++r) {
      if (r >= pos0 && r < pos0 + M) continue;
      for (int64_t i = 0; i < KV; ++i) ASSERT_EQ(k[r * KV + i], 0xFFFF) << r;
    }
  }
}

TEST(CudaKernels, SwiGluResidualAndBias) {
  STRATA_REQUIRE_CUDA();
  const int64_t M = 3, I = 257, ld = 2 * I + 5;
  std::vector<float> gu = RandomFloats(M * ld, 5, 4.0f);
  std::vector<float> a(M * I), b(M * I);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < I; ++i) {
      a[m * I + i] = gu[m * ld + i];
      b[m * I + i] = gu[m * ld + I + i];
    }
  SwiGlu(a.data(), b.data(), M * I);
  Dev<float> dgu(gu), out(Poison(M * I));
  cuda::SwiGlu(dgu.get(), ld, M, I, out.get(), nullptr);
  std::vector<float> got = out.Download();
  EXPECT_EQ(CountNonFinite(got), 0u);
  EXPECT_LE(RelErr(got, a), 1e-6);

  std::vector<float> x = RandomFloats(1000, 6), y = RandomFloats(1000, 7), sum(1000);
  for (int i = 0; i < 1000; ++i) sum[i] = x[i] + y[i];
  Dev<float> dx(x), dy(y);
  cuda::ResidualAdd(dx.get(), dy.get(), 1000, nullptr);
  EXPECT_EQ(dx.Download(), sum);

  TypedData bias = RandomTyped(DType::kBF16, 10, 8);
  std::vector<float> yb = RandomFloats(4 * 12, 9), want = yb;
  for (int m = 0; m < 4; ++m)
    for (int n = 0; n < 10; ++n) want[m * 12 + n] += bias.values[n];
  Dev<float> dyb(yb);
  Dev<uint8_t> dbias(bias.bytes);
  cuda::AddBias(dyb.get(), 12, 4, 10, dbias.get(), DType::kBF16, nullptr);
  EXPECT_EQ(dyb.Download(), want);
}

#ifndef STRATA_CUDA_EMU  // the emulator's cuBLAS is a plain loop: nothing of ours to test
TEST(CudaKernels, CublasGemmMatchesCpuMatMul) {
  STRATA_REQUIRE_CUDA();
  cublasHandle_t h;
  CUBLAS_CHECK(cuda::Cublas().create(&h));
  const int64_t M = 19, N = 45, K = 96, ldy = N + 7;
  for (DType dt : kWeightTypes) {
    TypedData w = RandomTyped(dt, N * K, 13);
    // The backend feeds cuBLAS the activations rounded to the weight dtype.
    TypedData x = RandomTyped(dt, M * K, 14);
    std::vector<float> want(M * N);
    MatMul(Host(w, {N, K}), x.values.data(), M, want.data());
    Dev<uint8_t> dw(w.bytes), dx(x.bytes);
    std::vector<float> init = Poison(M * ldy);
    Dev<float> y(init);
    cuda::Gemm(h, dw.get(), dt, N, K, dx.get(), M, y.get(), ldy, false);
    std::vector<float> got = y.Download(), packed(M * N);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < ldy; ++n) {
        if (n < N) packed[m * N + n] = got[m * ldy + n];
        else EXPECT_TRUE(std::isnan(got[m * ldy + n])) << "column " << n << " past N was written";
      }
    EXPECT_EQ(CountNonFinite(packed), 0u) << DTypeName(dt);
    EXPECT_LE(RelErr(packed, want), 1e-4) << DTypeName(dt);
    // Accumulate (beta = 1): the residual add the backend fuses into o_proj/down_proj.
    std::vector<float> base = RandomFloats(M * ldy, 15);
    y.Upload(base);
    cuda::Gemm(h, dw.get(), dt, N, K, dx.get(), M, y.get(), ldy, true);
    got = y.Download();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) packed[m * N + n] = got[m * ldy + n] - base[m * ldy + n];
    EXPECT_LE(RelErr(packed, want), 1e-4) << DTypeName(dt);
  }
  (void)cuda::Cublas().destroy(h);
}
#endif

// Random bf16 K/V caches (ctx rows) and their fp32 values for the CPU kernel.
struct Caches {
  std::vector<uint16_t> k, v;
  std::vector<float> kf, vf;
};
Caches RandomCaches(int64_t ctx, int64_t kvd, uint64_t seed) {
  Caches c;
  for (auto [bits, vals, s] : {std::tuple{&c.k, &c.kf, seed}, std::tuple{&c.v, &c.vf, seed + 1}}) {
    std::vector<float> r = RandomFloats(ctx * kvd, s);
    bits->resize(r.size());
    vals->resize(r.size());
    for (size_t i = 0; i < r.size(); ++i) {
      (*bits)[i] = FloatToBF16(r[i]);
      (*vals)[i] = BF16ToFloat((*bits)[i]);
    }
  }
  return c;
}

// Which prefill kernel AttentionPrefill runs (attention_prefill.cu) on sm_80
// and later: tensor cores, with Q and P rounded to bf16, for head dims that are
// multiples of 16 up to 128; the fp32 kernel for every other head dim.
bool PrefillOnTensorCores(int hd) { return hd % 16 == 0 && hd <= 128; }

TEST(CudaKernels, PrefillAttentionMatchesCpu) {
  STRATA_REQUIRE_CUDA();
  struct Case { int heads, kvh, hd; int64_t M, pos0; int window; };
  const Case cases[] = {{4, 2, 16, 37, 0, 0},  {4, 2, 16, 37, 20, 0},  {4, 2, 16, 37, 20, 9},
                        {8, 8, 64, 16, 0, 0},  {8, 2, 128, 70, 3, 0},  {8, 2, 128, 70, 3, 33},
                        {2, 1, 256, 33, 40, 0}, {6, 3, 80, 5, 0, 0},   {4, 4, 128, 1, 10, 0}};
  for (const Case& t : cases) {
    const int64_t Q = int64_t{t.heads} * t.hd, KV = int64_t{t.kvh} * t.hd, ctx = t.pos0 + t.M;
    const int64_t q_ld = Q + 2 * KV;  // q inside a qkv row, as the backend lays it out
    std::vector<float> qkv = RandomFloats(t.M * q_ld, 20 + t.hd);
    std::vector<float> q(t.M * Q);
    for (int64_t m = 0; m < t.M; ++m) std::copy_n(qkv.begin() + m * q_ld, Q, q.begin() + m * Q);
    Caches c = RandomCaches(ctx, KV, 30 + t.hd);
    std::vector<float> want(t.M * Q);
    Attention(q.data(), c.kf.data(), c.vf.data(), t.M, t.pos0, t.heads, t.kvh, t.hd, t.window, want.data());
    Dev<float> dq(qkv), out(Poison(t.M * Q));
    Dev<uint16_t> dk(c.k), dv(c.v);
    cuda::AttentionPrefill(dq.get(), q_ld, dk.get(), dv.get(), t.M, t.pos0, t.heads, t.kvh, t.hd, t.window, out.get(),
                           Q, nullptr);
    std::vector<float> got = out.Download();
    const std::string what = "heads " + std::to_string(t.heads) + "/" + std::to_string(t.kvh) + " hd " +
                             std::to_string(t.hd) + " M " + std::to_string(t.M) + " pos0 " + std::to_string(t.pos0) +
                             " window " + std::to_string(t.window);
    EXPECT_EQ(CountNonFinite(got), 0u) << what;
    // Tensor cores: bf16 Q and P, about 2^-9 relative; fp32 kernel: sums in another order.
    EXPECT_LE(RelErr(got, want), PrefillOnTensorCores(t.hd) ? 2e-2 : 2e-4) << what;
  }
}

// softmax(q k^T / sqrt(hd), causal and window mask) v in double precision,
// written independently of both kernels. q: (M, q_ld), head h at columns
// [h*hd, (h+1)*hd); c: (pos0 + M, kv_heads*hd) caches (their bf16 values);
// round_q: q rounded to bf16 first, as the tensor-core kernel does.
// Returns (M, heads*hd).
std::vector<float> AttentionF64(const std::vector<float>& q, int64_t q_ld, const Caches& c, int64_t M, int64_t pos0,
                                int heads, int kv_heads, int hd, int window, bool round_q) {
  const int64_t Q = int64_t{heads} * hd, KV = int64_t{kv_heads} * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<float> out(M * Q);
  std::vector<double> qd(hd), w, acc(hd);
  for (int64_t m = 0; m < M; ++m) {
    const int64_t p = pos0 + m, lo = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
    for (int h = 0; h < heads; ++h) {
      const int64_t kv_col = int64_t{h / (heads / kv_heads)} * hd;
      for (int d = 0; d < hd; ++d) {
        const float x = q[m * q_ld + int64_t{h} * hd + d];
        qd[d] = round_q ? BF16ToFloat(FloatToBF16(x)) : x;
      }
      w.assign(p - lo + 1, 0.0);
      double mx = -INFINITY;
      for (int64_t j = lo; j <= p; ++j) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += qd[d] * c.kf[j * KV + kv_col + d];
        w[j - lo] = dot * scale;
        mx = std::max(mx, w[j - lo]);
      }
      double sum = 0;
      for (double& x : w) {
        x = std::exp(x - mx);
        sum += x;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = lo; j <= p; ++j)
        for (int d = 0; d < hd; ++d) acc[d] += w[j - lo] * c.vf[j * KV + kv_col + d];
      for (int d = 0; d < hd; ++d) out[m * Q + int64_t{h} * hd + d] = static_cast<float>(acc[d] / sum);
    }
  }
  return out;
}

// Both prefill kernels against AttentionF64: GQA, M not a multiple of the
// 64-query (tensor cores) or 16-query (fp32) tile, M = 1, pos0 > 0, windows
// shorter than M, long contexts, peaked softmax (q scaled by 4), caches that
// are not 16-byte aligned (the tensor-core kernel's scalar loads), and an out
// row stride wider than the heads (the gap must stay untouched).
// Tolerance (max |got - want| / max |want|): tensor cores 1e-2 against the
// reference with Q rounded to bf16 (what is left is P's bf16 rounding, about
// 2^-9 relative); fp32 kernel 2e-4.
TEST(CudaKernels, PrefillAttentionMatchesFloat64Reference) {
  STRATA_REQUIRE_CUDA();
  struct Case { int heads, kvh, hd; int64_t M, pos0; int window; float q_scale; bool misaligned; };
  const Case cases[] = {
      // tensor cores
      {8, 2, 64, 100, 0, 0, 1, false},     {8, 2, 128, 100, 37, 0, 1, false},   {8, 2, 128, 17, 37, 16, 1, false},
      {8, 2, 64, 1, 37, 0, 1, false},      {8, 2, 128, 1, 0, 0, 1, false},      {8, 2, 128, 1000, 0, 0, 1, false},
      {8, 2, 64, 1000, 37, 16, 1, false},  {2, 1, 128, 2048, 5, 300, 1, false}, {4, 4, 128, 200, 5, 0, 4, false},
      {8, 2, 128, 100, 37, 0, 1, true},    {8, 2, 64, 130, 0, 64, 1, true},     {6, 3, 80, 65, 3, 0, 1, false},
      {4, 1, 16, 64, 0, 0, 1, false},      {4, 2, 32, 128, 64, 0, 1, false},    {8, 8, 96, 63, 100, 50, 1, false},
      // fp32 kernel
      {8, 2, 72, 100, 37, 16, 1, false},   {8, 2, 40, 17, 37, 0, 1, false},     {8, 2, 72, 1000, 0, 0, 1, false},
      {2, 1, 256, 70, 3, 0, 1, false}};
  for (const Case& t : cases) {
    const bool tc = PrefillOnTensorCores(t.hd);
    const int64_t Q = int64_t{t.heads} * t.hd, KV = int64_t{t.kvh} * t.hd, ctx = t.pos0 + t.M;
    const int64_t q_ld = Q + 2 * KV, out_ld = Q + 3;  // q inside a qkv row, as the backend lays it out
    const std::vector<float> qkv = RandomFloats(t.M * q_ld, 80 + t.hd + t.M, t.q_scale);
    const Caches c = RandomCaches(ctx, KV, 90 + t.hd + t.M);
    const std::vector<float> want = AttentionF64(qkv, q_ld, c, t.M, t.pos0, t.heads, t.kvh, t.hd, t.window, tc);
    const int64_t shift = t.misaligned ? 1 : 0;  // cudaMalloc is 256-byte aligned; one bf16 further is not
    std::vector<uint16_t> k(shift, 0), v(shift, 0);
    k.insert(k.end(), c.k.begin(), c.k.end());
    v.insert(v.end(), c.v.begin(), c.v.end());
    Dev<float> dq(qkv), out(Poison(t.M * out_ld));
    Dev<uint16_t> dk(k), dv(v);
    cuda::AttentionPrefill(dq.get(), q_ld, dk.get() + shift, dv.get() + shift, t.M, t.pos0, t.heads, t.kvh, t.hd,
                           t.window, out.get(), out_ld, nullptr);
    const std::vector<float> raw = out.Download();
    std::vector<float> got(t.M * Q);
    size_t gap_written = 0;
    for (int64_t m = 0; m < t.M; ++m) {
      std::copy_n(raw.begin() + m * out_ld, Q, got.begin() + m * Q);
      for (int64_t i = Q; i < out_ld; ++i) gap_written += std::isnan(raw[m * out_ld + i]) ? 0 : 1;
    }
    const std::string what = "heads " + std::to_string(t.heads) + "/" + std::to_string(t.kvh) + " hd " +
                             std::to_string(t.hd) + " M " + std::to_string(t.M) + " pos0 " + std::to_string(t.pos0) +
                             " window " + std::to_string(t.window) + " q_scale " + std::to_string(t.q_scale) +
                             (t.misaligned ? " misaligned" : "") + (tc ? " (tensor cores)" : " (fp32)");
    EXPECT_EQ(CountNonFinite(got), 0u) << what;
    EXPECT_EQ(gap_written, 0u) << what;
    EXPECT_LE(RelErr(got, want), tc ? 1e-2 : 2e-4) << what;
  }
}

// The paged cache (kv_pages.h): items' contiguous caches scattered over a
// pool of blocks through permuted block tables. Batched prefill attention
// over the pool (several items, M and positions of their own, tiles of the
// kernel's size), the RoPE + KV store at paged rows, and decode attention
// through a table give bit for bit what the same kernels give on the
// contiguous caches.
TEST(CudaKernels, PagedKvMatchesContiguousBitForBit) {
  STRATA_REQUIRE_CUDA();
  for (int hd : {16, 40, 128}) {  // tensor cores (16, 128), fp32 kernel (40)
    const int heads = 4, kvh = 2, T = 8;
    const int64_t Q = int64_t{heads} * hd, KV = int64_t{kvh} * hd, ld = Q + 2 * KV;
    const int64_t stride = 2 * T * KV;  // one layer slot: K | V
    struct Item { int64_t pos0, n; };
    const Item items[] = {{0, 37}, {21, 1}, {9, 70}, {0, 1}};
    const int B = 4;
    // Block tables: ids handed out in a scrambled order.
    std::vector<std::vector<int32_t>> tables(B);
    int32_t next = 0;
    for (const Item& it : items) next += static_cast<int32_t>((it.pos0 + it.n + T - 1) / T);
    std::vector<int32_t> order;  // 0, last, 1, last - 1, ...: a permutation, no two neighbours adjacent
    for (int32_t b = 0; b < next; ++b) order.push_back(b % 2 == 0 ? b / 2 : next - 1 - b / 2);
    size_t o = 0;
    for (int i = 0; i < B; ++i)
      for (int64_t b = 0; b < (items[i].pos0 + items[i].n + T - 1) / T; ++b) tables[i].push_back(order[o++]);
    std::vector<uint16_t> pool(static_cast<size_t>(next) * stride, 0x7FC1);  // NaN: a row never written shows
    std::vector<Caches> caches;
    std::vector<std::vector<float>> qkvs;
    std::vector<cuda::AttentionItem> ai;
    std::vector<cuda::AttentionTile> tiles;
    std::vector<int32_t> flat;
    std::vector<float> qkv_all;
    const int tq = cuda::AttentionPrefillTileQueries(hd);
    int64_t row = 0;
    for (int i = 0; i < B; ++i) {
      const int64_t ctx = items[i].pos0 + items[i].n;
      caches.push_back(RandomCaches(ctx, KV, 500 + 10 * i + hd));
      for (int64_t p = 0; p < ctx; ++p)
        for (int64_t j = 0; j < KV; ++j) {
          const int64_t at = tables[i][p / T] * stride + (p % T) * KV + j;
          pool[at] = caches[i].k[p * KV + j];
          pool[at + T * KV] = caches[i].v[p * KV + j];
        }
      qkvs.push_back(RandomFloats(items[i].n * ld, 600 + i + hd));
      qkv_all.insert(qkv_all.end(), qkvs[i].begin(), qkvs[i].end());
      ai.push_back({row, items[i].n, items[i].pos0, static_cast<int64_t>(flat.size())});
      for (int64_t q0 = 0; q0 < items[i].n; q0 += tq) tiles.push_back({i, static_cast<int32_t>(q0)});
      flat.insert(flat.end(), tables[i].begin(), tables[i].end());
      row += items[i].n;
    }
    const int64_t M = row;
    Dev<uint16_t> dpool(pool);
    Dev<int32_t> dflat(flat);
    Dev<uint8_t> ditems(std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(ai.data()),
                                             reinterpret_cast<const uint8_t*>(ai.data() + ai.size())));
    Dev<uint8_t> dtiles(std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(tiles.data()),
                                             reinterpret_cast<const uint8_t*>(tiles.data() + tiles.size())));
    Dev<float> dq(qkv_all), dout(Poison(static_cast<size_t>(M * Q)));
    cuda::KvPages pages;
    pages.table = dflat.get();
    pages.block_stride = stride;
    pages.block_tokens = T;
    cuda::AttentionPrefillBatch(dq.get(), ld, dpool.get(), dpool.get() + T * KV, pages,
                                reinterpret_cast<const cuda::AttentionItem*>(ditems.get()),
                                reinterpret_cast<const cuda::AttentionTile*>(dtiles.get()),
                                static_cast<int64_t>(tiles.size()), heads, kvh, hd, /*window=*/0, dout.get(), Q,
                                nullptr);
    const std::vector<float> got = dout.Download();
    for (int i = 0; i < B; ++i) {
      Dev<float> q1(qkvs[i]), o1(Poison(static_cast<size_t>(items[i].n * Q)));
      Dev<uint16_t> dk(caches[i].k), dv(caches[i].v);
      cuda::AttentionPrefill(q1.get(), ld, dk.get(), dv.get(), items[i].n, items[i].pos0, heads, kvh, hd, 0, o1.get(),
                             Q, nullptr);
      const std::vector<float> want = o1.Download();
      const std::vector<float> mine(got.begin() + ai[i].row0 * Q, got.begin() + (ai[i].row0 + items[i].n) * Q);
      EXPECT_EQ(CountNonFinite(mine), 0u) << "hd " << hd << " item " << i;
      EXPECT_EQ(mine, want) << "hd " << hd << " item " << i << ": paged batch vs contiguous";
      // Decode attention at the item's last position through its table.
      {
        const int64_t pos = items[i].pos0 + items[i].n - 1;
        const int splits = 3;
        const std::vector<float> qd(qkvs[i].end() - ld, qkvs[i].end() - ld + Q);
        Dev<float> dqd(qd), a1(Poison(Q)), a2(Poison(Q));
        Dev<int64_t> dpos(std::vector<int64_t>{pos});
        Dev<int32_t> dtab(tables[i]);
        const uint64_t wsb = cuda::DecodeAttentionWorkspaceBytes(heads, hd, splits);
        Dev<uint8_t> ws(std::vector<uint8_t>(wsb, 0));
        cuda::AttentionDecodeAt(dqd.get(), dk.get(), dv.get(), dpos.get(), heads, kvh, hd, 0, splits, ws.get(),
                                a1.get(), nullptr);
        cuda::KvPages pi = pages;
        pi.table = dtab.get();
        cuda::AttentionDecodeAt(dqd.get(), dpool.get(), dpool.get() + T * KV, dpos.get(), heads, kvh, hd, 0, splits,
                                ws.get(), a2.get(), nullptr, pi);
        EXPECT_EQ(a2.Download(), a1.Download()) << "hd " << hd << " item " << i << ": paged decode attention";
      }
    }
    // RoPE + store at paged rows: the rows land where the tables say, nothing else changes.
    ModelConfig c;
    c.head_dim = hd;
    c.rope_theta = 10000;
    const std::vector<double> inv = RopeInvFreq(c);
    std::vector<int64_t> positions, rows;
    for (int i = 0; i < B; ++i)
      for (int64_t m = 0; m < items[i].n; ++m) {
        const int64_t p = items[i].pos0 + m;
        positions.push_back(p);
        rows.push_back(tables[i][p / T] * stride + (p % T) * KV);
      }
    Dev<double> dinv(inv);
    Dev<int64_t> dposs(positions), drows(rows);
    Dev<float> table(static_cast<size_t>(M) * hd), dqkv(qkv_all);
    Dev<uint16_t> dpool2(pool);
    cuda::RopeTableAt(dposs.get(), M, hd / 2, dinv.get(), table.get(), nullptr);
    cuda::RopeAndStoreKvRows(dqkv.get(), ld, M, heads, kvh, hd, table.get(), drows.get(), dpool2.get(),
                             dpool2.get() + T * KV, nullptr);
    const std::vector<uint16_t> after = dpool2.Download();
    std::vector<uint16_t> expect = pool;
    for (int i = 0; i < B; ++i) {
      // The contiguous store of the same item, then scattered by hand.
      Dev<float> q1(qkvs[i]), t1(static_cast<size_t>(items[i].n) * hd);
      Dev<uint16_t> dk(caches[i].k), dv(caches[i].v);
      cuda::RopeTable(items[i].pos0, items[i].n, hd / 2, dinv.get(), t1.get(), nullptr);
      cuda::RopeAndStoreKv(q1.get(), ld, items[i].n, heads, kvh, hd, t1.get(), items[i].pos0, dk.get(), dv.get(),
                           nullptr);
      const std::vector<uint16_t> k = dk.Download(), v = dv.Download();
      for (int64_t m = 0; m < items[i].n; ++m) {
        const int64_t p = items[i].pos0 + m;
        for (int64_t j = 0; j < KV; ++j) {
          const int64_t at = tables[i][p / T] * stride + (p % T) * KV + j;
          expect[at] = k[p * KV + j];
          expect[at + T * KV] = v[p * KV + j];
        }
      }
    }
    EXPECT_EQ(after, expect) << "hd " << hd << ": RoPE + KV store at paged rows";
  }
}

TEST(CudaKernels, ArgmaxTakesTheFirstMaximum) {
  STRATA_REQUIRE_CUDA();
  for (int64_t n : {1, 7, 1024, 1025, 32000, 151936}) {
    std::vector<float> v = RandomFloats(n, 60 + n);
    if (n > 100) {  // a tie: the lower index wins, as std::max_element
      const float mx = *std::max_element(v.begin(), v.end()) + 1;
      v[n - 3] = mx;
      v[n / 2] = mx;
    }
    Dev<float> dv(v);
    Dev<int> out(1);
    cuda::Argmax(dv.get(), n, out.get(), nullptr);
    EXPECT_EQ(out.Download()[0], std::max_element(v.begin(), v.end()) - v.begin()) << n;
  }
}

// Values that exercise every rounding path: normals, halfway cases, f16
// subnormals and overflow, bf16 overflow, signed zeros, inf and NaN.
std::vector<float> SpecialFloats() {
  std::vector<float> v = RandomFloats(4000, 70, 3.0f);
  std::vector<float> tiny = RandomFloats(1000, 71, 1e-5f), huge = RandomFloats(500, 72, 1e5f);
  v.insert(v.end(), tiny.begin(), tiny.end());
  v.insert(v.end(), huge.begin(), huge.end());
  for (float f : {0.0f, -0.0f, 65504.0f, 65520.0f, 65519.99f, 6.1e-5f, 5.96e-8f, 2.98e-8f, 1e-45f, 3.4e38f, -3.4e38f,
                  INFINITY, -INFINITY, NAN, -NAN, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1.00390625f})
    v.push_back(f);
  for (uint32_t bits = 0x3F800000u; bits < 0x3F800000u + 70000; bits += 7) {  // many bf16 halfway cases
    float f;
    std::memcpy(&f, &bits, 4);
    v.push_back(f);
  }
  return v;
}

TEST(CudaKernels, CastAndScaleMatchPyTorchBitForBit) {
  STRATA_REQUIRE_CUDA();
  const std::vector<float> base = SpecialFloats();
  const size_t n = base.size();
  const DType types[] = {DType::kBF16, DType::kF16, DType::kF32, DType::kF64};
  for (DType from : types) {
    // Source values in `from` (rounded from the specials as the host does).
    std::vector<uint8_t> src(n * DTypeSize(from));
    ConvertElements(DType::kF32, base.data(), from, src.data(), n);
    Dev<uint8_t> dsrc(src);
    for (DType to : types) {
      std::vector<uint8_t> want(n * DTypeSize(to));
      ConvertElements(from, src.data(), to, want.data(), n);
      Dev<uint8_t> dst(want.size());
      cuda::CastOnDevice(from, dsrc.get(), to, dst.get(), n, nullptr);
      EXPECT_EQ(dst.Download(), want) << DTypeName(from) << " -> " << DTypeName(to);
    }
    for (double f : {0.5, 1.0 / 3.0, -2.7, 1e-3, 7.0}) {
      std::vector<uint8_t> want(src.size());
      ScaleElements(from, src.data(), want.data(), n, f);
      Dev<uint8_t> dst(want.size());
      cuda::ScaleOnDevice(from, dsrc.get(), dst.get(), n, f, nullptr);
      EXPECT_EQ(dst.Download(), want) << DTypeName(from) << " * " << f;
      Dev<uint8_t> inplace(src);
      cuda::ScaleOnDevice(from, inplace.get(), inplace.get(), n, f, nullptr);
      EXPECT_EQ(inplace.Download(), want) << DTypeName(from) << " * " << f << " in place";
    }
  }
}

}  // namespace
}  // namespace strata
