// Whole-model checks of the CUDA backend against the CPU backend on tiny
// synthetic models compiled into a temporary store: a base model, SOLAR-style
// DUS, block expansion (with and without elision), Qwen2 (biases), tied
// embeddings, F32 weights, dtype/scale chains and merge recipes. Logits: rel err <= 2e-2
// (max |gpu - cpu| / max |cpu|); greedy tokens identical wherever the CPU's
// top-2 margin exceeds that tolerance. Also: weights resident once per
// distinct tensor node, bit for bit what the host materializes, and one
// weight pool shared by the backends of several variants (the union once).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "device_weights.h"
#include "gpu_test_util.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/synth.h"
#include "strata/runtime/model.h"
#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using gputest::RelErr;

constexpr double kTol = 2e-2;

std::string ReadSourceFile(const std::string& rel) {
  std::ifstream f(std::string(STRATA_SOURCE_DIR) + "/" + rel);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int Argmax(const float* v, int64_t n) { return static_cast<int>(std::max_element(v, v + n) - v); }

// True when the top-2 margin of `row` exceeds kTol of its largest magnitude:
// then both backends must pick the same greedy token.
bool ClearWinner(const float* row, int64_t n) {
  std::vector<float> v(row, row + n);
  std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
  float mx = 0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, std::abs(row[i]));
  return v[0] - v[1] > kTol * mx;
}

// Every tensor of the model, by node (the distinct ones).
std::map<Hash, const HostTensor*> DistinctTensors(const Model& m) {
  std::map<Hash, const HostTensor*> out;
  for (const auto& [h, ws] : m.weight_sets)
    for (const HostTensor* t : ws->by_role)
      if (t) out[t->node] = t;
  for (const HostTensor* t : {m.embed, m.final_norm, m.lm_head}) out[t->node] = t;
  return out;
}

uint64_t Bytes(const HostTensor* t) { return t->numel() * DTypeSize(t->dtype); }

// Every distinct tensor of `m` is resident in `dw`, bit for bit what the host
// materialized; returns their bytes.
uint64_t ExpectResidentAsOnHost(const cuda::DeviceWeights& dw, const Model& m, const std::string& variant) {
  uint64_t sum = 0;
  for (const auto& [h, t] : DistinctTensors(m)) {
    const cuda::DeviceTensor* d = dw.Find(h);
    if (!d) {
      ADD_FAILURE() << variant << ": tensor node " << h.Hex() << " is not resident";
      continue;
    }
    std::vector<uint8_t> got(Bytes(t));
    CUDA_CHECK(cudaMemcpy(got.data(), d->data, got.size(), cudaMemcpyDeviceToHost));
    EXPECT_EQ(0, std::memcmp(got.data(), t->data, got.size())) << variant << " tensor node " << h.Hex();
    sum += Bytes(t);
  }
  return sum;
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    STRATA_REQUIRE_CUDA();
    cache_ = tmp_ / "hf";
    fs::create_directories(cache_);
    env_ = std::make_unique<testutil::ScopedEnv>("HF_HUB_CACHE", cache_);
    store_ = std::make_unique<Store>(tmp_ / "store");
  }

  void Synth(const std::string& id, const std::string& arch, DType dt = DType::kBF16, bool tie = false,
             std::optional<int> layers = std::nullopt, uint64_t seed = 0) {
    SynthSpec s;
    s.arch = arch;
    s.preset = "tiny";
    s.dtype = dt;
    s.tie_embeddings = tie;
    s.layers = layers;
    s.seed = seed;
    SynthToHfCache(s, cache_, id);
  }

  void CompileText(const std::string& name, const std::string& text) {
    CompileOptions o;
    o.name = name;
    Compile(*store_, ParsePlan(text, name + ".yml"), o);
  }

  struct Result {
    CudaStats stats;
    int elided = 0;
    uint64_t distinct_bytes = 0, logical_bytes = 0;
  };

  // Runs `variant` on both backends: a `prompt_len`-token prompt with every
  // position's logits, then `steps` decode steps (teacher-forced with the
  // CPU's greedy tokens), alternating Forward (logits compared) and
  // ForwardArgmax (token compared).
  Result CompareWithCpu(const std::string& variant, bool elide = true, const CudaLoadOptions& lo = {},
                        int prompt_len = 40, int steps = 12) {
    Result r;
    WeightStore weights(*store_);
    Model m = AssembleModel(*store_, weights, store_->ResolveRef(variant));
    const int64_t V = m.config.vocab;
    BackendOptions bo;
    bo.max_context = prompt_len + steps + 1;
    bo.elide = elide;
    std::unique_ptr<Backend> cpu = MakeCpuBackend(m, bo);
    std::unique_ptr<CudaBackend> gpu = MakeCudaBackend(m, bo, *store_, lo);
    std::vector<int> prompt(prompt_len);
    for (int i = 0; i < prompt_len; ++i) prompt[i] = (i * 37 + 11) % static_cast<int>(V);
    std::vector<float> cl(V), gl(V, NAN), call, gall;
    cpu->Forward(prompt, cl.data(), &call);
    gpu->Forward(prompt, gl.data(), &gall);
    EXPECT_EQ(gall.size(), call.size());
    EXPECT_LE(RelErr(gall, call), kTol) << variant << ": prompt logits";
    EXPECT_EQ(gl, std::vector<float>(gall.end() - V, gall.end())) << variant << ": last row of all_logits";
    for (int p = 0; p < prompt_len; ++p)
      if (ClearWinner(call.data() + p * V, V)) {
        EXPECT_EQ(Argmax(gall.data() + p * V, V), Argmax(call.data() + p * V, V)) << variant << ": position " << p;
      }
    int tok = Argmax(cl.data(), V);
    for (int s = 0; s < steps; ++s) {
      cpu->Forward({tok}, cl.data(), nullptr);
      if (s % 2 == 0) {
        std::fill(gl.begin(), gl.end(), NAN);
        gpu->Forward({tok}, gl.data(), nullptr);
        EXPECT_LE(RelErr(gl, cl), kTol) << variant << ": decode step " << s;
        if (ClearWinner(cl.data(), V)) {
          EXPECT_EQ(Argmax(gl.data(), V), Argmax(cl.data(), V)) << variant << ": step " << s;
        }
      } else {
        const int g = gpu->ForwardArgmax({tok});
        if (ClearWinner(cl.data(), V)) {
          EXPECT_EQ(g, Argmax(cl.data(), V)) << variant << ": argmax step " << s;
        }
      }
      tok = Argmax(cl.data(), V);
    }
    EXPECT_EQ(gpu->position(), cpu->position());
    EXPECT_EQ(gpu->elided_layers(), cpu->elided_layers());
    r.stats = gpu->stats();
    r.elided = gpu->elided_layers();
    for (const auto& [h, t] : DistinctTensors(m)) r.distinct_bytes += Bytes(t);
    for (const WeightSet* ws : m.layers)
      for (const HostTensor* t : ws->by_role)
        if (t) r.logical_bytes += Bytes(t);
    for (const HostTensor* t : {m.embed, m.final_norm}) r.logical_bytes += Bytes(t);
    if (m.lm_head != m.embed) r.logical_bytes += Bytes(m.lm_head);
    EXPECT_EQ(r.stats.weight_bytes, r.distinct_bytes) << variant << ": VRAM for weights = distinct bytes";
    return r;
  }

  testutil::ScopedTempDir tmp_;
  std::string cache_;
  std::unique_ptr<testutil::ScopedEnv> env_;
  std::unique_ptr<Store> store_;
};

