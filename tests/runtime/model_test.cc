// DecodeWeightBytesPerToken on tiny synthetic models compiled into a
// temporary store (base, SOLAR-style DUS, block expansion with and without
// elision, tied embeddings). The expected byte counts are worked out here
// from the exported checkpoints' safetensors headers and tensor bytes, not
// from the Model the function reads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "../compiler/test_util.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/export.h"
#include "strata/compiler/synth.h"
#include "strata/runtime/backend.h"
#include "strata/runtime/model.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using testutil::kDusPlan;
using testutil::ScopedTempDir;

// One tensor of an exported checkpoint: its name, row count, byte size and
// whether every element is zero.
struct FileTensor {
  std::string name;
  int64_t rows = 1;
  uint64_t bytes = 0;
  bool zero = false;
};

// Every tensor of the *.safetensors files in `dir`, parsed by hand: an
// 8-byte little-endian header length, the JSON header, then the data.
std::vector<FileTensor> ReadTensors(const std::string& dir) {
  std::vector<FileTensor> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    const std::string bytes = testutil::ReadText(e.path().string());
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
    const char* data = bytes.data() + 8 + n;
    for (const auto& [name, t] : header.items()) {
      if (name == "__metadata__") continue;
      const uint64_t b = t["data_offsets"][0], end = t["data_offsets"][1];
      FileTensor ft{name, t["shape"].empty() ? 1 : t["shape"][0].get<int64_t>(), end - b, true};
      // +0 or -0 (a scale by 0 keeps the sign): every byte zero but an
      // element's last (little-endian: its sign) byte, which may be 0x80.
      const uint64_t size = t["dtype"] == "F32" ? 4 : 2;
      for (uint64_t i = b; i < end && ft.zero; ++i) ft.zero = (data[i] & ((i - b) % size == size - 1 ? 0x7f : 0xff)) == 0;
      out.push_back(ft);
    }
  }
  return out;
}

// What one decode step reads, by HF tensor name: every logical layer's
// nonzero tensors (with `elide`, nothing of a layer whose o_proj and
// down_proj are all zero), the final norm, lm_head (the embedding table when
// there is none) and one embedding row.
uint64_t ExpectedBytes(const std::vector<FileTensor>& ts, bool elide) {
  static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.*))");
  std::map<int, std::vector<const FileTensor*>> layers;
  uint64_t n = 0;
  const FileTensor *embed = nullptr, *head = nullptr;
  for (const FileTensor& t : ts) {
    std::smatch m;
    if (std::regex_match(t.name, m, kLayer)) layers[std::stoi(m[1])].push_back(&t);
    else if (t.name == "model.embed_tokens.weight") embed = &t;
    else if (t.name == "lm_head.weight") head = &t;
    else if (t.name == "model.norm.weight") n += t.bytes;
    else ADD_FAILURE() << "unexpected tensor " << t.name;
  }
  for (const auto& [i, list] : layers) {
    int zero_outputs = 0;
    for (const FileTensor* t : list)
      if (t->zero && (t->name.ends_with("o_proj.weight") || t->name.ends_with("down_proj.weight"))) ++zero_outputs;
    if (elide && zero_outputs == 2) continue;
    for (const FileTensor* t : list)
      if (!t->zero) n += t->bytes;
  }
  EXPECT_TRUE(embed);
  if (!embed) return 0;
  return n + (head ? head->bytes : embed->bytes) + embed->bytes / embed->rows;
}

std::string WholeModelPlan(const std::string& id) {
  return "models:\n  - model: " + id + "\nmerge_method: passthrough\ndtype: bfloat16\n";
}

class DecodeBytesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = tmp_ / "hf";
    fs::create_directories(cache_);
    env_ = std::make_unique<testutil::ScopedEnv>("HF_HUB_CACHE", cache_);
    store_ = std::make_unique<Store>(tmp_ / "store");
    Synth("org/m", false);
  }

  // A tiny mistral (hidden 64, 4 heads, 2 kv heads, intermediate 128, vocab
  // 256, bf16) with 4 layers, as HF id `id`.
  void Synth(const std::string& id, bool tie) {
    SynthSpec s;
    s.preset = "tiny";
    s.layers = 4;
    s.tie_embeddings = tie;
    SynthToHfCache(s, cache_, id);
  }

  // Compiles `plan` as `name`, returns DecodeWeightBytesPerToken of the
  // variant and the tensors of its export.
  uint64_t Measure(const std::string& name, const std::string& plan, bool elide, std::vector<FileTensor>* exported) {
    CompileOptions o;
    o.name = name;
    if (!store_->GetRef(name)) Compile(*store_, ParsePlan(plan, name + ".yml"), o);
    const std::string dir = tmp_ / ("export-" + name);
    if (!fs::exists(dir)) Export(*store_, name, dir, {});
    *exported = ReadTensors(dir);
    WeightStore weights(*store_, /*host_data=*/false);
    const Model m = AssembleModel(*store_, weights, store_->ResolveRef(name));
    return DecodeWeightBytesPerToken(m, elide);
  }

  ScopedTempDir tmp_;
  std::string cache_;
  std::unique_ptr<testutil::ScopedEnv> env_;
  std::unique_ptr<Store> store_;
};

// Bytes of the tiny mistral's tensors (bf16) from its shapes: per layer two
// norms of 64, q and o 64x64, k and v 32x64, gate/up 128x64, down 64x128.
constexpr uint64_t kLayerBytes = 2 * 64 * 2 + 2 * 64 * 64 * 2 + 2 * 32 * 64 * 2 + 3 * 128 * 64 * 2;
constexpr uint64_t kOutputBytes = 64 * 64 * 2 + 64 * 128 * 2;  // o_proj + down_proj
constexpr uint64_t kHeadBytes = 64 * 2 + 256 * 64 * 2 + 64 * 2;  // final norm, lm_head, one embedding row

