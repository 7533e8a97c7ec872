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
#include "strata/runtime/engine.h"
#include "strata/runtime/model.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

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
    for (const HostTensor* t : ws->by_role) add(t);
  add(m.embed);
  add(m.final_norm);
  add(m.lm_head);
  while (!todo.empty()) {
    Hash h = todo.back();
    todo.pop_back();
    if (!seen.insert(h).second) continue;
    const TensorNode n = reader.Node(h);
    const std::optional<Hash> mat = reader.Materialized(h);  // `strata materialize`: the load maps this blob
    if (!n.leaf() && !mat) {
      for (const Hash& c : n.Children()) todo.push_back(c);
    } else if (n.op == TensorNode::Op::kBlob || mat) {
      const std::string path = store.BlobPath(mat ? *mat : n.blob);
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

// "512,2048" -> {512, 2048}. Throws UsageError unless every item is an integer >= 1.
std::vector<int> ParseLengths(const std::string& s, const std::string& option) {
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
      throw UsageError("--" + option + " wants comma-separated counts >= 1, got \"" + item + "\"");
    }
  }
  if (out.empty()) throw UsageError("--" + option + " is empty");
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
  for (const Json& r : out["batched"])
    printf("batched   %8.1f tok/s aggregate (%d sequences, %d decode steps after a %d-token prefill each)\n",
           r["tokens_per_s"].get<double>(), r["sequences"].get<int>(), r["steps"].get<int>(),
           r["prompt_tokens"].get<int>());
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
  printf("kv cache  %s at most in use (%s per block of %d positions)\n",
         HumanBytes(out["kv_peak_bytes"].get<uint64_t>()).c_str(), HumanBytes(out["kv_block_bytes"].get<uint64_t>()).c_str(),
         out["kv_block_tokens"].get<int>());
  if (cuda) {
    printf("host rss  %s peak\n", HumanBytes(out["host_peak_rss_bytes"].get<uint64_t>()).c_str());
  } else {
    const int64_t other = out["host_rss_other_bytes"].get<int64_t>();
    printf("host rss  %s peak: weights %s + KV %s + %s%s other\n",
           HumanBytes(out["host_peak_rss_bytes"].get<uint64_t>()).c_str(),
           HumanBytes(out["weight_bytes_resident"].get<uint64_t>()).c_str(),
           HumanBytes(out["kv_peak_bytes"].get<uint64_t>()).c_str(), other < 0 ? "-" : "",
           HumanBytes(static_cast<uint64_t>(other < 0 ? -other : other)).c_str());
  }
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  std::string name, device = "cpu", store_dir, prefill_s = "512", batch_s;
  int decode = 256, threads = 0, batch_prompt = 16, batch_steps = 32;
  bool json = false, warm = false, no_elide = false, no_graphs = false, no_verify_load = false;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant name, or a path to an HF model directory")(
      "device", po::value(&device), "cpu (default) | cuda")(
      "prefill", po::value(&prefill_s),
      "prompt lengths for the prefill measurement, comma-separated, each from position 0 (default 512)")(
      "decode", po::value(&decode), "tokens decoded one at a time, greedy, after the first prefill (default 256)")(
      "batch", po::value(&batch_s),
      "batched decode: numbers of sequences decoded together, comma-separated (e.g. 1,4,16; default: none)")(
      "batch-prompt", po::value(&batch_prompt), "with --batch: prompt tokens of each sequence (default 16)")(
      "batch-steps", po::value(&batch_steps), "with --batch: decode steps timed, each one token per sequence (default 32)")(
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
                 "strata bench NAME [--device cpu|cuda] [--prefill 512[,2048...]] [--decode 256] [--batch 1,4,16] [--json]",
                 "Measures a variant: load time from the store (cold unless --warm); time to first token on the\n"
                 "first run (load + prefill of the first --prefill length + argmax) and warm; prefill tokens/s\n"
                 "for each --prefill length (each from position 0); decode tokens/s at batch 1 (greedy) over\n"
                 "--decode tokens after the first prefill; with --batch, the aggregate decode tokens/s of N\n"
                 "sequences advanced together by one batched forward pass per step (each first prefilled with\n"
                 "--batch-prompt distinct tokens, all in one pass); the weight bytes one decode step reads and,\n"
                 "on cuda, the device's measured read bandwidth and the decode bound they imply (bandwidth /\n"
                 "bytes per token); the KV cache's peak use; peak device memory (cuda) and peak host RSS. Token\n"
                 "ids are a fixed pseudo-random sequence."))
    return 0;
  CheckDevice(device);
  const std::vector<int> prefills = ParseLengths(prefill_s, "prefill");
  const std::vector<int> batches = batch_s.empty() ? std::vector<int>{} : ParseLengths(batch_s, "batch");
  const int max_prefill = *std::max_element(prefills.begin(), prefills.end());
  if (decode < 0) throw UsageError("--decode must be >= 0");
  if (batch_prompt < 1) throw UsageError("--batch-prompt must be >= 1");
  if (batch_steps < 1) throw UsageError("--batch-steps must be >= 1");
  CheckThreads(threads);
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  const bool cuda = device == "cuda";

  Store store(Store::DefaultRoot(store_dir), /*create=*/fs::is_directory(name));
  const Hash variant = VariantFor(store, name, /*verbose=*/false);
  // The longest sequence either measurement runs, checked before any weight is read.
  const int64_t seq_positions = std::max<int64_t>(int64_t{max_prefill} + decode + 2, int64_t{batch_prompt} + batch_steps + 2);
  if (std::string p = ContextProblem(LoadVariantConfig(store, LoadVariant(store, variant)), seq_positions); !p.empty())
    throw UsageError("the longest --prefill (" + std::to_string(max_prefill) + ") + --decode (" +
                     std::to_string(decode) + ") + 2, or --batch-prompt + --batch-steps + 2: " + p +
                     "; lower --prefill or --decode (or --batch-prompt, --batch-steps)");
  if (!warm) {
    WeightStore meta(store, /*host_data=*/false, /*verify=*/false);  // metadata only: nothing is read
    DropBlobCaches(store, AssembleModel(store, meta, variant));
  }

  Json out{{"variant", name}, {"device", device}, {"prefill_tokens", prefills[0]}, {"decode_tokens", decode},
           {"cold", !warm}};
  EngineOptions eo;
  eo.device = device;
  eo.elide = !no_elide;
  eo.verify_load = !no_verify_load;
  eo.cuda_graphs = !no_graphs;
  eo.max_context = seq_positions;
  const int max_batch = batches.empty() ? 1 : *std::max_element(batches.begin(), batches.end());
  // Room for the largest batch (each sequence rounded up to whole blocks) or the longest run.
  eo.kv_positions = std::max<int64_t>(seq_positions + kDefaultKvBlockTokens,
                                      int64_t{max_batch} * (batch_prompt + batch_steps + 2 + kDefaultKvBlockTokens));
  uint64_t vram_free0 = 0, vram_total = 0, vram_free_min = 0;
  const bool vram = DeviceMemory(device, &vram_free0, &vram_total);
  vram_free_min = vram_free0;
  auto sample_vram = [&] {
    uint64_t f = 0, t = 0;
    if (vram && DeviceMemory(device, &f, &t)) vram_free_min = std::min(vram_free_min, f);
  };
  const uint64_t rss_before = PeakRssBytes();
  auto t0 = Clock::now();
  std::unique_ptr<Engine> engine = OpenEngine(store, variant, eo, !json);
  const ModelConfig& c = engine->config();
  auto t1 = Clock::now();
  sample_vram();

  // The first run, cold: prefill of the first length and its token, timed
  // from the start of the load (time to first token as a user sees it).
  const std::vector<int> prompt = BenchTokens(max_prefill, c.vocab);
  auto prefix = [&](int n) { return std::vector<int>(prompt.begin(), prompt.begin() + n); };
  std::unique_ptr<Sequence> seq = engine->NewSequence();
  seq->Append(prefix(prefills[0]));
  engine->Step({seq.get()});
  auto t_first = Clock::now();
  sample_vram();
  // Warm-up of the decode path (kernels loaded, a CUDA graph captured and
  // replayed, CPU pages faulted in), then the measured runs from position 0.
  for (int i = 0; i < 2; ++i) {
    seq->Append({seq->next()});
    engine->Step({seq.get()});
  }
  auto t2 = Clock::now();

  Json prefill_runs = Json::array();
  double ttft_warm = 0, decode_secs = 0;
  std::vector<int> generated;
  for (size_t i = 0; i < prefills.size(); ++i) {
    seq = engine->NewSequence();  // the previous one's blocks are freed and reused
    seq->Append(prefix(prefills[i]));
    auto t3 = Clock::now();
    engine->Step({seq.get()});
    auto t4 = Clock::now();
    sample_vram();
    const double secs = Secs(t3, t4);
    prefill_runs.push_back(
        Json{{"tokens", prefills[i]}, {"seconds", secs}, {"tokens_per_s", prefills[i] / std::max(1e-9, secs)}});
    if (i != 0) continue;
    ttft_warm = secs;
    auto t5 = Clock::now();
    for (int j = 0; j < decode; ++j) {
      seq->Append({seq->next()});
      engine->Step({seq.get()});
      generated.push_back(seq->next());
    }
    decode_secs = Secs(t5, Clock::now());
    sample_vram();
  }
  seq.reset();

  // Batched decode: N sequences, prefilled together, then advanced together.
  Json batched = Json::array();
  for (int nseq : batches) {
    std::vector<std::unique_ptr<Sequence>> seqs;
    std::vector<Sequence*> all;
    for (int i = 0; i < nseq; ++i) {
      seqs.push_back(engine->NewSequence());
      std::vector<int> p(static_cast<size_t>(batch_prompt));
      for (int j = 0; j < batch_prompt; ++j) p[j] = static_cast<int>((int64_t{i} * 104729 + j * 7919 + 13) % c.vocab);
      seqs.back()->Append(p);
      all.push_back(seqs.back().get());
    }
    engine->Step(all);  // one batched prefill
    auto step = [&] {
      for (Sequence* s : all) s->Append({s->next()});
      engine->Step(all);
    };
    step();  // warm-up
    auto t6 = Clock::now();
    for (int j = 0; j < batch_steps; ++j) step();
    const double secs = Secs(t6, Clock::now());
    sample_vram();
    batched.push_back(Json{{"sequences", nseq},
                           {"steps", batch_steps},
                           {"prompt_tokens", batch_prompt},
                           {"seconds", secs},
                           {"tokens_per_s", double(nseq) * batch_steps / std::max(1e-9, secs)}});
  }

  const EngineInfo info = engine->info();
  const KvStats kv = engine->kv_stats();
  const uint64_t bytes_per_token = info.decode_weight_bytes_per_token;
  const double decode_tps = decode > 0 ? decode / std::max(1e-9, decode_secs) : 0.0;
  out["prefill"] = prefill_runs;
  out["batched"] = batched;
  out["layers"] = info.layers;
  out["distinct_layers"] = info.distinct_layers;
  out["elided_layers"] = info.elided_layers;
  out["load_s"] = Secs(t0, t1);
  out["ttft_cold_s"] = Secs(t0, t_first);
  out["ttft_warm_s"] = ttft_warm;
  out["warmup_s"] = Secs(t_first, t2);
  out["prefill_s"] = prefill_runs[0]["seconds"];
  out["prefill_tokens_per_s"] = prefill_runs[0]["tokens_per_s"];
  out["decode_s"] = decode_secs;
  out["decode_tokens_per_s"] = decode_tps;
  out["decode_weight_bytes_per_token"] = bytes_per_token;
  out["kv_block_tokens"] = kv.block_tokens;
  out["kv_block_bytes"] = kv.block_bytes;
  out["kv_peak_bytes"] = static_cast<uint64_t>(kv.peak_used_blocks) * kv.block_bytes;
  out["kv_budget_bytes"] = static_cast<uint64_t>(kv.total_blocks) * kv.block_bytes;
  out["host_peak_rss_bytes"] = PeakRssBytes();
  out["host_peak_rss_bytes_before_load"] = rss_before;
  out["generated_head"] = std::vector<int>(generated.begin(), generated.begin() + std::min<size_t>(generated.size(), 16));
  out["device_name"] = info.device_name;
  out["kernels"] = engine->backend().kernels();
  if (cuda) {
    const Json st = engine->DeviceStats();
    out["peak_vram_bytes"] = vram_free0 - vram_free_min;  // cudaMemGetInfo: context, cuBLAS and all
    out["device_alloc_peak_bytes"] = st.value("device_bytes_peak", uint64_t{0});
    out["weight_bytes_device"] = st.value("weight_bytes", uint64_t{0});
    for (const char* k : {"weight_bytes_read", "kv_cache_bytes", "scratch_bytes", "staging_bytes", "distinct_tensors",
                          "fused_qkv", "fused_gate_up", "decode_graph", "decode_graph_nodes", "decode_kernels_per_step"})
      if (st.contains(k)) out[k] = st[k];
    out["weight_upload_s"] = st.value("load_s", 0.0);
    out["decode_graphs"] = !no_graphs;
    // After the measurements (and after peak VRAM was sampled): its buffer
    // is the device's to give, not the model's.
    double bw = 0;
    try {
      bw = engine->MeasureReadBandwidth();
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
  } else {
    out["weight_bytes_mapped"] = info.weight_bytes_mapped;
    out["weight_bytes_materialized"] = info.weight_bytes_materialized;
    out["weight_bytes_packed"] = info.weight_bytes_packed;
    out["weight_bytes_released"] = info.weight_bytes_released;
    out["weight_bytes_resident"] = info.weight_bytes_resident();
    // What the process holds beyond the weights and the KV cache it used
    // (issue 12's target: at most 64 MiB).
    out["host_rss_other_bytes"] = static_cast<int64_t>(out["host_peak_rss_bytes"].get<uint64_t>()) -
                                  static_cast<int64_t>(info.weight_bytes_resident() +
                                                       out["kv_peak_bytes"].get<uint64_t>());
  }
  if (json) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  PrintReport(out);
  return 0;
}

}  // namespace strata