const char kBasePlan[] =
    "slices:\n"
    "  - sources:\n"
    "    - model: mistralai/Mistral-7B-v0.1\n"
    "      layer_range: [0, 32]\n"
    "merge_method: passthrough\n"
    "dtype: bfloat16\n";

TEST_F(CudaBackendTest, MistralBaseMatchesCpu) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral");
  CompileText("base", kBasePlan);
  Result r = CompareWithCpu("base", true, {}, /*prompt_len=*/70, /*steps=*/12);  // 70: several key tiles
  EXPECT_EQ(r.elided, 0);
  EXPECT_EQ(r.stats.fused_qkv, 32);  // nothing shared: every layer's q/k/v laid out contiguously
  EXPECT_EQ(r.stats.fused_gate_up, 32);
}

TEST_F(CudaBackendTest, SolarDusIsResidentOnce) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral");
  CompileText("base", kBasePlan);
  CompileText("solar", ReadSourceFile("examples/solar-dus.yml"));
  Result base = CompareWithCpu("base");
  Result dus = CompareWithCpu("solar");
  // 48 logical layers over the base's 32 distinct ones: the same device bytes.
  EXPECT_EQ(dus.stats.weight_bytes, base.stats.weight_bytes);
  EXPECT_LT(dus.stats.weight_bytes, dus.logical_bytes);
  EXPECT_EQ(dus.stats.distinct_tensors, base.stats.distinct_tensors);
}

TEST_F(CudaBackendTest, BlockExpansionElidesOrComputesZeroLayers) {
  Synth("openchat/openchat-3.5-0106", "mistral");
  CompileText("bx", ReadSourceFile("examples/block-expansion-40.yml"));
  Result elided = CompareWithCpu("bx", /*elide=*/true);
  EXPECT_EQ(elided.elided, 8);
  Result computed = CompareWithCpu("bx", /*elide=*/false);
  EXPECT_EQ(computed.elided, 0);
  EXPECT_LT(computed.stats.weight_bytes, computed.logical_bytes);
}

TEST_F(CudaBackendTest, Qwen2BiasesAndTiedLlama) {
  Synth("Qwen/Qwen2-tiny", "qwen2");
  CompileText("qwen", "models:\n  - model: Qwen/Qwen2-tiny\nmerge_method: passthrough\n");
  CompareWithCpu("qwen");
  Synth("meta-llama/tied-tiny", "llama", DType::kBF16, /*tie=*/true);
  CompileText("tied", "models:\n  - model: meta-llama/tied-tiny\nmerge_method: passthrough\n");
  CompareWithCpu("tied");
}

TEST_F(CudaBackendTest, F32AndF16Weights) {
  Synth("meta-llama/f32-tiny", "llama", DType::kF32, false, 6);
  CompileText("f32", "models:\n  - model: meta-llama/f32-tiny\nmerge_method: passthrough\n");
  CompareWithCpu("f32");
  // Cast to bf16, scale the MLP, cast to f16: device-side cast/scale chains.
  CompileText("chain",
              "slices:\n"
              "  - sources:\n"
              "    - model: meta-llama/f32-tiny\n"
              "      layer_range: [0, 6]\n"
              "      parameters:\n"
              "        scale:\n"
              "          - filter: mlp\n"
              "            value: 0.5\n"
              "          - value: 1.0\n"
              "merge_method: passthrough\n"
              "dtype: bfloat16\n"
              "out_dtype: float16\n");
  CompareWithCpu("chain");
}

// Device bytes of every tensor node equal what the host materializes (blob,
// zeros, scale, cast), also with a staging ring of two 4 KiB slots that wraps
// many times and with q/k/v and gate/up fused or not.
TEST_F(CudaBackendTest, ResidentBytesEqualHostBytes) {
  Synth("openchat/openchat-3.5-0106", "mistral");
  Synth("meta-llama/f32-tiny", "llama", DType::kF32, false, 4);
  CompileText("bx", ReadSourceFile("examples/block-expansion-40.yml"));
  CompileText("chain",
              "slices:\n"
              "  - sources:\n"
              "    - model: meta-llama/f32-tiny\n"
              "      layer_range: [0, 4]\n"
              "      parameters:\n"
              "        scale:\n"
              "          - filter: o_proj\n"
              "            value: 0.0\n"
              "          - filter: mlp\n"
              "            value: 0.3\n"
              "          - value: 1.0\n"
              "merge_method: passthrough\n"
              "dtype: bfloat16\n"
              "out_dtype: float16\n");
  for (const char* variant : {"bx", "chain"}) {
    for (bool fuse : {true, false}) {
      WeightStore weights(*store_);
      Model m = AssembleModel(*store_, weights, store_->ResolveRef(variant));
      cudaStream_t stream;
      CUDA_CHECK(cudaStreamCreate(&stream));
      cuda::DeviceLoadOptions o;
      o.fuse = fuse;
      o.staging_slots = 2;
      o.staging_slot_bytes = 4096;
      std::atomic<uint64_t> done{0};
      uint64_t total = 0;
      o.on_start = [&](uint64_t t) { total = t; };
      o.bytes_done = &done;
      {
        cuda::DeviceWeights dw(*store_);
        const cuda::ModelBindings b = dw.Add(m, o, stream);
        EXPECT_EQ(done.load(), total) << variant;
        const uint64_t sum = ExpectResidentAsOnHost(dw, m, variant);
        EXPECT_EQ(b.stats().tensor_bytes, sum);
        EXPECT_EQ(b.stats().uploaded_bytes, sum);  // a fresh pool: everything is new
        EXPECT_EQ(dw.bytes(), sum);
        EXPECT_EQ(total, sum);
        EXPECT_LE(b.stats().pinned_bytes, 2u * 4096u);
        if (!fuse) {
          EXPECT_EQ(b.stats().fused_qkv + b.stats().fused_gate_up, 0);
        }
      }
      CUDA_CHECK(cudaStreamDestroy(stream));
    }
  }
}

