// `strata bench`: load time (cold, from the store), prefill tokens/s, decode
// tokens/s at batch 1, peak device memory and peak host RSS of one variant on
// the CPU or a CUDA GPU; --json for machines.
#include <sys/resource.h>
#include <tbb/global_control.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <set>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/formats/error.h"
#include "strata/formats/materialize.h"
#include "strata/runtime/backend.h"
#include "strata/runtime/cpu_kernels.h"
#include "strata/runtime/model.h"
#ifdef STRATA_HAVE_CUDA
#include "strata/cuda/cuda_backend.h"
#endif

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

void CheckDevice(const std::string& device) {
  if (device != "cpu" && device != "cuda") throw UsageError("--device must be cpu or cuda, not \"" + device + "\"");
  if (device != "cuda") return;
#ifdef STRATA_HAVE_CUDA
  RequireCudaDevice();
#else
  throw Error("this strata was built without the CUDA backend (no nvcc at build time, or STRATA_CUDA=OFF); "
              "rebuild with nvcc available, or use --device cpu");
#endif
}

namespace {

using Clock = std::chrono::steady_clock;
double Secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

uint64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
}

// Drops the page cache of every blob the model's tensors are made from, so
// the load that follows reads from the disk ("cold"), as far as an
// unprivileged process can arrange.
void DropBlobCaches(const Store& store, const Model& m) {
  TensorReader reader(store);
  std::set<Hash> seen;
  std::vector<Hash> todo;
  auto add = [&](const HostTensor* t) {
    if (t) todo.push_back(t->node);
  };
  for (const auto& [h, ws] : m.weight_sets)
    for (const HostTensor* t : {ws->attn_norm, ws->q, ws->k, ws->v, ws->o, ws->q_bias, ws->k_bias, ws->v_bias,
                                ws->ffn_norm, ws->gate, ws->up, ws->down})
      add(t);
  add(m.embed);
  add(m.final_norm);
  add(m.lm_head);
  while (!todo.empty()) {
    Hash h = todo.back();
    todo.pop_back();
    if (!seen.insert(h).second) continue;
    const TensorNode n = reader.Node(h);
    if (n.op == TensorNode::Op::kScale || n.op == TensorNode::Op::kCast) {
      todo.push_back(n.src);
    } else if (n.op == TensorNode::Op::kBlob) {
      const std::string path = store.BlobPath(n.blob);
      if (!FileExists(path)) continue;  // the load reports it
      int fd = OpenReadOnly(path);
      DropCache(fd, 0, 0);
      CloseFd(fd);
    }
  }
}

std::vector<int> BenchTokens(int64_t n, int vocab) {
  std::vector<int> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int>((i * 7919 + 13) % vocab);
  return t;
}

int HostArgmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  std::string name, device = "cpu", store_dir;
  int prefill = 512, decode = 256, threads = 0;
  bool json = false, warm = false, no_elide = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant name, or a path to an HF model directory")(
      "device", po::value(&device), "cpu (default) | cuda")(
      "prefill", po::value(&prefill), "prompt tokens for the prefill measurement (default 512)")(
      "decode", po::value(&decode), "tokens decoded one at a time, greedy (default 256)")(
      "threads", po::value(&threads), "CPU worker threads (default: all cores)")(
      "warm", po::bool_switch(&warm), "keep the page cache (default: drop the variant's blobs first: a cold load)")(
      "no-elide", po::bool_switch(&no_elide), "compute layers whose o_proj and down_proj are zero anyway")(
      "json", po::bool_switch(&json), "print the results as one JSON object");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata bench NAME [--device cpu|cuda] [--prefill 512] [--decode 256] [--json]",
                 "Measures a variant: load time from the store (cold unless --warm), prefill tokens/s over a\n"
                 "--prefill token prompt, decode tokens/s at batch 1 (greedy) over --decode tokens, peak device\n"
                 "memory (cuda) and peak host RSS. Token ids are a fixed pseudo-random sequence."))
    return 0;
  CheckDevice(device);
  if (prefill < 1 || decode < 0) throw UsageError("--prefill must be >= 1 and --decode >= 0");
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  const bool cuda = device == "cuda";

  Store store(Store::DefaultRoot(store_dir), /*create=*/fs::is_directory(name));
  const Hash variant = VariantFor(store, name, /*verbose=*/false);
  if (!warm) {
    WeightStore meta(store, /*host_data=*/false);
    DropBlobCaches(store, AssembleModel(store, meta, variant));
  }

  Json out{{"variant", name}, {"device", device}, {"prefill_tokens", prefill}, {"decode_tokens", decode},
           {"cold", !warm}};
  BackendOptions bo;
  bo.max_context = int64_t{prefill} + decode + 1;
  bo.elide = !no_elide;
  const uint64_t rss_before = PeakRssBytes();
  auto t0 = Clock::now();
  WeightStore weights(store, /*host_data=*/!cuda);
  Model model = AssembleModel(store, weights, variant);
  const ModelConfig& c = model.config;
  if (bo.max_context > c.max_position_embeddings)
    throw UsageError("--prefill + --decode = " + std::to_string(bo.max_context) + " exceeds the model's context of " +
                     std::to_string(c.max_position_embeddings));
  std::unique_ptr<Backend> backend;
  std::function<int(int)> greedy_step;  // one decode step, greedy
  std::function<void()> reset;          // back to position 0 for the measured run
  std::function<void()> sample_vram = [] {};  // cuda: tracks the lowest free device memory
#ifdef STRATA_HAVE_CUDA
  CudaBackend* cb = nullptr;
  uint64_t vram_free0 = 0, vram_total = 0, vram_free_min = 0;
