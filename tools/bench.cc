// `strata bench`: load time (cold, from the store), time to first token,
// prefill tokens/s at several lengths, decode tokens/s at batch 1 against the
// bandwidth bound, peak device memory and peak host RSS of one variant on the
// CPU or a CUDA GPU; --json for machines.
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
#include <sstream>

#include "cli.h"
#include "commands.h"
#include "progress.h"
#include "strata/formats/error.h"
#include "strata/formats/variant_check.h"
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

// "512,2048" -> {512, 2048}. Throws UsageError unless every item is an integer >= 1.
std::vector<int> ParseLengths(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 1 || v > INT32_MAX) throw 0;
      out.push_back(static_cast<int>(v));
    } catch (...) {
      throw UsageError("--prefill wants comma-separated token counts >= 1, got \"" + item + "\"");
    }
  }
  if (out.empty()) throw UsageError("--prefill is empty");
  return out;
}

// The human-readable form of `strata bench --json`'s object `out`.
void PrintReport(const Json& out) {
  const bool cuda = out["device"] == "cuda";
  const char* load = out["cold"].get<bool>() ? "cold" : "warm";
  printf("%s on %s: %d layers (%d distinct, %d elided)\n", out["variant"].get<std::string>().c_str(),
         out["device_name"].get<std::string>().c_str(), out["layers"].get<int>(), out["distinct_layers"].get<int>(),
         out["elided_layers"].get<int>());
  printf("load      %8.3f s (%s)\n", out["load_s"].get<double>(), load);
  printf("ttft      %8.3f s first run (%s load + %d-token prefill + first token), %.3f s warm\n",
         out["ttft_cold_s"].get<double>(), load, out["prefill_tokens"].get<int>(), out["ttft_warm_s"].get<double>());
  for (const Json& r : out["prefill"])
    printf("prefill   %8.1f tok/s (%d tokens)\n", r["tokens_per_s"].get<double>(), r["tokens"].get<int>());
  printf("decode    %8.1f tok/s (%d tokens, batch 1)\n", out["decode_tokens_per_s"].get<double>(),
         out["decode_tokens"].get<int>());
  printf("weights   %s read per decode step\n", HumanBytes(out["decode_weight_bytes_per_token"].get<uint64_t>()).c_str());
  if (cuda) {
    if (out["decode_bound_tokens_per_s"].is_null())
      printf("bound          n/a (the read bandwidth was not measured)\n");
    else
      printf("bound     %8.1f tok/s (read bandwidth %.1f GB/s measured): decode at %.1f%%\n",
             out["decode_bound_tokens_per_s"].get<double>(), out["read_bandwidth_bytes_per_s"].get<double>() / 1e9,
             out["decode_pct_of_bound"].get<double>());
    printf("graphs    decode %s: %d graph nodes, %d kernels per step\n",
           out["decode_graph"].get<bool>() ? "replays a CUDA graph" : "launches kernels one by one",
           out["decode_graph_nodes"].get<int>(), out["decode_kernels_per_step"].get<int>());
    printf("vram      %s peak (cudaMemGetInfo), %s allocated by strata: %s weights, %s KV cache\n",
           HumanBytes(out["peak_vram_bytes"].get<uint64_t>()).c_str(),
           HumanBytes(out["device_alloc_peak_bytes"].get<uint64_t>()).c_str(),
           HumanBytes(out["weight_bytes_device"].get<uint64_t>()).c_str(),
           HumanBytes(out["kv_cache_bytes"].get<uint64_t>()).c_str());
  }
  printf("host rss  %s peak\n", HumanBytes(out["host_peak_rss_bytes"].get<uint64_t>()).c_str());
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  std::string name, device = "cpu", store_dir, prefill_s = "512";
  int decode = 256, threads = 0;
  bool json = false, warm = false, no_elide = false, no_graphs = false, no_verify_load = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant name, or a path to an HF model directory")(
      "device", po::value(&device), "cpu (default) | cuda")(
      "prefill", po::value(&prefill_s),
      "prompt lengths for the prefill measurement, comma-separated, each from position 0 (default 512)")(
      "decode", po::value(&decode), "tokens decoded one at a time, greedy, after the first prefill (default 256)")(
      "threads", po::value(&threads), "CPU worker threads (default: all cores)")(
      "warm", po::bool_switch(&warm), "keep the page cache (default: drop the variant's blobs first: a cold load)")(
      "no-elide", po::bool_switch(&no_elide), "compute layers whose o_proj and down_proj are zero anyway")(
      "no-verify-load", po::bool_switch(&no_verify_load), "do not hash the blobs as they load (see `strata run --help`)")(
      "no-graphs", po::bool_switch(&no_graphs), "cuda: launch the decode kernels one by one, not as a CUDA graph")(
      "json", po::bool_switch(&json), "print the results as one JSON object");
  AddStoreOption(d, store_dir);
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm,
                 "strata bench NAME [--device cpu|cuda] [--prefill 512[,2048...]] [--decode 256] [--json]",
                 "Measures a variant: load time from the store (cold unless --warm); time to first token on the\n"
                 "first run (load + prefill of the first --prefill length + argmax) and warm; prefill tokens/s\n"
                 "for each --prefill length (each from position 0); decode tokens/s at batch 1 (greedy) over\n"
                 "--decode tokens after the first prefill; the weight bytes one decode step reads and, on cuda,\n"
                 "the device's measured read bandwidth and the decode bound they imply (bandwidth / bytes per\n"
                 "token); peak device memory (cuda) and peak host RSS. Token ids are a fixed pseudo-random\n"
                 "sequence."))
    return 0;
  CheckDevice(device);
  const std::vector<int> prefills = ParseLengths(prefill_s);
  const int max_prefill = *std::max_element(prefills.begin(), prefills.end());
  if (decode < 0) throw UsageError("--decode must be >= 0");
  CheckThreads(threads);
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  const bool cuda = device == "cuda";

  Store store(Store::DefaultRoot(store_dir), /*create=*/fs::is_directory(name));
  const Hash variant = VariantFor(store, name, /*verbose=*/false);
  // Before any weight is read (bo.max_context below is this sum).
  if (std::string p = ContextProblem(LoadVariantConfig(store, LoadVariant(store, variant)),
                                     int64_t{max_prefill} + decode + 1);
      !p.empty())
    throw UsageError("the longest --prefill (" + std::to_string(max_prefill) + ") + --decode (" +
                     std::to_string(decode) + ") + 1: " + p + "; lower --prefill or --decode");
  if (!warm) {
    WeightStore meta(store, /*host_data=*/false, /*verify=*/false);  // metadata only: nothing is read
    DropBlobCaches(store, AssembleModel(store, meta, variant));
  }

  Json out{{"variant", name}, {"device", device}, {"prefill_tokens", prefills[0]}, {"decode_tokens", decode},
           {"cold", !warm}};
  BackendOptions bo;
  bo.max_context = int64_t{max_prefill} + decode + 1;
  bo.elide = !no_elide;
  const uint64_t rss_before = PeakRssBytes();
  auto t0 = Clock::now();
  WeightStore weights(store, /*host_data=*/!cuda, !no_verify_load);
  Model model = AssembleModel(store, weights, variant);
  const ModelConfig& c = model.config;
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
    lo.graphs = !no_graphs;
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

  // The first run, cold: prefill of the first length and its token, timed
  // from the start of the load (time to first token as a user sees it).
  const std::vector<int> prompt = BenchTokens(max_prefill, c.vocab);
  auto prefix = [&](int n) { return std::vector<int>(prompt.begin(), prompt.begin() + n); };
  backend->Forward(prefix(prefills[0]), logits.data(), nullptr);
  int tok = HostArgmax(logits);
  auto t_first = Clock::now();
  sample_vram();
  // Warm-up of the decode path (kernels loaded, a CUDA graph captured and
  // replayed, CPU pages faulted in), then the measured runs from position 0.
  tok = greedy_step(greedy_step(tok));
  auto t2 = Clock::now();

  Json prefill_runs = Json::array();
  double ttft_warm = 0, decode_secs = 0;
  std::vector<int> generated;
  for (size_t i = 0; i < prefills.size(); ++i) {
    reset();
    const std::vector<int> p = prefix(prefills[i]);
    auto t3 = Clock::now();
    backend->Forward(p, logits.data(), nullptr);
    auto t4 = Clock::now();
    tok = HostArgmax(logits);
    sample_vram();
    const double secs = Secs(t3, t4);
    prefill_runs.push_back(
        Json{{"tokens", prefills[i]}, {"seconds", secs}, {"tokens_per_s", prefills[i] / std::max(1e-9, secs)}});
    if (i != 0) continue;
    ttft_warm = Secs(t3, Clock::now());
    auto t5 = Clock::now();
    for (int j = 0; j < decode; ++j) {
      tok = greedy_step(tok);
      generated.push_back(tok);
    }
    decode_secs = Secs(t5, Clock::now());
    sample_vram();
  }

  const uint64_t bytes_per_token = DecodeWeightBytesPerToken(model, bo.elide);
  const double decode_tps = decode > 0 ? decode / std::max(1e-9, decode_secs) : 0.0;
  out["prefill"] = prefill_runs;
  out["layers"] = static_cast<int>(model.layers.size());
  out["distinct_layers"] = static_cast<int>(model.weight_sets.size());
  out["elided_layers"] = backend->elided_layers();
  out["load_s"] = Secs(t0, t1);
  out["ttft_cold_s"] = Secs(t0, t_first);
  out["ttft_warm_s"] = ttft_warm;
  out["warmup_s"] = Secs(t_first, t2);
  out["prefill_s"] = prefill_runs[0]["seconds"];
  out["prefill_tokens_per_s"] = prefill_runs[0]["tokens_per_s"];
  out["decode_s"] = decode_secs;
  out["decode_tokens_per_s"] = decode_tps;
  out["decode_weight_bytes_per_token"] = bytes_per_token;
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
    out["decode_graphs"] = !no_graphs;
    out["decode_graph"] = st.decode_graph;
    out["decode_graph_nodes"] = st.decode_graph_nodes;
    out["decode_kernels_per_step"] = st.decode_kernels_per_step;
    // After the measurements (and after peak VRAM was sampled): its buffer
    // is the device's to give, not the model's.
    double bw = 0;
    try {
      bw = MeasureDeviceReadBandwidth();
    } catch (const Error& e) {  // e.g. no room for its buffer beside a large model: the rest stands
      fprintf(stderr, "strata bench: the read bandwidth was not measured: %s\n", e.what());
    }
    out["read_bandwidth_bytes_per_s"] = nullptr;
    out["decode_bound_tokens_per_s"] = nullptr;
    out["decode_pct_of_bound"] = nullptr;
    if (bw > 0 && bytes_per_token > 0) {
      const double bound = bw / static_cast<double>(bytes_per_token);
      out["read_bandwidth_bytes_per_s"] = bw;
      out["decode_bound_tokens_per_s"] = bound;
      out["decode_pct_of_bound"] = 100.0 * decode_tps / bound;
    }
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
  PrintReport(out);
  return 0;
}

}  // namespace strata