// Merge recipes (ties, slerp, dare_linear, ram, arcee_fusion (float32
// results in a bf16 model) over two stored models, model_stock and karcher
// over three): the device
// holds each merged tensor node once, bit for bit what the host materializes,
// and the logits match the CPU's.
TEST_F(CudaBackendTest, MergeRecipesMatchCpuAndHostBytes) {
  Synth("org/base", "mistral", DType::kBF16, false, 6, 1);
  Synth("org/tuned", "mistral", DType::kBF16, false, 6, 2);
  Synth("org/other", "mistral", DType::kBF16, false, 6, 3);
  CompileText("stock",
              "merge_method: model_stock\nbase_model: org/base\nmodels:\n  - model: org/base\n"
              "  - model: org/tuned\n  - model: org/other\nparameters: {filter_wise: [0, 1]}\n");
  CompileText("ram",
              "merge_method: ram\nbase_model: org/base\nmodels:\n  - model: org/base\n  - model: org/tuned\n"
              "parameters: {epsilon: 0.02}\n");
  CompileText("fusion",
              "merge_method: arcee_fusion\nbase_model: org/base\nmodels:\n  - model: org/tuned\n");
  CompileText("karcher",
              "merge_method: karcher\nmodels:\n  - model: org/base\n  - model: org/tuned\n  - model: org/other\n"
              "parameters: {max_iter: [{filter: mlp, value: 2}, {value: 10}]}\n");
  CompileText("ties",
              "merge_method: ties\nbase_model: org/base\nmodels:\n  - model: org/base\n"
              "  - {model: org/tuned, parameters: {weight: 0.7, density: [0.3, 0.8]}}\n");
  CompileText("slerp",
              "merge_method: slerp\nbase_model: org/base\nmodels:\n  - model: org/base\n  - model: org/tuned\n"
              "parameters: {t: [0.1, 0.9]}\n");
  CompileText("dare",
              "merge_method: dare_linear\nbase_model: org/base\nmodels:\n  - model: org/base\n"
              "  - {model: org/tuned, parameters: {weight: 1, density: 0.4}}\ndtype: float16\n");
  for (const char* variant : {"ties", "slerp", "dare", "stock", "ram", "fusion", "karcher"}) {
    CompareWithCpu(variant, true, {}, /*prompt_len=*/24, /*steps=*/4);
    WeightStore weights(*store_);
    Model m = AssembleModel(*store_, weights, store_->ResolveRef(variant));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreate(&stream));
    {
      cuda::DeviceWeights dw(*store_);
      const cuda::ModelBindings b = dw.Add(m, cuda::DeviceLoadOptions{}, stream);
      const uint64_t sum = ExpectResidentAsOnHost(dw, m, variant);
      int merged = 0;
      for (const auto& [h, t] : DistinctTensors(m))
        merged += ParseTensorNode(store_->GetNode(h), h).op == TensorNode::Op::kMerge;
      EXPECT_GT(merged, 6 * 9) << variant;  // every layer tensor is a merge (embeddings and norms too)
      EXPECT_EQ(b.stats().tensor_bytes, sum) << variant;
      EXPECT_EQ(dw.bytes(), sum) << variant;
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
  }
}

TEST_F(CudaBackendTest, FusionAndStagingDoNotChangeLogits) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral", DType::kBF16, false, 4);
  CompileText("small", "models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\n");
  WeightStore weights(*store_);
  Model m = AssembleModel(*store_, weights, store_->ResolveRef("small"));
  BackendOptions bo;
  bo.max_context = 32;
  std::vector<int> prompt = {1, 5, 9, 200, 17, 3, 3, 80};
  std::vector<std::vector<float>> results;
  for (bool fuse : {true, false}) {
    CudaLoadOptions lo;
    lo.fuse = fuse;
    lo.staging_slots = 3;
    lo.staging_slot_bytes = fuse ? 0 : 8192;
    auto gpu = MakeCudaBackend(m, bo, *store_, lo);
    std::vector<float> all, last(m.config.vocab);
    gpu->Forward(prompt, last.data(), &all);
    gpu->Forward({7}, last.data(), nullptr);
    all.insert(all.end(), last.begin(), last.end());
    results.push_back(all);
  }
  EXPECT_LE(RelErr(results[1], results[0]), 1e-4);
}

// Decode through the captured CUDA graph gives bit for bit the logits of the
// same kernels launched one by one, also after Reset() (the graph reads the
// position from device memory) and after a second prefill; the graph holds
// exactly the step's kernels plus the two copies, elided layers absent.
#ifdef STRATA_CUDA_EMU
constexpr int kGraphSteps = 6;  // the CPU kernel emulator is slow
#else
constexpr int kGraphSteps = 30;
#endif

TEST_F(CudaBackendTest, DecodeGraphMatchesEagerLaunchesBitForBit) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral");
  Synth("openchat/openchat-3.5-0106", "mistral");
  CompileText("base", kBasePlan);
  CompileText("solar", ReadSourceFile("examples/solar-dus.yml"));
  CompileText("bx", ReadSourceFile("examples/block-expansion-40.yml"));
  struct Expect {
    const char* variant;
    bool elide;
    int kernels;  // embedding + 5 per computed layer (2 when o/down are zero) + LM head + argmax
  };
  for (const Expect& e : {Expect{"solar", true, 1 + 5 * 48 + 2}, Expect{"bx", true, 1 + 5 * 32 + 2},
                          Expect{"bx", false, 1 + 5 * 32 + 2 * 8 + 2}}) {
    WeightStore weights(*store_);
    Model m = AssembleModel(*store_, weights, store_->ResolveRef(e.variant));
    const int64_t V = m.config.vocab;
    BackendOptions bo;
    bo.max_context = 64;
    bo.elide = e.elide;
    std::vector<std::vector<float>> runs;
    for (bool graphs : {true, false}) {
      CudaLoadOptions lo;
      lo.graphs = graphs;
      auto gpu = MakeCudaBackend(m, bo, *store_, lo);
      for (int round = 0; round < (graphs ? 2 : 1); ++round) {
        gpu->Reset();
        std::vector<float> trace, last(V);
        gpu->Forward({3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7}, last.data(), nullptr);
        int tok = Argmax(last.data(), V);
        for (int step = 0; step < kGraphSteps; ++step) {
          if (step % 3 == 2) {
            tok = gpu->ForwardArgmax({tok});
            trace.push_back(static_cast<float>(tok));
          } else {
            gpu->Forward({tok}, last.data(), nullptr);
            trace.insert(trace.end(), last.begin(), last.end());
            tok = Argmax(last.data(), V);
          }
        }
        runs.push_back(trace);
      }
      const CudaStats st = gpu->stats();
      EXPECT_EQ(st.decode_graph, graphs);
      EXPECT_EQ(st.decode_kernels_per_step, e.kernels) << e.variant << " elide " << e.elide;
      if (graphs) {
        EXPECT_EQ(st.decode_graph_nodes, e.kernels + 2) << e.variant;  // + copy in, copy out
      } else {
        EXPECT_EQ(st.decode_graph_nodes, 0);
      }
    }
    ASSERT_EQ(runs.size(), 3u);
    EXPECT_EQ(runs[0], runs[1]) << e.variant << ": graph replay after Reset()";
    EXPECT_EQ(runs[0], runs[2]) << e.variant << ": graph vs launches one by one";
  }
}

