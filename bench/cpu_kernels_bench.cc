// Microbenchmark of the CPU MatMul / MatMulMany / AttentionBatch kernels on the
// shapes of the small preset and of mistral-7b (docs/runtime.md, "CPU kernels").
// Built by CMake: cmake --build build --target cpu_kernels_bench (build/bench/cpu_kernels_bench).
// usage: cpu_kernels_bench [--tiers amx-bf16,avx512-bf16,avx512,...] [--threads 2] [--m 1,4,16,128,512]
//                          [--shapes small|7b|all] [--attention] [--quant q8_0,q4_k,q6_k]
// Prints one line per (tier, shape, M): GFLOP/s (2*M*N*K per product), best of
// repeated runs of at least 0.2 s; the weights are re-read from where they sit
// (L3 for the small shapes, DRAM for most of the 7B ones).
// With --quant, the weights are quantized to each type (and packed in panels
// where the tier runs them) and the line also gives the weight bytes read per
// second (GB/s); copies of each tensor, 256 MiB in all, are used in turn so
// that the weights come from DRAM, as in a 7B's decode (QUANT_BENCH_COPIES=N
// sets the number of copies: 1 keeps a tensor that fits in L3 there).
#include <tbb/global_control.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu_quant.h"
#include "strata/formats/quant.h"
#include "strata/runtime/cpu_kernels.h"

using namespace strata;

namespace {

struct Shape {
  const char* name;
  int64_t N, K;
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) out.push_back(t);
  return out;
}

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double Best(F&& f, double min_s = 0.2) {
  f();  // warm
  double best = 1e30, t0 = Seconds();
  int runs = 0;
  while (runs < 3 || Seconds() - t0 < min_s) {
    const double a = Seconds();
    f();
    best = std::min(best, Seconds() - a);
    ++runs;
  }
  return best;
}

std::unique_ptr<uint8_t, decltype(&std::free)> Aligned(size_t bytes) {
  return {static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)), &std::free};
}

