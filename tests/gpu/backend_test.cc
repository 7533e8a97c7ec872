// Whole-model checks of the CUDA backend against the CPU backend on tiny
// synthetic models compiled into a temporary store: a base model, SOLAR-style
// DUS, block expansion (with and without elision), Qwen2 (biases), tied
// embeddings, F32 weights and dtype/scale chains. Logits: rel err <= 2e-2
// (max |gpu - cpu| / max |cpu|); greedy tokens identical wherever the CPU's
// top-2 margin exceeds that tolerance. Also: weights resident once per
// distinct tensor node, bit for bit what the host materializes.
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
    for (const HostTensor* t : {ws->attn_norm, ws->q, ws->k, ws->v, ws->o, ws->q_bias, ws->k_bias, ws->v_bias,
                                ws->ffn_norm, ws->gate, ws->up, ws->down})
      if (t) out[t->node] = t;
  for (const HostTensor* t : {m.embed, m.final_norm, m.lm_head}) out[t->node] = t;
  return out;
}

uint64_t Bytes(const HostTensor* t) { return t->numel() * DTypeSize(t->dtype); }

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
             std::optional<int> layers = std::nullopt) {
    SynthSpec s;
    s.arch = arch;
    s.preset = "tiny";
    s.dtype = dt;
    s.tie_embeddings = tie;
    s.layers = layers;
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
      for (const HostTensor* t : {ws->attn_norm, ws->q, ws->k, ws->v, ws->o, ws->q_bias, ws->k_bias, ws->v_bias,
                                  ws->ffn_norm, ws->gate, ws->up, ws->down})
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
        cuda::DeviceWeights dw(*store_, m, o, stream);
        EXPECT_EQ(done.load(), total) << variant;
        uint64_t sum = 0;
        for (const auto& [h, t] : DistinctTensors(m)) {
          const cuda::DeviceTensor* d = dw.Find(h);
          ASSERT_NE(d, nullptr) << variant << " " << h.Hex();
          std::vector<uint8_t> got(Bytes(t));
          CUDA_CHECK(cudaMemcpy(got.data(), d->data, got.size(), cudaMemcpyDeviceToHost));
          EXPECT_EQ(0, std::memcmp(got.data(), t->data, got.size())) << variant << " tensor node " << h.Hex();
          sum += Bytes(t);
        }
        EXPECT_EQ(dw.stats().tensor_bytes, sum);
        EXPECT_LE(dw.stats().pinned_bytes, 2u * 4096u);
        if (!fuse) {
          EXPECT_EQ(dw.stats().fused_qkv + dw.stats().fused_gate_up, 0);
        }
      }
      CUDA_CHECK(cudaStreamDestroy(stream));
    }
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

}  // namespace
}  // namespace strata