TEST_F(CudaBackendTest, BadTokensAndContextThrow) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral", DType::kBF16, false, 2);
  CompileText("m", "models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\n");
  WeightStore weights(*store_, /*host_data=*/false);  // metadata only, as `strata run --device cuda`
  Model m = AssembleModel(*store_, weights, store_->ResolveRef("m"));
  EXPECT_EQ(weights.mapped_bytes() + weights.materialized_bytes(), 0u);
  BackendOptions bo;
  bo.max_context = 4;
  auto gpu = MakeCudaBackend(m, bo, *store_);
  std::vector<float> logits(m.config.vocab);
  EXPECT_THROW(gpu->Forward({m.config.vocab}, logits.data(), nullptr), Error);
  EXPECT_THROW(gpu->Forward({-1}, logits.data(), nullptr), Error);
  EXPECT_THROW(gpu->Forward({1, 2, 3, 4, 5}, logits.data(), nullptr), Error);
  gpu->Forward({1, 2, 3, 4}, logits.data(), nullptr);
  EXPECT_THROW(gpu->ForwardArgmax({1}), Error);
  gpu->Reset();
  EXPECT_EQ(gpu->position(), 0);
  EXPECT_GE(gpu->ForwardArgmax({1, 2}), 0);
}

// ---------------------------------------------------------------- batches and the paged KV cache

// Deterministic token ids for (sequence, step).
std::vector<int> TokensFor(int seq, int step, int n, int64_t vocab) {
  std::vector<int> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[i] = static_cast<int>((seq * 7919 + step * 131 + i * 37 + 11) % vocab);
  return t;
}

// What one item of a step asks for, and what it got.
struct Want {
  int seq;  // index into the test's sequences
  int n;
  BatchOutput out;
};

struct Got {
  std::vector<float> logits;  // last or all rows (empty for kNone / kArgmax)
  int argmax = -1;
};

// Runs `items` (sequence ids `ids`, tokens TokensFor(...)) as ONE batch on `b`.
std::vector<Got> RunBatch(Backend& b, const std::vector<int>& ids, const std::vector<Want>& step, int step_no,
                          int64_t V) {
  std::vector<std::vector<int>> toks;
  std::vector<Got> got(step.size());
  std::vector<BatchItem> items;
  for (size_t i = 0; i < step.size(); ++i) toks.push_back(TokensFor(step[i].seq, step_no, step[i].n, V));
  for (size_t i = 0; i < step.size(); ++i) {
    BatchItem it;
    it.seq = ids[step[i].seq];
    it.tokens = toks[i].data();
    it.n = step[i].n;
    it.output = step[i].out;
    if (it.output == BatchOutput::kLastLogits) got[i].logits.assign(static_cast<size_t>(V), NAN);
    if (it.output == BatchOutput::kAllLogits) got[i].logits.assign(static_cast<size_t>(V * it.n), NAN);
    it.logits = got[i].logits.data();
    it.argmax = &got[i].argmax;
    items.push_back(it);
  }
  b.ForwardBatch(items);
  return got;
}

// The steps of the batch tests: prefills of different lengths (one crossing
// 64-query tiles and 32-position blocks), decode tokens, a prefill chunk on a
// sequence that already has a cache, every output kind, items in any order.
const std::vector<std::vector<Want>>& BatchPlan() {
  using O = BatchOutput;
  static const std::vector<std::vector<Want>> plan = {
      {{0, 5, O::kAllLogits}, {1, 33, O::kLastLogits}, {2, 1, O::kArgmax}},
      {{3, 70, O::kLastLogits}, {0, 1, O::kLastLogits}, {1, 1, O::kArgmax}, {2, 9, O::kAllLogits}},
      {{2, 1, O::kLastLogits}, {0, 1, O::kAllLogits}, {1, 1, O::kLastLogits}, {3, 1, O::kArgmax}},
      {{1, 30, O::kLastLogits}, {3, 1, O::kLastLogits}, {0, 2, O::kNone}},
      {{0, 1, O::kLastLogits}, {1, 1, O::kLastLogits}, {2, 1, O::kLastLogits}, {3, 1, O::kLastLogits}},
  };
  return plan;
}

// Compares a batched result with the same item run alone (`ref`; for argmax
// items the reference ran with kLastLogits). tol: logits rel err; greedy
// tokens identical wherever the reference's top-2 margin exceeds `margin`.
void ExpectSame(const Want& w, const Got& got, const Got& ref, int64_t V, double tol, double margin,
                const std::string& what) {
  auto clear = [&](const float* row) {
    std::vector<float> v(row, row + V);
    std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
    float mx = 0;
    for (int64_t i = 0; i < V; ++i) mx = std::max(mx, std::abs(row[i]));
    return v[0] - v[1] > margin * mx;
  };
  const float* last_ref = ref.logits.data() + ref.logits.size() - V;
  if (w.out == BatchOutput::kArgmax) {
    ASSERT_EQ(ref.logits.size(), static_cast<size_t>(V)) << what;
    if (clear(last_ref)) {
      EXPECT_EQ(got.argmax, Argmax(last_ref, V)) << what << ": greedy token";
    }
    EXPECT_GE(got.argmax, 0) << what;
    return;
  }
  if (w.out == BatchOutput::kNone) return;
  ASSERT_EQ(got.logits.size(), ref.logits.size()) << what;
  EXPECT_LE(RelErr(got.logits, ref.logits), tol) << what << ": logits";
  for (size_t r = 0; r < got.logits.size() / V; ++r)
    if (clear(ref.logits.data() + r * V)) {
      EXPECT_EQ(Argmax(got.logits.data() + r * V, V), Argmax(ref.logits.data() + r * V, V)) << what << " row " << r;
    }
}

// Every step of BatchPlan() as one batch on `bat`, and each item alone on
// `ref` (kArgmax items with kLastLogits there, to see the margin).
void CompareBatchWithOneAtATime(Backend& bat, Backend& ref, int64_t V, double tol, double margin,
                                const std::string& label) {
  std::vector<int> bids, rids;
  for (int q = 0; q < 4; ++q) {
    bids.push_back(bat.CreateSequence());
    rids.push_back(ref.CreateSequence());
  }
  for (size_t s = 0; s < BatchPlan().size(); ++s) {
    const std::vector<Want>& step = BatchPlan()[s];
    const std::vector<Got> got = RunBatch(bat, bids, step, static_cast<int>(s), V);
    for (size_t i = 0; i < step.size(); ++i) {
      Want alone = step[i];
      if (alone.out == BatchOutput::kArgmax) alone.out = BatchOutput::kLastLogits;
      const std::vector<Got> r = RunBatch(ref, rids, {alone}, static_cast<int>(s), V);
      // The reference ran this item's own tokens: TokensFor depends on the sequence and step only.
      ExpectSame(step[i], got[i], r[0], V, tol, margin,
                 label + " step " + std::to_string(s) + " item " + std::to_string(i) + " (seq " +
                     std::to_string(step[i].seq) + ", " + std::to_string(step[i].n) + " tokens)");
    }
  }
  for (int q = 0; q < 4; ++q) EXPECT_EQ(bat.SequenceLength(bids[q]), ref.SequenceLength(rids[q])) << label;
}