int QuantBench(const std::vector<Shape>& list, const std::vector<std::string>& tiers,
               const std::vector<std::string>& mlist, const std::vector<std::string>& types, int64_t maxM) {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0, 1);
  std::printf("%-12s %-6s %-26s %5s %9s %9s %8s\n", "tier", "type", "shape (N x K)", "M", "ms", "GFLOP/s", "GB/s");
  for (const std::string& tname : types) {
    const auto qt = ParseQuantType(tname);
    if (!qt) {
      std::fprintf(stderr, "unknown quant type %s\n", tname.c_str());
      return 2;
    }
    for (const Shape& sh : list) {
      const uint64_t rb = QuantRowBytes(*qt, sh.K), bytes = rb * sh.N;
      const char* env = std::getenv("QUANT_BENCH_COPIES");
      const int copies = std::max(1, env ? std::atoi(env) : static_cast<int>((256ull << 20) / bytes));
      auto rows = Aligned(bytes);
      std::vector<float> row(sh.K);
      for (int64_t n = 0; n < sh.N; ++n) {
        for (auto& v : row) v = nd(rng) * 0.05f;
        QuantizeRow(*qt, row.data(), sh.K, rows.get() + n * rb);
      }
      std::vector<std::unique_ptr<uint8_t, decltype(&std::free)>> data, panels;
      std::vector<HostTensor> ts;
      for (int c = 0; c < copies; ++c) {
        data.push_back(Aligned(bytes));
        std::memcpy(data.back().get(), rows.get(), bytes);
        HostTensor t{DType::kF32, {sh.N, sh.K}, data.back().get(), false};
        t.quant = *qt;
        if (HasPanelKernel(*qt)) {
          panels.push_back(Aligned(sh.N / kPanelRows * PanelBytes(*qt, sh.K)));
          PackPanels(t, 0, sh.N / kPanelRows, panels.back().get());
          t.panels = panels.back().get();
        }
        ts.push_back(t);
      }
      std::vector<float> x(maxM * sh.K), y(maxM * sh.N);
      for (auto& v : x) v = nd(rng);
      for (const std::string& tier : tiers) {
        SetCpuKernelsForTesting(tier);
        for (const std::string& mstr : mlist) {
          const int64_t M = std::atoll(mstr.c_str());
          int next = 0;
          const double s = Best([&] { MatMul(ts[next++ % copies], x.data(), M, y.data()); });
          std::printf("%-12s %-6s %-26s %5lld %9.3f %9.1f %8.1f\n", std::string(CpuKernelsName()).c_str(),
                      tname.c_str(), sh.name, static_cast<long long>(M), s * 1e3, 2.0 * M * sh.N * sh.K / s * 1e-9,
                      bytes / s * 1e-9);
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tiers = std::string(CpuKernelsBest()), ms = "1,4,16,128,512", shapes = "all";
  int threads = 2;
  bool attention = false;
  std::string quant;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tiers" && i + 1 < argc) tiers = argv[++i];
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--m" && i + 1 < argc) ms = argv[++i];
    else if (a == "--shapes" && i + 1 < argc) shapes = argv[++i];
    else if (a == "--attention") attention = true;
    else if (a == "--quant" && i + 1 < argc) quant = argv[++i];
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, threads);
  std::vector<Shape> list;
  if (shapes == "small" || shapes == "all")
    list.insert(list.end(), {{"small qkv/o 512x512", 512, 512},
                             {"small k/v 256x512", 256, 512},
                             {"small gate/up 1024x512", 1024, 512},
                             {"small down 512x1024", 512, 1024},
                             {"small lm_head 32000x512", 32000, 512}});
  if (shapes == "7b" || shapes == "all")
    list.insert(list.end(), {{"7b q/o 4096x4096", 4096, 4096},
                             {"7b k/v 1024x4096", 1024, 4096},
                             {"7b gate/up 14336x4096", 14336, 4096},
                             {"7b down 4096x14336", 4096, 14336}});
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0, 1);
  const std::vector<std::string> mlist = Split(ms);
  int64_t maxM = 1;
  for (auto& m : mlist) maxM = std::max<int64_t>(maxM, std::atoll(m.c_str()));
  if (!quant.empty()) return QuantBench(list, Split(tiers), mlist, Split(quant), maxM);
  std::printf("%-12s %-26s %5s %9s %9s\n", "tier", "shape (N x K)", "M", "ms", "GFLOP/s");
  for (const Shape& sh : list) {
    // Page-aligned, as the store's mmapped tensors are (a tile row of 64 bytes
    // then never straddles two cache lines).
    const size_t wbytes = (sh.N * sh.K * 2 + 4095) / 4096 * 4096;
    std::unique_ptr<uint16_t, decltype(&std::free)> w(static_cast<uint16_t*>(std::aligned_alloc(4096, wbytes)),
                                                       &std::free);
    for (int64_t i = 0; i < sh.N * sh.K; ++i) w.get()[i] = FloatToBF16(nd(rng) * 0.05f);
    HostTensor t{DType::kBF16, {sh.N, sh.K}, w.get(), false};
    std::vector<float> x(maxM * sh.K), y(maxM * sh.N);
    for (auto& v : x) v = nd(rng);
    for (const std::string& tier : Split(tiers)) {
      SetCpuKernelsForTesting(tier);
      for (const std::string& mstr : mlist) {
        const int64_t M = std::atoll(mstr.c_str());
        const double s = Best([&] { MatMul(t, x.data(), M, y.data()); });
        std::printf("%-12s %-26s %5lld %9.3f %9.1f\n", std::string(CpuKernelsName()).c_str(), sh.name,
                    static_cast<long long>(M), s * 1e3, 2.0 * M * sh.N * sh.K / s * 1e-9);
        std::fflush(stdout);
      }
    }
  }
  if (attention) {
    // Prefill of one sequence: M queries at positions [0, M), paged blocks of 32.
    const int heads = 8, kvh = 8, hd = 64, bt = 32;
    for (const std::string& tier : Split(tiers)) {
      SetCpuKernelsForTesting(tier);
      for (const std::string& mstr : mlist) {
        const int64_t M = std::atoll(mstr.c_str()), ctx = 512;
        const int64_t pos0 = M == 1 ? ctx - 1 : 0, total = pos0 + M, nb = (total + bt - 1) / bt;
        std::vector<float> q(M * heads * hd), kv(nb * bt * kvh * hd * 2), out(M * heads * hd);
        for (auto& v : q) v = nd(rng);
        for (auto& v : kv) v = nd(rng);
        std::vector<int32_t> blocks(nb);
        for (int64_t b = 0; b < nb; ++b) blocks[b] = static_cast<int32_t>(nb - 1 - b);
        AttentionJob job;
        job.q = q.data();
        job.kv = {kv.data(), kv.data() + bt * kvh * hd, int64_t{2} * bt * kvh * hd, bt, blocks.data()};
        job.M = M;
        job.pos0 = pos0;
        job.out = out.data();
        const double s = Best([&] { AttentionBatch(&job, 1, heads, kvh, hd, 0); });
        double flops = 0;
        for (int64_t m = 0; m < M; ++m) flops += 4.0 * (pos0 + m + 1) * hd * heads;
        std::printf("%-12s %-26s %5lld %9.3f %9.1f\n", std::string(CpuKernelsName()).c_str(), "attention h8 hd64",
                    static_cast<long long>(M), s * 1e3, flops / s * 1e-9);
      }
    }
  }
  return 0;
}