#endif
  std::vector<float> logits(c.vocab);
  if (cuda) {
#ifdef STRATA_HAVE_CUDA
    if (!CudaMemInfo(&vram_free0, &vram_total)) throw Error("cudaMemGetInfo failed");
    vram_free_min = vram_free0;
    sample_vram = [&] {
      uint64_t f = 0, t = 0;
      if (CudaMemInfo(&f, &t)) vram_free_min = std::min(vram_free_min, f);
    };
    ProgressBar bar("load", !json && isatty(STDERR_FILENO));
    CudaLoadOptions lo;
    lo.on_start = [&](uint64_t total) { bar.Start(total); };
    lo.bytes_done = bar.counter();
    std::unique_ptr<CudaBackend> b = MakeCudaBackend(model, bo, store, lo);
    bar.Finish();
    cb = b.get();
    greedy_step = [cb](int tok) { return cb->ForwardArgmax({tok}); };
    reset = [cb] { cb->Reset(); };
    backend = std::move(b);
#endif
  } else {
    backend = MakeCpuBackend(model, bo);
    greedy_step = [&](int tok) {
      backend->Forward({tok}, logits.data(), nullptr);
      return HostArgmax(logits);
    };
    // The CPU backend has no reset: a fresh one (cheap: weights stay mapped).
    reset = [&] { backend = MakeCpuBackend(model, bo); };
  }
  auto t1 = Clock::now();
  sample_vram();

  // Warm-up (kernels loaded, cuBLAS heuristics, CPU pages faulted in), then
  // the measured runs from position 0.
  const std::vector<int> prompt = BenchTokens(prefill, c.vocab);
  backend->Forward(std::vector<int>(prompt.begin(), prompt.begin() + std::min(prefill, 8)), logits.data(), nullptr);
  greedy_step(HostArgmax(logits));
  auto t2 = Clock::now();
  reset();

  auto t3 = Clock::now();
  backend->Forward(prompt, logits.data(), nullptr);
  auto t4 = Clock::now();
  sample_vram();
  int tok = HostArgmax(logits);
  std::vector<int> generated;
  for (int i = 0; i < decode; ++i) {
    tok = greedy_step(tok);
    generated.push_back(tok);
  }
  auto t5 = Clock::now();
  sample_vram();

  out["layers"] = static_cast<int>(model.layers.size());
  out["distinct_layers"] = static_cast<int>(model.weight_sets.size());
  out["elided_layers"] = backend->elided_layers();
  out["load_s"] = Secs(t0, t1);
  out["warmup_s"] = Secs(t1, t2);
  out["prefill_s"] = Secs(t3, t4);
  out["prefill_tokens_per_s"] = prefill / std::max(1e-9, Secs(t3, t4));
  out["decode_s"] = Secs(t4, t5);
  out["decode_tokens_per_s"] = decode > 0 ? decode / std::max(1e-9, Secs(t4, t5)) : 0.0;
  out["host_peak_rss_bytes"] = PeakRssBytes();
  out["host_peak_rss_bytes_before_load"] = rss_before;
  out["generated_head"] = std::vector<int>(generated.begin(), generated.begin() + std::min<size_t>(generated.size(), 16));
  if (cuda) {
#ifdef STRATA_HAVE_CUDA
    const CudaStats st = cb->stats();
    out["device_name"] = CudaDeviceSummary();
    out["peak_vram_bytes"] = vram_free0 - vram_free_min;  // cudaMemGetInfo: context, cuBLAS and all
    out["device_alloc_peak_bytes"] = st.device_bytes_peak;
    out["weight_bytes_device"] = st.weight_bytes;
    out["weight_bytes_read"] = st.weight_bytes_read;
    out["kv_cache_bytes"] = st.kv_cache_bytes;
    out["scratch_bytes"] = st.scratch_bytes;
    out["staging_bytes"] = st.staging_bytes;
    out["distinct_tensors"] = st.distinct_tensors;
    out["fused_qkv"] = st.fused_qkv;
    out["fused_gate_up"] = st.fused_gate_up;
    out["weight_upload_s"] = st.load_s;
#endif
  } else {
    out["device_name"] = CpuHasAvx2() ? "cpu (AVX2/FMA)" : "cpu (portable)";
    out["weight_bytes_mapped"] = weights.mapped_bytes();
    out["weight_bytes_materialized"] = weights.materialized_bytes();
  }
  if (json) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  printf("%s on %s: %d layers (%d distinct, %d elided)\n", name.c_str(), out["device_name"].get<std::string>().c_str(),
         out["layers"].get<int>(), out["distinct_layers"].get<int>(), out["elided_layers"].get<int>());
  printf("load      %8.3f s (%s)\n", out["load_s"].get<double>(), warm ? "warm" : "cold");
  printf("prefill   %8.1f tok/s (%d tokens)\n", out["prefill_tokens_per_s"].get<double>(), prefill);
  printf("decode    %8.1f tok/s (%d tokens, batch 1)\n", out["decode_tokens_per_s"].get<double>(), decode);
  if (cuda)
    printf("vram      %s peak (cudaMemGetInfo), %s allocated by strata: %s weights, %s KV cache\n",
           HumanBytes(out["peak_vram_bytes"].get<uint64_t>()).c_str(),
           HumanBytes(out["device_alloc_peak_bytes"].get<uint64_t>()).c_str(),
           HumanBytes(out["weight_bytes_device"].get<uint64_t>()).c_str(),
           HumanBytes(out["kv_cache_bytes"].get<uint64_t>()).c_str());
  printf("host rss  %s peak\n", HumanBytes(out["host_peak_rss_bytes"].get<uint64_t>()).c_str());
  return 0;
}

}  // namespace strata