// Batched forward = one sequence at a time: (a) against the same items run
// alone through the batched (GEMM) path, within fp32 rounding (1e-4), greedy
// tokens identical wherever the top-2 margin exceeds 1e-3; (b) against the
// items run alone with the fused decode path for single tokens (GEMV with
// fp32 inputs vs GEMM with bf16-rounded inputs), within kTol; on the base,
// DUS and block-expansion variants.
TEST_F(CudaBackendTest, BatchEqualsOneSequenceAtATime) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral", DType::kBF16, false, 4);
  Synth("openchat/openchat-3.5-0106", "mistral", DType::kBF16, false, 4);
  CompileText("base", "models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\n");
  // DUS over 4 layers: [0, 3) + [1, 4), layer nodes shared at two depths.
  CompileText("dus",
              "slices:\n"
              "  - sources:\n"
              "    - model: mistralai/Mistral-7B-v0.1\n"
              "      layer_range: [0, 3]\n"
              "  - sources:\n"
              "    - model: mistralai/Mistral-7B-v0.1\n"
              "      layer_range: [1, 4]\n"
              "merge_method: passthrough\n");
  // Block expansion with a zeroed copy in the middle: elided, so the cache
  // slots of the layers after it are not their layer indices.
  const std::string zeroed =
      "  - sources:\n"
      "    - model: openchat/openchat-3.5-0106\n"
      "      layer_range: [1, 2]\n"
      "      parameters:\n"
      "        scale:\n"
      "          - filter: o_proj\n"
      "            value: 0.0\n"
      "          - filter: down_proj\n"
      "            value: 0.0\n"
      "          - value: 1.0\n";
  CompileText("bx",
              "slices:\n"
              "  - sources:\n"
              "    - model: openchat/openchat-3.5-0106\n"
              "      layer_range: [0, 2]\n" +
                  zeroed +
                  "  - sources:\n"
                  "    - model: openchat/openchat-3.5-0106\n"
                  "      layer_range: [2, 4]\n" +
                  zeroed + "merge_method: passthrough\ndtype: bfloat16\n");
  for (const char* variant : {"base", "dus", "bx"}) {
    WeightStore weights(*store_);
    Model m = AssembleModel(*store_, weights, store_->ResolveRef(variant));
    const int64_t V = m.config.vocab;
    BackendOptions bo;
    bo.max_context = 512;  // and the default budget: 16 blocks for the 4 sequences' 8
    CudaLoadOptions gemm_only;
    gemm_only.fast_decode = false;
    {
      auto bat = MakeCudaBackend(m, bo, *store_);
      auto ref = MakeCudaBackend(m, bo, *store_, gemm_only);
      CompareBatchWithOneAtATime(*bat, *ref, V, 1e-4, 1e-3, std::string(variant) + " (GEMM path alone)");
      EXPECT_EQ(bat->kv_stats().sequences, 4);
      EXPECT_EQ(bat->elided_layers(), std::string(variant) == "bx" ? 2 : 0);
    }
    {
      auto bat = MakeCudaBackend(m, bo, *store_);
      auto ref = MakeCudaBackend(m, bo, *store_);
      CompareBatchWithOneAtATime(*bat, *ref, V, kTol, kTol, std::string(variant) + " (decode path alone)");
    }
  }
}

// The same batches on the CPU backend (batched there too) and on CUDA.
TEST_F(CudaBackendTest, BatchMatchesCpuBackend) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral", DType::kBF16, false, 4);
  CompileText("base", "models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\n");
  WeightStore weights(*store_);
  Model m = AssembleModel(*store_, weights, store_->ResolveRef("base"));
  const int64_t V = m.config.vocab;
  BackendOptions bo;
  bo.max_context = 512;
  auto gpu = MakeCudaBackend(m, bo, *store_);
  std::unique_ptr<Backend> cpu = MakeCpuBackend(m, bo);
  std::vector<int> gids, cids;
  for (int q = 0; q < 4; ++q) {
    gids.push_back(gpu->CreateSequence());
    cids.push_back(cpu->CreateSequence());
  }
  for (size_t s = 0; s < BatchPlan().size(); ++s) {
    std::vector<Want> step = BatchPlan()[s];
    const std::vector<Got> g = RunBatch(*gpu, gids, step, static_cast<int>(s), V);
    for (Want& w : step)
      if (w.out == BatchOutput::kArgmax) w.out = BatchOutput::kLastLogits;
    const std::vector<Got> c = RunBatch(*cpu, cids, step, static_cast<int>(s), V);
    for (size_t i = 0; i < step.size(); ++i)
      ExpectSame(BatchPlan()[s][i], g[i], c[i], V, kTol, kTol, "cuda vs cpu step " + std::to_string(s) + " item " +
                                                                 std::to_string(i));
  }
}