TEST_F(DecodeBytesTest, BaseCountsEveryLayerTheHeadAndOneEmbeddingRow) {
  std::vector<FileTensor> ts;
  const uint64_t got = Measure("base", WholeModelPlan("org/m"), true, &ts);
  EXPECT_EQ(got, ExpectedBytes(ts, true));
  EXPECT_EQ(got, 4 * kLayerBytes + kHeadBytes);
  EXPECT_EQ(Measure("base", "", false, &ts), got);  // nothing to elide
}

TEST_F(DecodeBytesTest, DusCountsRepeatedLayersAtEveryDepth) {
  std::vector<FileTensor> ts;
  const uint64_t got = Measure("dus", kDusPlan, true, &ts);  // layers 0 1 2 1 2 3
  EXPECT_EQ(got, ExpectedBytes(ts, true));
  EXPECT_EQ(got, 6 * kLayerBytes + kHeadBytes);
}

TEST_F(DecodeBytesTest, BlockExpansionElidedEqualsTheBase) {
  std::vector<FileTensor> base, ts;
  const uint64_t b = Measure("base", WholeModelPlan("org/m"), true, &base);
  const uint64_t elided = Measure("bexp", testutil::kBlockExpansionPlan, true, &ts);
  EXPECT_EQ(elided, ExpectedBytes(ts, true));
  EXPECT_EQ(elided, b);
  // Not elided: the appended layers count all but their zero o_proj and down_proj.
  const uint64_t full = Measure("bexp", "", false, &ts);
  EXPECT_EQ(full, ExpectedBytes(ts, false));
  EXPECT_EQ(full, b + 2 * (kLayerBytes - kOutputBytes));
}

TEST_F(DecodeBytesTest, TiedEmbeddingsCountTheTableOnceAsTheHeadPlusOneRow) {
  Synth("org/t", true);
  std::vector<FileTensor> ts;
  const uint64_t got = Measure("tied", WholeModelPlan("org/t"), true, &ts);
  for (const FileTensor& t : ts) ASSERT_NE(t.name, "lm_head.weight");
  EXPECT_EQ(got, ExpectedBytes(ts, true));
  EXPECT_EQ(got, 4 * kLayerBytes + kHeadBytes);
}

// The CPU backend's KV cache follows the sequence: sized for 2^40 positions
// up front it would need petabytes (`strata run -n 100000000` reserved 10 GB
// before its first token); its paged blocks are taken as the sequence grows.
// Decoding one token at a time across many blocks gives the logits of one
// prefill of the same tokens.
using CpuKvCacheTest = DecodeBytesTest;

TEST_F(CpuKvCacheTest, GrowsWithTheSequenceAndKeepsWhatItHolds) {
  CompileOptions o;
  o.name = "base";
  Compile(*store_, ParsePlan(WholeModelPlan("org/m"), "base.yml"), o);
  WeightStore weights(*store_, /*host_data=*/true);
  const Model m = AssembleModel(*store_, weights, store_->ResolveRef("base"));
  std::vector<int> tokens(150);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 37 + 11) % 256);

  BackendOptions huge;
  huge.max_context = int64_t{1} << 40;
  std::unique_ptr<Backend> stepwise = MakeCpuBackend(m, huge);
  std::vector<float> a(256), b(256);
  stepwise->Forward({tokens.begin(), tokens.begin() + 3}, a.data(), nullptr);
  for (size_t i = 3; i < tokens.size(); ++i) stepwise->Forward({tokens[i]}, a.data(), nullptr);
  EXPECT_EQ(stepwise->position(), 150);

  MakeCpuBackend(m, {})->Forward(tokens, b.data(), nullptr);
  float max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    max_abs = std::max(max_abs, std::abs(b[i]));
  }
  EXPECT_GT(max_abs, 0);
  EXPECT_LT(max_diff, 1e-4f * std::max(1.0f, max_abs));
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

// A flipped byte in one blob: loading with verification (the default) fails
// naming the blob, for the host path (CPU) and the metadata path (CUDA reads
// the blobs itself); without it the load goes through.
using VerifiedLoadTest = DecodeBytesTest;

TEST_F(VerifiedLoadTest, CorruptBlobFailsTheLoadNamingIt) {
  CompileOptions o;
  o.name = "base";
  Compile(*store_, ParsePlan(WholeModelPlan("org/m"), "base.yml"), o);
  std::string blob;
  for (const auto& e : fs::recursive_directory_iterator(store_->root() + "/blobs"))
    if (e.is_regular_file() && e.file_size() > 8192) blob = e.path().string();
  ASSERT_FALSE(blob.empty());
  fs::permissions(blob, fs::perms::owner_write, fs::perm_options::add);
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    char c = 0;
    f.seekg(100);
    f.get(c);
    f.seekp(100);
    f.put(static_cast<char>(c ^ 1));
  }
  const std::string name = fs::path(blob).filename().string();
  for (bool host : {true, false}) {
    SCOPED_TRACE(host ? "host data" : "metadata only");
    WeightStore checked(*store_, host);
    try {
      AssembleModel(*store_, checked, store_->ResolveRef("base"));
      ADD_FAILURE() << "a corrupt blob was loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blob " + name + " is corrupt"), std::string::npos) << e.what();
    }
    WeightStore unchecked(*store_, host, /*verify=*/false);
    EXPECT_NO_THROW(AssembleModel(*store_, unchecked, store_->ResolveRef("base")));
  }
}

}  // namespace
}  // namespace strata