// Paged KV: blocks are taken as sequences grow and reused once released or
// truncated (kv_stats); a sequence on reused blocks, and a truncated one that
// continues, give the logits of a fresh backend that ran the same tokens; a
// step the budget cannot hold throws with nothing changed, and a valid step
// after it is still right.
TEST_F(CudaBackendTest, PagedKvReusesBlocksTruncatesAndRefusesPastBudget) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral", DType::kBF16, false, 3);
  CompileText("m", "models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\n");
  WeightStore weights(*store_);
  Model m = AssembleModel(*store_, weights, store_->ResolveRef("m"));
  const int64_t V = m.config.vocab;
  CudaLoadOptions gemm_only;
  gemm_only.fast_decode = false;
  BackendOptions bo;
  bo.max_context = 64;
  bo.kv_block_tokens = 8;
  uint64_t block_bytes = 0;
  {
    auto probe = MakeCudaBackend(m, bo, *store_);
    const KvStats st = probe->kv_stats();
    EXPECT_EQ(st.block_tokens, 8);
    EXPECT_EQ(st.total_blocks, 8);  // default budget: max_context positions
    block_bytes = st.block_bytes;
    const uint64_t kvd = static_cast<uint64_t>(m.config.kv_heads) * m.config.head_dim;
    EXPECT_EQ(block_bytes, 3u * 2u * 8u * kvd * 2u);  // 3 layers x K|V x 8 positions x bf16
    EXPECT_EQ(probe->stats().kv_cache_bytes, 8 * block_bytes);
  }
  bo.kv_budget_bytes = 6 * block_bytes + block_bytes / 2;  // 6 blocks
  auto gpu = MakeCudaBackend(m, bo, *store_, gemm_only);
  EXPECT_EQ(gpu->kv_stats().total_blocks, 6);

  // Logits of `tokens` run (as one step each chunk) on a fresh backend.
  auto fresh = [&](const std::vector<std::vector<int>>& chunks) {
    BackendOptions fo;
    fo.max_context = 64;
    fo.kv_block_tokens = 8;
    auto ref = MakeCudaBackend(m, fo, *store_, gemm_only);
    std::vector<float> last(V);
    for (const auto& c : chunks) ref->Forward(c, last.data(), nullptr);
    return last;
  };
  auto run = [&](int seq, const std::vector<int>& toks) {
    std::vector<float> last(V, NAN);
    BatchItem it;
    it.seq = seq;
    it.tokens = toks.data();
    it.n = static_cast<int64_t>(toks.size());
    it.output = BatchOutput::kLastLogits;
    it.logits = last.data();
    gpu->ForwardBatch({it});
    return last;
  };
  const std::vector<int> ta = TokensFor(0, 0, 20, V), tb = TokensFor(1, 0, 10, V), tc = TokensFor(2, 0, 16, V);
  const int a = gpu->CreateSequence(), b = gpu->CreateSequence();
  run(a, ta);  // 3 blocks
  run(b, tb);  // 2 blocks
  EXPECT_EQ(gpu->kv_stats().used_blocks, 5);
  EXPECT_EQ(gpu->kv_stats().sequences, 2);
  gpu->ReleaseSequence(a);
  EXPECT_EQ(gpu->kv_stats().used_blocks, 2);
  EXPECT_EQ(gpu->kv_stats().peak_used_blocks, 5);
  const int c = gpu->CreateSequence();
  const std::vector<float> lc = run(c, tc);  // 2 blocks: a's, reused (written over)
  EXPECT_EQ(gpu->kv_stats().used_blocks, 4);
  EXPECT_LE(RelErr(lc, fresh({tc})), 1e-4) << "a sequence on reused blocks";

  // Truncate b to 5 positions (1 block) and continue with 7 new tokens.
  gpu->TruncateSequence(b, 5);
  EXPECT_EQ(gpu->SequenceLength(b), 5);
  EXPECT_EQ(gpu->kv_stats().used_blocks, 3);
  const std::vector<int> tb2 = TokensFor(1, 1, 7, V);
  const std::vector<float> lb = run(b, tb2);
  EXPECT_LE(RelErr(lb, fresh({std::vector<int>(tb.begin(), tb.begin() + 5), tb2})), 1e-4) << "truncated, continued";
  EXPECT_EQ(gpu->kv_stats().used_blocks, 4);  // b: 12 positions, 2 blocks; c: 2 blocks

  // Past the budget: 2 free blocks; c + 17 tokens needs 3 more (33 positions: 5 blocks).
  const KvStats before = gpu->kv_stats();
  const std::vector<int> big = TokensFor(2, 1, 17, V);
  try {
    run(c, big);
    ADD_FAILURE() << "a step past the KV budget did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache is full"), std::string::npos) << e.what();
  }
  // A batch that fits one item but not both is refused whole.
  {
    std::vector<float> l1(V), l2(V);
    const std::vector<int> t1 = TokensFor(1, 2, 4, V), t2 = TokensFor(2, 2, 17, V);
    BatchItem i1{b, t1.data(), 4, BatchOutput::kLastLogits, l1.data(), nullptr};
    BatchItem i2{c, t2.data(), 17, BatchOutput::kLastLogits, l2.data(), nullptr};
    EXPECT_THROW(gpu->ForwardBatch({i1, i2}), Error);
  }
  const KvStats after = gpu->kv_stats();
  EXPECT_EQ(after.used_blocks, before.used_blocks);
  EXPECT_EQ(gpu->SequenceLength(c), 16);
  EXPECT_EQ(gpu->SequenceLength(b), 12);
  // A valid step after the refusals: c continues correctly.
  const std::vector<int> small = TokensFor(2, 3, 3, V);
  EXPECT_LE(RelErr(run(c, small), fresh({tc, small})), 1e-4) << "a step after a refused one";
  // Releasing everything frees every block.
  gpu->ReleaseSequence(b);
  gpu->ReleaseSequence(c);
  EXPECT_EQ(gpu->kv_stats().used_blocks, 0);
  EXPECT_EQ(gpu->kv_stats().sequences, 0);
  EXPECT_THROW(gpu->ReleaseSequence(b), Error);
}

// The decode graph reads the position and the block table from fixed device
// memory: it stays right across a block boundary (positions 31 -> 32 -> 33
// with 32-position blocks) and for two sequences taking turns, bit for bit
// what the same kernels launched one by one give, and within kTol of the CPU.
TEST_F(CudaBackendTest, DecodeGraphAcrossBlockBoundaries) {
  Synth("mistralai/Mistral-7B-v0.1", "mistral", DType::kBF16, false, 3);
  CompileText("m", "models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\n");
  WeightStore weights(*store_);
  Model m = AssembleModel(*store_, weights, store_->ResolveRef("m"));
  const int64_t V = m.config.vocab;
  BackendOptions bo;
  bo.max_context = 128;  // the default budget: 4 blocks of 32
  bo.kv_block_tokens = 32;
  std::vector<std::vector<float>> traces;
  for (bool graphs : {true, false}) {
    CudaLoadOptions lo;
    lo.graphs = graphs;
    auto gpu = MakeCudaBackend(m, bo, *store_, lo);
    std::unique_ptr<Backend> cpu = MakeCpuBackend(m, bo);
    std::vector<float> trace;
    int ids[2], cids[2];
    for (int q = 0; q < 2; ++q) {
      ids[q] = gpu->CreateSequence();
      cids[q] = cpu->CreateSequence();
    }
    // Sequence 1 first takes a block, so sequence 0's blocks are not contiguous.
    for (int q : {1, 0}) {
      const std::vector<int> p = TokensFor(q, 0, q == 0 ? 31 : 40, V);
      BatchItem it{ids[q], p.data(), static_cast<int64_t>(p.size()), BatchOutput::kNone, nullptr, nullptr};
      gpu->ForwardBatch({it});
      it.seq = cids[q];
      cpu->ForwardBatch({it});
    }
    for (int step = 0; step < 3; ++step)
      for (int q = 0; q < 2; ++q) {
        const int tok = TokensFor(q, step + 1, 1, V)[0];
        std::vector<float> g(V, NAN), c(V);
        BatchItem it{ids[q], &tok, 1, BatchOutput::kLastLogits, g.data(), nullptr};
        gpu->ForwardBatch({it});
        it.seq = cids[q];
        it.logits = c.data();
        cpu->ForwardBatch({it});
        EXPECT_LE(RelErr(g, c), kTol) << "graphs " << graphs << " seq " << q << " position "
                                      << gpu->SequenceLength(ids[q]) - 1;
        trace.insert(trace.end(), g.begin(), g.end());
      }
    EXPECT_EQ(gpu->SequenceLength(ids[0]), 34);
    EXPECT_EQ(gpu->kv_stats().used_blocks, 2 + 2);  // 34 positions: 2 blocks; 43: 2 blocks
    if (graphs) {
      EXPECT_GT(gpu->stats().decode_graph_nodes, 0);
    }
    traces.push_back(trace);
  }
  EXPECT_EQ(traces[0], traces[1]) << "graph replay vs launches one by one";
}

// ---------------------------------------------------------------- one weight pool, several variants

// Distinct tensor node -> device bytes, from the models' HostTensors: the
// expected residency, computed independently of the pool.
std::map<Hash, uint64_t> NodeBytes(const std::vector<const Model*>& models) {
  std::map<Hash, uint64_t> out;
  for (const Model* m : models)
    for (const auto& [h, t] : DistinctTensors(*m)) out[h] = Bytes(t);
  return out;
}

uint64_t Sum(const std::map<Hash, uint64_t>& nodes) {
  uint64_t s = 0;
  for (const auto& [h, b] : nodes) s += b;
  return s;
}

// Of `m`'s nodes, those not in `before`.
std::map<Hash, uint64_t> NewNodes(const Model& m, const std::map<Hash, uint64_t>& before) {
  std::map<Hash, uint64_t> out;
  for (const auto& [h, b] : NodeBytes({&m}))
    if (!before.count(h)) out[h] = b;
  return out;
}

// The weight set of `m` with layer node `layer`.
const WeightSet* SetOf(const Model& m, const Hash& layer) { return m.weight_sets.at(layer).get(); }

class CudaWeightPoolTest : public CudaBackendTest {
 protected:
  // org/m (4 layers); "base" is it whole, "dus" layers 0-2 + 1-3 (every layer
  // node the base's), "bx" the base + layer 3 twice with o/down zeroed (new:
  // the zeroed tensors only).
  void SetUp() override {
    CudaBackendTest::SetUp();
    if (IsSkipped()) return;
    Synth("org/m", "mistral", DType::kBF16, false, 4);
    CompileText("base", "models:\n  - model: org/m\nmerge_method: passthrough\n");
    CompileText("dus", testutil::kDusPlan);
    CompileText("bx", testutil::kBlockExpansionPlan);
  }
};

// DeviceWeights as a pool: each Add allocates and uploads only the nodes not
// yet resident (progress and stats count those), the pool holds the union
// once, bit for bit what the host materializes, and shared nodes bind to the
// same device memory. Fused layouts: a later model with the same q/k/v
// (gate/up) nodes binds the fused view; one whose nodes are resident but not
// back to back (an earlier model loaded them unfused) takes the unfused path,
// and a node inside a fused allocation serves as a standalone tensor. A
// failed Add leaves the pool as it was.
TEST_F(CudaWeightPoolTest, DeviceWeightsAddUploadsOnlyNewNodes) {
  WeightStore weights(*store_);
  const Model base = AssembleModel(*store_, weights, store_->ResolveRef("base"));
  const Model dus = AssembleModel(*store_, weights, store_->ResolveRef("dus"));
  const Model bx = AssembleModel(*store_, weights, store_->ResolveRef("bx"));
  ASSERT_EQ(dus.layers.size(), 6u);
  ASSERT_EQ(bx.layers.size(), 6u);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  {
    cuda::DeviceWeights pool(*store_);
    std::map<Hash, uint64_t> resident;
    std::vector<cuda::ModelBindings> bound;
    for (const Model* m : {&base, &dus, &bx}) {
      const std::map<Hash, uint64_t> fresh = NewNodes(*m, resident);
      cuda::DeviceLoadOptions o;
      o.staging_slots = 2;
      o.staging_slot_bytes = 4096;
      std::atomic<uint64_t> done{0};
      uint64_t total = ~uint64_t{0};
      o.on_start = [&](uint64_t t) { total = t; };
      o.bytes_done = &done;
      bound.push_back(pool.Add(*m, o, stream));
      const cuda::DeviceWeightStats& st = bound.back().stats();
      resident.merge(NodeBytes({m}));
      EXPECT_EQ(total, Sum(fresh));
      EXPECT_EQ(done.load(), Sum(fresh));
      EXPECT_EQ(st.uploaded_bytes, Sum(fresh));
      EXPECT_EQ(st.uploaded_tensors, static_cast<int>(fresh.size()));
      EXPECT_EQ(st.tensor_bytes, Sum(NodeBytes({m})));
      EXPECT_EQ(pool.bytes(), Sum(resident));
      EXPECT_EQ(pool.tensors(), static_cast<int>(resident.size()));
    }
    EXPECT_EQ(bound[1].stats().uploaded_bytes, 0u) << "the DUS's layers are the base's";
    EXPECT_GT(bound[2].stats().uploaded_bytes, 0u) << "block expansion's zeroed o/down are new";
    EXPECT_LT(bound[2].stats().uploaded_bytes, bound[2].stats().tensor_bytes);
    for (const Model* m : {&base, &dus, &bx})
      for (const auto& [h, t] : DistinctTensors(*m)) {
        const cuda::DeviceTensor* d = pool.Find(h);
        ASSERT_NE(d, nullptr) << h.Hex();
        std::vector<uint8_t> got(Bytes(t));
        CUDA_CHECK(cudaMemcpy(got.data(), d->data, got.size(), cudaMemcpyDeviceToHost));
        EXPECT_EQ(0, std::memcmp(got.data(), t->data, got.size())) << "tensor node " << h.Hex();
      }
    // Every base layer fused (nothing shared within it); the DUS binds the
    // base's fused views; bx's copies of layer 3 bind layer 3's.
    EXPECT_EQ(bound[0].stats().fused_qkv, 4);
    EXPECT_EQ(bound[1].stats().fused_qkv, 4);
    EXPECT_EQ(bound[2].stats().fused_qkv, 4);
    EXPECT_EQ(bound[2].stats().fused_gate_up, 4);
    for (size_t i : {1u, 2u}) {
      const Model& m = i == 1 ? dus : bx;
      for (const WeightSet* ws : m.layers) {
        const cuda::DeviceLayer& l = bound[i].Layer(ws);
        ASSERT_TRUE(l.qkv && l.gate_up) << "layer " << ws->layer.Hex();
        const Hash& q = (*ws)[Role::kQ]->node;
        for (const auto& [h, bws] : base.weight_sets)
          if ((*bws)[Role::kQ]->node == q) {
            EXPECT_EQ(l.qkv.data, bound[0].Layer(bws.get()).qkv.data);
            EXPECT_EQ(l.q.data, bound[0].Layer(bws.get()).q.data);
          }
      }
    }
    // The base again, unfused: nothing new; q/k/v are the standalone tensors
    // inside the fused allocation.
    cuda::DeviceLoadOptions unfused;
    unfused.fuse = false;
    const cuda::ModelBindings again = pool.Add(base, unfused, stream);
    EXPECT_EQ(again.stats().uploaded_bytes, 0u);
    EXPECT_EQ(again.stats().fused_qkv + again.stats().fused_gate_up, 0);
    for (const WeightSet* ws : base.layers) {
      const cuda::DeviceLayer& l = again.Layer(ws);
      const cuda::DeviceLayer& f = bound[0].Layer(ws);
      EXPECT_FALSE(l.qkv);
      EXPECT_EQ(l.q.data, f.qkv.data);
      EXPECT_EQ(l.k.data, static_cast<const char*>(f.qkv.data) + l.q.nbytes());
      EXPECT_EQ(l.up.data, static_cast<const char*>(f.gate_up.data) + l.gate.nbytes());
    }
    EXPECT_EQ(pool.bytes(), Sum(resident));

    // A load that fails (a blob of a new model missing) leaves the pool as it
    // was, and it keeps serving.
    SynthSpec spec;
    spec.arch = "llama";
    spec.preset = "tiny";
    spec.layers = 2;
    spec.seed = 7;  // values of its own: no node in common with org/m
    SynthToHfCache(spec, cache_, "org/other");
    CompileText("other", "models:\n  - model: org/other\nmerge_method: passthrough\n");
    WeightStore meta(*store_, /*host_data=*/false);
    const Model other = AssembleModel(*store_, meta, store_->ResolveRef("other"));
    TensorReader reader(*store_);
    const Hash victim = other.lm_head->node;  // random values: org/other's own
    const Hash q0 = (*other.layers[0])[Role::kQ]->node;
    ASSERT_EQ(pool.Find(victim), nullptr);
    ASSERT_EQ(pool.Find(q0), nullptr);
    ASSERT_EQ(reader.Node(victim).op, TensorNode::Op::kBlob);
    ASSERT_TRUE(fs::remove(store_->BlobPath(reader.Node(victim).blob)));
    EXPECT_THROW(pool.Add(other, {}, stream), Error);
    EXPECT_EQ(pool.bytes(), Sum(resident));
    EXPECT_EQ(pool.tensors(), static_cast<int>(resident.size()));
    EXPECT_EQ(pool.Find(victim), nullptr);
    EXPECT_EQ(pool.Find(q0), nullptr);
    EXPECT_EQ(pool.Add(dus, {}, stream).stats().uploaded_bytes, 0u);
  }
  {
    // Unfused first: a later fused load of the same nodes cannot make them
    // contiguous without a second copy, so it binds them unfused.
    cuda::DeviceWeights pool(*store_);
    cuda::DeviceLoadOptions unfused;
    unfused.fuse = false;
    const cuda::ModelBindings a = pool.Add(base, unfused, stream);
    const cuda::ModelBindings b = pool.Add(dus, {}, stream);
    EXPECT_EQ(b.stats().uploaded_bytes, 0u);
    EXPECT_EQ(b.stats().fused_qkv + b.stats().fused_gate_up, 0);
    for (const WeightSet* ws : dus.layers) {
      EXPECT_FALSE(b.Layer(ws).qkv);
      EXPECT_EQ(b.Layer(ws).q.data, a.Layer(SetOf(base, ws->layer)).q.data);
    }
    EXPECT_EQ(pool.bytes(), Sum(NodeBytes({&base})));
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

// Logits of a short run on `b` (from a reset state): a prompt's every row, a
// decode step's logits and a greedy token.
std::vector<float> Trace(Backend& b, int64_t V) {
  b.Reset();
  std::vector<float> all, last(V);
  b.Forward({3, 1, 4, 1, 5, 9, 2, 6}, last.data(), &all);
  b.Forward({Argmax(last.data(), V)}, last.data(), nullptr);
  all.insert(all.end(), last.begin(), last.end());
  all.push_back(static_cast<float>(b.ForwardArgmax({Argmax(last.data(), V)})));
  return all;
}

// Three backends on one pool: the pool holds the union's distinct bytes once,
// each backend uploads (and reports progress for) only what the pool lacked,
// reports its own variant's distinct bytes as weight_bytes, and gives bit for
// bit the logits of a backend with a private pool. The backends keep the pool
// alive: with the caller's handle and the uploading backend gone, the others
// still run.
TEST_F(CudaWeightPoolTest, BackendsShareOnePool) {
  WeightStore weights(*store_, /*host_data=*/false);  // metadata only, as `strata serve`
  const Model base = AssembleModel(*store_, weights, store_->ResolveRef("base"));
  const Model dus = AssembleModel(*store_, weights, store_->ResolveRef("dus"));
  const Model bx = AssembleModel(*store_, weights, store_->ResolveRef("bx"));
  const std::vector<const Model*> models = {&base, &dus, &bx};
  const int64_t V = base.config.vocab;
  BackendOptions bo;
  bo.max_context = 16;
  std::vector<std::vector<float>> alone;
  for (const Model* m : models) {
    auto b = MakeCudaBackend(*m, bo, *store_);
    EXPECT_EQ(b->stats().weight_bytes_uploaded, b->stats().weight_bytes);
    alone.push_back(Trace(*b, V));
  }

  std::shared_ptr<CudaWeightPool> pool = MakeCudaWeightPool(*store_);
  EXPECT_EQ(CudaWeightPoolBytes(*pool), 0u);
  std::vector<std::unique_ptr<CudaBackend>> shared;
  std::map<Hash, uint64_t> resident;
  for (const Model* m : models) {
    const std::map<Hash, uint64_t> fresh = NewNodes(*m, resident);
    CudaLoadOptions lo;
    std::atomic<uint64_t> done{0};
    uint64_t total = ~uint64_t{0};
    lo.on_start = [&](uint64_t t) { total = t; };
    lo.bytes_done = &done;
    shared.push_back(MakeCudaBackend(*m, bo, *store_, lo, pool));
    resident.merge(NodeBytes({m}));
    const CudaStats st = shared.back()->stats();
    EXPECT_EQ(st.weight_bytes, Sum(NodeBytes({m})));
    EXPECT_EQ(st.weight_bytes_uploaded, Sum(fresh));
    EXPECT_EQ(st.tensors_uploaded, static_cast<int>(fresh.size()));
    EXPECT_EQ(total, Sum(fresh));
    EXPECT_EQ(done.load(), Sum(fresh));
    EXPECT_EQ(CudaWeightPoolBytes(*pool), Sum(resident));
    EXPECT_EQ(CudaWeightPoolTensors(*pool), static_cast<int>(resident.size()));
  }
  EXPECT_EQ(CudaWeightPoolBytes(*pool), Sum(NodeBytes(models)));
  EXPECT_EQ(shared[1]->stats().weight_bytes_uploaded, 0u);
  EXPECT_EQ(shared[1]->stats().weight_bytes_read, 0u);
  EXPECT_GT(shared[2]->stats().weight_bytes_uploaded, 0u);
  EXPECT_LT(shared[2]->stats().weight_bytes_uploaded, shared[2]->stats().weight_bytes);
  for (size_t i = 0; i < models.size(); ++i) {
    EXPECT_EQ(shared[i]->stats().fused_qkv, 4) << i;  // the private pool's layout
    EXPECT_EQ(Trace(*shared[i], V), alone[i]) << "variant " << i << " on the shared pool";
  }

  {
    Store other(tmp_ / "other");
    EXPECT_THROW(MakeCudaBackend(base, bo, other, {}, pool), Error);
  }
  pool.reset();
  shared[0].reset();  // the backend that uploaded the DUS's every weight
  EXPECT_EQ(Trace(*shared[1], V), alone[1]) << "the DUS after the base's backend is gone";
  shared[1].reset();
  EXPECT_EQ(Trace(*shared[2], V), alone[2]) << "block expansion, the last backend on the pool";
}

}  // namespace
}  // namespace strata
