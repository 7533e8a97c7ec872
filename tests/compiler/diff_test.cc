// Tests of strata diff and of the provenance/diff pictures: every pair of
// example variants over tiny synthetic models against an alignment worked out
// here from the plans' YAML alone; per-tensor numbers against values computed
// from the source bytes; SVG/HTML structure.
#include "strata/compiler/diff.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <tuple>

#include "strata/compiler/compile.h"
#include "strata/compiler/inspect.h"
#include "strata/compiler/render.h"
#include "strata/compiler/synth.h"
#include "strata/formats/safetensors.h"
#include "strata/formats/variant.h"
#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testutil::ScopedTempDir;

const std::vector<std::string> kRoles = {
    "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.up_proj.weight",      "mlp.gate_proj.weight",    "mlp.down_proj.weight"};

// Bytes of one tiny layer (bf16): two norms of 64, q/o 64x64, k/v 32x64, gate/up/down 128x64.
constexpr uint64_t kLayerBytes = 2 * 64 * 2 + 2 * 64 * 64 * 2 + 2 * 32 * 64 * 2 + 3 * 128 * 64 * 2;

// ---- The expected alignment, from the plans alone ---------------------------

// mergekit's filter rule, simply: a scalar applies to all; in a list the first
// entry without a filter, or whose filter is a substring of the name, applies.
double ScaleFor(const YAML::Node& scale, const std::string& tensor) {
  if (!scale) return 1.0;
  if (scale.IsScalar()) return scale.as<double>();
  for (const YAML::Node& e : scale)
    if (!e["filter"] || tensor.find(e["filter"].as<std::string>()) != std::string::npos) return e["value"].as<double>();
  return 1.0;
}

struct PlanLayer {
  std::string model;
  int layer = 0;
  std::string identity;  // equal identities <=> equal weights
};

// Each output layer of a plan: its model, source layer, and an identity made of
// (model, layer, dtype the tensors end up in, every scale that is not 1).
std::vector<PlanLayer> LayersFromYaml(const std::string& path) {
  YAML::Node root = YAML::LoadFile(path);
  const std::string dtype = root["dtype"] ? root["dtype"].as<std::string>() : "bfloat16";  // synth writes bf16
  std::vector<PlanLayer> out;
  for (const YAML::Node& slice : root["slices"]) {
    const YAML::Node src = slice["sources"][0];
    const std::string model = src["model"].as<std::string>();
    const int b = src["layer_range"][0].as<int>(), e = src["layer_range"][1].as<int>();
    const YAML::Node scale = src["parameters"] ? src["parameters"]["scale"] : YAML::Node();
    for (int l = b; l < e; ++l) {
      std::string id = model + "#" + std::to_string(l) + "#" + dtype;
      for (const std::string& role : kRoles) {
        double f = ScaleFor(scale, "model.layers." + std::to_string(l) + "." + role);
        if (f != 1.0) id += "#" + role + "*" + std::to_string(f);
      }
      out.push_back({model, l, id});
    }
  }
  return out;
}

using Row = std::tuple<std::string, int, int>;  // op, A index or -1, B index or -1

// The documented canonical edit script, written independently of diff.cc: a
// memoized LCS length over suffixes, the same front-to-back walk, then every
// gap's removed/inserted paired in order as changed.
std::vector<Row> ExpectedRows(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::map<std::pair<size_t, size_t>, int> memo;
  std::function<int(size_t, size_t)> lcs = [&](size_t i, size_t j) -> int {
    if (i == a.size() || j == b.size()) return 0;
    auto key = std::make_pair(i, j);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
    int v = a[i] == b[j] ? 1 + lcs(i + 1, j + 1) : std::max(lcs(i + 1, j), lcs(i, j + 1));
    return memo[key] = v;
  };
  std::vector<Row> rows;
  std::vector<int> gap_a, gap_b;
  auto flush = [&] {
    size_t k = 0;
    for (; k < gap_a.size() && k < gap_b.size(); ++k) rows.emplace_back("changed", gap_a[k], gap_b[k]);
    for (size_t r = k; r < gap_a.size(); ++r) rows.emplace_back("removed", gap_a[r], -1);
    for (size_t r = k; r < gap_b.size(); ++r) rows.emplace_back("inserted", -1, gap_b[r]);
    gap_a.clear(), gap_b.clear();
  };
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      flush();
      rows.emplace_back("kept", static_cast<int>(i++), static_cast<int>(j++));
    } else if (j == b.size() || (i < a.size() && lcs(i + 1, j) >= lcs(i, j + 1))) {
      gap_a.push_back(static_cast<int>(i++));
    } else {
      gap_b.push_back(static_cast<int>(j++));
    }
  }
  flush();
  return rows;
}

std::vector<Row> RowsOf(const Json& diff) {
  std::vector<Row> rows;
  for (const Json& r : diff["rows"])
    rows.emplace_back(r["op"], r["a"].is_null() ? -1 : r["a"]["index"].get<int>(),
                      r["b"].is_null() ? -1 : r["b"]["index"].get<int>());
  return rows;
}

// ---- A store with every example plan compiled over tiny stand-ins -----------

class ExampleStore : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new ScopedTempDir();
    const std::string cache = *tmp_ / "hf";
    fs::create_directories(cache);
    testutil::ScopedEnv env("HF_HUB_CACHE", cache);
    store_ = new Store(*tmp_ / "store");
    plans_ = new std::map<std::string, std::string>();
    for (const auto& e : fs::directory_iterator(std::string(STRATA_SOURCE_DIR) + "/examples"))
      if (e.path().extension() == ".yml") (*plans_)[e.path().stem().string()] = e.path().string();
    // A DUS over the model block-expansion-40 uses, so that pair has kept layers.
    std::string text = testutil::ReadText((*plans_)["solar-dus"]);
    for (size_t p; (p = text.find("mistralai/Mistral-7B-v0.1")) != std::string::npos;)
      text.replace(p, std::strlen("mistralai/Mistral-7B-v0.1"), "openchat/openchat-3.5-0106");
    testutil::WriteText(*tmp_ / "solar-openchat.yml", text);
    (*plans_)["solar-openchat"] = *tmp_ / "solar-openchat.yml";

    std::set<std::string> ids;
    for (const auto& [name, path] : *plans_)
      for (const std::string& id : LoadPlan(path).ReferencedModels()) ids.insert(id);
    uint64_t seed = 1;
    for (const std::string& id : ids) {
      SynthSpec s;  // tiny: 32 layers, hidden 64, bf16; every model distinct
      s.arch = id.find("Llama") != std::string::npos ? "llama" : "mistral";
      s.seed = seed++;
      SynthToHfCache(s, cache, id);
    }
    for (const auto& [name, path] : *plans_) {
      CompileOptions o;
      o.name = name;
      Compile(*store_, LoadPlan(path), o);
    }
  }
  static void TearDownTestSuite() {
    delete store_;
    delete plans_;
    delete tmp_;
  }

  static Json Diff(const std::string& a, const std::string& b, const DiffOptions& opts = {}) {
    return DiffVariants(*store_, store_->ResolveRef(a), a, store_->ResolveRef(b), b, opts);
  }

  static ScopedTempDir* tmp_;
  static Store* store_;
  static std::map<std::string, std::string>* plans_;
};
ScopedTempDir* ExampleStore::tmp_ = nullptr;
Store* ExampleStore::store_ = nullptr;
std::map<std::string, std::string>* ExampleStore::plans_ = nullptr;

// The checks over the example store. Compiling the examples costs seconds of
// fsyncs and ctest runs every TEST in a process of its own, so the checks are
// grouped into two tests that share one store.
class ExampleChecks : public ExampleStore {
 public:
  static void EveryPairMatchesTheAlignmentOfThePlans();
  static void HandCountedPairs();
  static void SharedBytesAreDistinctBlobBytes();
  static void ChangedLayersAcrossModelsHaveNumbersAndConfigKeys();
  static void ProvenanceSvgOfBlockExpansion();
  static void ProvenanceSvgMarksRepeatsAndUniformCasts();
  static void DiffSvgAndHtml();
};

void ExampleChecks::EveryPairMatchesTheAlignmentOfThePlans() {
  ASSERT_EQ(plans_->size(), 6u);
  for (const auto& [na, pa] : *plans_) {
    for (const auto& [nb, pb] : *plans_) {
      SCOPED_TRACE(na + " vs " + nb);
      const std::vector<PlanLayer> la = LayersFromYaml(pa), lb = LayersFromYaml(pb);
      std::vector<std::string> ia, ib;
      for (const PlanLayer& l : la) ia.push_back(l.identity);
      for (const PlanLayer& l : lb) ib.push_back(l.identity);
      Json d = Diff(na, nb, DiffOptions{.tensor_stats = na < nb});  // numbers once per pair
      EXPECT_EQ(RowsOf(d), ExpectedRows(ia, ib));

      std::map<std::string, int> counts;
      for (const Json& r : d["rows"]) {
        ++counts[r["op"]];
        // Provenance of every row side is the plan's model and layer.
        for (const auto& [side, layers] : {std::pair{"a", &la}, std::pair{"b", &lb}}) {
          if (r[side].is_null()) continue;
          const PlanLayer& p = (*layers)[r[side]["index"].get<size_t>()];
          EXPECT_EQ(r[side]["source_model"], p.model);
          EXPECT_EQ(r[side]["source_layer"], p.layer);
        }
        if (r["op"] == "kept") {
          EXPECT_EQ(r["a"]["layer"], r["b"]["layer"]);
          EXPECT_EQ(r["shared_bytes"], kLayerBytes);
        }
      }
      for (const char* op : {"kept", "changed", "inserted", "removed"}) EXPECT_EQ(d["counts"][op], counts[op]) << op;
      EXPECT_EQ(d["a"]["layers"], la.size());
      EXPECT_EQ(d["b"]["layers"], lb.size());
      if (na == nb) {
        EXPECT_EQ(d["bytes"]["shared"], d["bytes"]["a_distinct"]);
        EXPECT_TRUE(d["config"].empty());
      }
    }
  }
}

void ExampleChecks::HandCountedPairs() {
  // [0,24)+[8,32) against [0,32)+8 zeroed copies of 31, one model: A's second
  // 8..23 are removed, 24..31 kept, the zeroed copies inserted.
  Json d = Diff("solar-openchat", "block-expansion-40");
  EXPECT_EQ(d["counts"], (Json{{"kept", 32}, {"changed", 0}, {"inserted", 8}, {"removed", 16}}));
  // Different source models share nothing: 40 changed, then 8 removed.
  d = Diff("solar-dus", "block-expansion-40");
  EXPECT_EQ(d["counts"], (Json{{"kept", 0}, {"changed", 40}, {"inserted", 0}, {"removed", 8}}));
  EXPECT_EQ(d["bytes"]["shared"], 0);
  // Reversed, removed becomes inserted.
  d = Diff("block-expansion-40", "solar-openchat");
  EXPECT_EQ(d["counts"], (Json{{"kept", 32}, {"changed", 0}, {"inserted", 16}, {"removed", 8}}));
}

void ExampleChecks::SharedBytesAreDistinctBlobBytes() {
  // solar-openchat uses source layers 0..31 of openchat, block-expansion-40 the
  // same 32 layers (its zeroed copies are scale nodes over layer 31's blobs)
  // and the same embeddings, norm and lm_head: every blob is shared.
  Json d = Diff("solar-openchat", "block-expansion-40");
  const uint64_t embed = 256 * 64 * 2, norm = 64 * 2;
  EXPECT_EQ(d["bytes"]["a_distinct"], 32 * kLayerBytes + 2 * embed + norm);
  EXPECT_EQ(d["bytes"]["b_distinct"], 32 * kLayerBytes + 2 * embed + norm);
  EXPECT_EQ(d["bytes"]["shared"], 32 * kLayerBytes + 2 * embed + norm);
  for (const Json& t : d["tensors"]) EXPECT_EQ(t["op"], "identical") << t.dump();
}

void ExampleChecks::ChangedLayersAcrossModelsHaveNumbersAndConfigKeys() {
  Json d = Diff("solar-dus", "idus-8layer");
  EXPECT_EQ(d["counts"]["changed"], 48);
  const Json& row = d["rows"][0];
  ASSERT_EQ(row["tensors"].size(), kRoles.size());
  for (const Json& t : row["tensors"]) {
    EXPECT_EQ(t["op"], "changed") << t.dump();
    EXPECT_EQ(t["a_dtype"], "BF16");
    EXPECT_EQ(t["b_dtype"], "F16");
    ASSERT_TRUE(t["rel_l2"].is_number()) << t.dump();
    ASSERT_TRUE(t["cosine"].is_number()) << t.dump();
    EXPECT_GT(t["max_abs_delta"].get<double>(), 0);
    EXPECT_LE(std::fabs(t["cosine"].get<double>()), 1.0 + 1e-12);
  }
  std::map<std::string, Json> cfg;
  for (const Json& c : d["config"]) cfg[c["key"]] = c;
  ASSERT_TRUE(cfg.count("torch_dtype"));
  EXPECT_EQ(cfg["torch_dtype"]["a"], "bfloat16");
  EXPECT_EQ(cfg["torch_dtype"]["b"], "float16");
  ASSERT_TRUE(cfg.count("architectures"));
  EXPECT_EQ(cfg["architectures"]["b"], Json::array({"LlamaForCausalLM"}));
  EXPECT_FALSE(cfg.count("num_hidden_layers"));  // 48 both
}

// ---- Per-tensor numbers on a hand-made case --------------------------------

class NumbersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(tmp_ / "hf");
    env_ = std::make_unique<testutil::ScopedEnv>("HF_HUB_CACHE", tmp_ / "hf");
    store_ = std::make_unique<Store>(tmp_ / "store");
    SynthSpec s;
    s.layers = 4;
    dir_ = SynthToHfCache(s, tmp_ / "hf", "org/m").dir;
  }
  Hash CompileText(const std::string& name, const std::string& text) {
    testutil::WriteText(tmp_ / (name + ".yml"), text);
    return Compile(*store_, LoadPlan(tmp_ / (name + ".yml")), {}).variant;
  }
  ScopedTempDir tmp_;
  std::unique_ptr<testutil::ScopedEnv> env_;
  std::unique_ptr<Store> store_;
  std::string dir_;
};

const char* kFull = "slices:\n  - sources:\n    - model: org/m\n      layer_range: [0, 4]\nmerge_method: passthrough\n";
const char* kHalfO =
    "slices:\n  - sources:\n    - model: org/m\n      layer_range: [0, 4]\n      parameters:\n        scale:\n"
    "          - filter: o_proj\n            value: 0.5\n          - value: 1.0\nmerge_method: passthrough\n";

float Bf16At(const SafetensorsFile& f, const TensorInfo& t, size_t i) {
  uint16_t b;
  std::memcpy(&b, static_cast<const uint8_t*>(f.Data(t)) + 2 * i, 2);
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &x, 4);
  return v;
}

TEST_F(NumbersTest, HalfScaleOnOneTensor) {
  Hash full = CompileText("full", kFull), half = CompileText("half", kHalfO);
  SafetensorsFile src(dir_ + "/model.safetensors");
  for (uint64_t chunk : {uint64_t{1} << 20, uint64_t{1000}}) {  // one read, and reads that do not divide
    SCOPED_TRACE(chunk);
    DiffOptions opts;
    opts.chunk_elements = chunk;
    Json d = DiffVariants(*store_, full, "full", half, "half", opts);
    EXPECT_EQ(d["counts"], (Json{{"kept", 0}, {"changed", 4}, {"inserted", 0}, {"removed", 0}}));
    EXPECT_TRUE(d["config"].empty());
    for (const Json& row : d["rows"]) {
      const int layer = row["a"]["source_layer"];
      // o_proj is a scale node over the same blob: every blob is shared.
      EXPECT_EQ(row["shared_bytes"], kLayerBytes);
      for (const Json& t : row["tensors"]) {
        if (t["role"] != "self_attn.o_proj.weight") {
          EXPECT_EQ(t["op"], "identical") << t.dump();
          continue;
        }
        ASSERT_EQ(t["op"], "changed");
        const TensorInfo* s = src.Find("model.layers." + std::to_string(layer) + ".self_attn.o_proj.weight");
        ASSERT_NE(s, nullptr);
        double max_abs = 0;
        for (size_t i = 0; i < s->nbytes() / 2; ++i) max_abs = std::max(max_abs, std::fabs(double{Bf16At(src, *s, i)}));
        // x * 0.5 is exact in bf16, so the delta is exactly x / 2.
        EXPECT_EQ(t["max_abs_delta"].get<double>(), max_abs / 2);
        EXPECT_NEAR(t["rel_l2"].get<double>(), 0.5, 1e-12);
        EXPECT_NEAR(t["cosine"].get<double>(), 1.0, 1e-12);
      }
    }
    for (const Json& t : d["tensors"]) EXPECT_EQ(t["op"], "identical");
  }
}

TEST_F(NumbersTest, ZeroAndEqualTensors) {
  Hash full = CompileText("full", kFull);
  Variant v = LoadVariant(*store_, full);
  auto roles = LoadLayer(*store_, v.layers[0].layer);
  const Hash& q = roles.at("self_attn.q_proj.weight");
  Json same = CompareTensors(*store_, q, q, {});
  EXPECT_EQ(same["max_abs_delta"], 0.0);
  EXPECT_EQ(same["rel_l2"], 0.0);
  EXPECT_NEAR(same["cosine"].get<double>(), 1.0, 1e-12);
  // A zeroed copy: rel L2 1, no cosine (its norm is 0).
  std::string zero_text = std::string(kFull) + "parameters:\n  scale: 0.0\n";
  Hash zero = CompileText("zero", zero_text);
  auto zroles = LoadLayer(*store_, LoadVariant(*store_, zero).layers[0].layer);
  Json z = CompareTensors(*store_, q, zroles.at("self_attn.q_proj.weight"), {});
  EXPECT_NEAR(z["rel_l2"].get<double>(), 1.0, 1e-12);
  EXPECT_TRUE(z["cosine"].is_null());
  Json zz = CompareTensors(*store_, zroles.at("self_attn.q_proj.weight"), q, {});
  EXPECT_TRUE(zz["rel_l2"].is_null());  // ||a|| = 0 and a != b: undefined
}

TEST(AlignSequences, CanonicalScripts) {
  auto ops = [](const std::vector<std::string>& a, const std::vector<std::string>& b) {
    std::string s;
    for (const EditStep& e : AlignSequences(a, b)) s += std::string(EditOpName(e.op)).substr(0, 1);
    return s;
  };
  EXPECT_EQ(ops({"x", "y", "z"}, {"x", "y", "z"}), "kkk");
  EXPECT_EQ(ops({"x", "z"}, {"x", "y", "z"}), "kik");
  EXPECT_EQ(ops({"x", "y", "z"}, {"x", "z"}), "krk");
  EXPECT_EQ(ops({"x", "y", "z"}, {"x", "w", "z"}), "kck");
  EXPECT_EQ(ops({"x", "y", "y2", "z"}, {"x", "w", "z"}), "kcrk");
  EXPECT_EQ(ops({}, {"x"}), "i");
  EXPECT_EQ(ops({"x"}, {}), "r");
  EXPECT_EQ(ops({}, {}), "");
  // Ties: A's head goes first, so "ab" vs "ba" keeps b.
  std::vector<EditStep> s = AlignSequences({"a", "b"}, {"b", "a"});
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].op, EditStep::Op::kRemoved);
  EXPECT_EQ(s[1].op, EditStep::Op::kKept);
  EXPECT_EQ(s[1].a, 1);
  EXPECT_EQ(s[1].b, 0);
  EXPECT_EQ(s[2].op, EditStep::Op::kInserted);
}

// ---- Pictures ---------------------------------------------------------------

size_t Count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// XML-ish structure: every tag closed in order, attribute quotes balanced, no
// bare '&' or '<' in text. Returns "" when fine, else what is wrong.
std::string CheckTags(const std::string& doc) {
  std::vector<std::string> open;
  size_t i = 0;
  while (i < doc.size()) {
    if (doc[i] == '&') {
      size_t semi = doc.find(';', i);
      if (semi == std::string::npos || semi - i > 8) return "bare & at " + std::to_string(i);
      i = semi + 1;
      continue;
    }
    if (doc[i] == '>') return "bare > at " + std::to_string(i);
    if (doc[i] != '<') {
      ++i;
      continue;
    }
    size_t end = i + 1;
    bool quoted = false;
    while (end < doc.size() && (quoted || doc[end] != '>')) {
      if (doc[end] == '"') quoted = !quoted;
      if (!quoted && doc[end] == '<') return "'<' inside a tag at " + std::to_string(end);
      ++end;
    }
    if (end == doc.size()) return "unterminated tag at " + std::to_string(i);
    std::string tag = doc.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.rfind("!", 0) == 0) continue;  // <!DOCTYPE html>
    if (tag.back() == '/') continue;       // self-closing
    std::string name = tag.substr(tag[0] == '/' ? 1 : 0);
    name = name.substr(0, name.find_first_of(" \n"));
    if (tag[0] != '/') {
      open.push_back(name);
    } else {
      if (open.empty() || open.back() != name)
        return "</" + name + "> closes <" + (open.empty() ? "nothing" : open.back()) + ">";
      open.pop_back();
    }
  }
  return open.empty() ? "" : "<" + open.back() + "> never closed";
}

// The stroke colors of the <line class="prov"> elements, in order.
std::vector<std::string> ProvColors(const std::string& svg) {
  std::vector<std::string> out;
  for (size_t p = svg.find("<line class=\"prov\""); p != std::string::npos; p = svg.find("<line class=\"prov\"", p + 1)) {
    size_t s = svg.find("stroke=\"", p) + 8;
    out.push_back(svg.substr(s, svg.find('"', s) - s));
  }
  return out;
}

void ExampleChecks::ProvenanceSvgOfBlockExpansion() {
  Json show = ShowVariant(*store_, "block-expansion-40");
  std::string svg = ProvenanceSvg(show);
  EXPECT_EQ(CheckTags(svg), "");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(Count(svg, "<line class=\"prov\""), 40u);  // one per output layer
  EXPECT_EQ(Count(svg, "class=\"out\""), 40u);
  // One model: one color for every line, and a legend entry in it.
  std::set<std::string> colors;
  for (const std::string& c : ProvColors(svg)) colors.insert(c);
  ASSERT_EQ(colors.size(), 1u);
  EXPECT_THAT(svg, HasSubstr("class=\"legend-model\""));
  EXPECT_EQ(Count(svg, "openchat/openchat-3.5-0106  (40 output layers)"), 1u);
  // The 8 zeroed copies: a zero badge each, dashed lines, and one weight set used 8 times.
  EXPECT_EQ(Count(svg, "class=\"badge zero\""), 8u);
  EXPECT_EQ(Count(svg, ">o,down=0</text>"), 8u);
  EXPECT_EQ(Count(svg, "stroke-dasharray=\"5 3\""), 8u);
  EXPECT_EQ(Count(svg, ">#1 ×8</text>"), 8u);
  EXPECT_EQ(Count(svg, "class=\"repeat\""), 8u);
}

void ExampleChecks::ProvenanceSvgMarksRepeatsAndUniformCasts() {
  // solar: source layers 8..23 appear twice: 16 weight sets used twice.
  std::string svg = ProvenanceSvg(ShowVariant(*store_, "solar-dus"));
  EXPECT_EQ(CheckTags(svg), "");
  EXPECT_EQ(Count(svg, "<line class=\"prov\""), 48u);
  EXPECT_EQ(Count(svg, "class=\"repeat\""), 32u);
  for (int g = 1; g <= 16; ++g) EXPECT_EQ(Count(svg, ">#" + std::to_string(g) + " ×2</text>"), 2u) << g;
  EXPECT_EQ(Count(svg, "class=\"badge"), 0u);  // nothing scaled or cast
  // idus: every tensor cast bf16 -> f16 is said once, not on 48 layers.
  svg = ProvenanceSvg(ShowVariant(*store_, "idus-1layer"));
  EXPECT_THAT(svg, HasSubstr("every tensor cast BF16→F16"));
  EXPECT_EQ(Count(svg, "class=\"badge"), 0u);
}

Json TwoModelShow() {
  // Hand-made ShowVariant JSON: two models (one with XML-special characters),
  // a scaled tensor, a cast that is not uniform.
  auto layer = [](int i, const std::string& model, int src, const std::string& hash, Json transforms) {
    return Json{{"index", i},         {"layer", hash},         {"source_model", model}, {"source_layer", src},
                {"slice", 0},         {"transforms", transforms}, {"same_as", Json::array()},
                {"same_as_count", 0}};
  };
  Json scaled = Json::array({{{"tensor", "self_attn.q_proj.weight"},
                              {"ops", Json::array({{{"op", "scale"}, {"dtype", "BF16"}, {"factor", 0.5}},
                                                   {{"op", "blob"}, {"dtype", "BF16"}}})}}});
  Json cast = Json::array({{{"tensor", "mlp.up_proj.weight"},
                            {"ops", Json::array({{{"op", "cast"}, {"dtype", "F16"}},
                                                 {{"op", "blob"}, {"dtype", "BF16"}}})}}});
  std::string h1(32, '1'), h2(32, '2'), h3(32, '3');
  return Json{{"name", "mix"},
              {"architecture", "MistralForCausalLM"},
              {"node", std::string(32, 'f')},
              {"layers", Json::array({layer(0, "org/a", 0, h1, Json::array()), layer(1, "x&y/<b>", 3, h2, scaled),
                                      layer(2, "org/a", 1, h3, cast), layer(3, "org/a", 0, h1, Json::array())})}};
}

TEST(Render, ColorsPerModelBadgesAndEscaping) {
  Json show = TwoModelShow();
  std::string svg = ProvenanceSvg(show);
  EXPECT_EQ(CheckTags(svg), "");
  std::vector<std::string> colors = ProvColors(svg);
  ASSERT_EQ(colors.size(), 4u);
  EXPECT_EQ(colors[0], colors[2]);
  EXPECT_EQ(colors[0], colors[3]);
  EXPECT_NE(colors[0], colors[1]);
  EXPECT_THAT(svg, HasSubstr("x&amp;y/&lt;b&gt;"));
  EXPECT_THAT(svg, Not(HasSubstr("<b>")));
  EXPECT_THAT(svg, HasSubstr(">q×0.5</text>"));
  EXPECT_THAT(svg, HasSubstr(">up→F16</text>"));
  EXPECT_EQ(Count(svg, ">#1 ×2</text>"), 2u);  // layers 0 and 3
  EXPECT_EQ(Count(svg, "class=\"badge zero\""), 0u);

  std::string html = ProvenanceHtml(show);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(CheckTags(html), "");
  EXPECT_THAT(html, HasSubstr("<svg"));
  // Self-contained: no scripts, no external resources.
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("href=")));
  EXPECT_EQ(Count(html, "http"), 1u);  // the SVG namespace only
}

TEST(Render, BadgesAndShortRoles) {
  EXPECT_EQ(ShortRole("self_attn.o_proj.weight"), "o");
  EXPECT_EQ(ShortRole("mlp.down_proj.weight"), "down");
  EXPECT_EQ(ShortRole("self_attn.q_proj.bias"), "q.b");
  EXPECT_EQ(ShortRole("input_layernorm.weight"), "ln_in");
  Json zero_ops = Json::array({{{"op", "scale"}, {"dtype", "BF16"}, {"factor", 0.0}}, {{"op", "blob"}, {"dtype", "BF16"}}});
  Json t = Json::array({{{"tensor", "self_attn.o_proj.weight"}, {"ops", zero_ops}},
                        {{"tensor", "mlp.down_proj.weight"}, {"ops", zero_ops}}});
  EXPECT_EQ(TransformBadge(t, false), "o,down=0");
  std::swap(t[0], t[1]);  // ShowVariant lists roles alphabetically: down first
  EXPECT_EQ(TransformBadge(t, false), "o,down=0");
  EXPECT_EQ(TransformBadge(Json::array(), false), "");
}

void ExampleChecks::DiffSvgAndHtml() {
  Json d = Diff("solar-openchat", "block-expansion-40");
  std::string svg = DiffSvg(d);
  EXPECT_EQ(CheckTags(svg), "");
  EXPECT_EQ(Count(svg, "<line class=\"kept\""), 32u);
  EXPECT_EQ(Count(svg, "<line class=\"changed\""), 0u);
  EXPECT_EQ(Count(svg, "class=\"removed\""), 16u);
  EXPECT_EQ(Count(svg, "class=\"inserted\""), 8u);
  EXPECT_EQ(Count(svg, "class=\"kept\""), 32u + 2 * 32u);  // lines, and a box on each side
  // A's repeated 8..23 have the same weights as B's 8..23: joined, dotted.
  EXPECT_EQ(Count(svg, "<line class=\"same\""), 16u);
  // B's zeroed copies of layer 31 carry their mark in the diff too.
  EXPECT_EQ(Count(svg, "class=\"badge zero\""), 8u);
  EXPECT_EQ(Count(svg, ">o,down=0</text>"), 8u);

  d = Diff("solar-dus", "idus-8layer");
  svg = DiffSvg(d);
  EXPECT_EQ(Count(svg, "<line class=\"changed\""), 48u);
  std::string html = DiffHtml(d);
  EXPECT_EQ(CheckTags(html), "");
  EXPECT_THAT(html, HasSubstr("torch_dtype"));
  EXPECT_THAT(html, HasSubstr("<tr class=\"changed\">"));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
}

TEST_F(ExampleStore, DiffsOfExampleVariants) {
  for (auto [name, check] : {std::pair{"every pair", &ExampleChecks::EveryPairMatchesTheAlignmentOfThePlans},
                             std::pair{"hand counted", &ExampleChecks::HandCountedPairs},
                             std::pair{"shared bytes", &ExampleChecks::SharedBytesAreDistinctBlobBytes},
                             std::pair{"across models", &ExampleChecks::ChangedLayersAcrossModelsHaveNumbersAndConfigKeys}}) {
    SCOPED_TRACE(name);
    check();
  }
}

TEST_F(ExampleStore, PicturesOfExampleVariants) {
  for (auto [name, check] : {std::pair{"block expansion", &ExampleChecks::ProvenanceSvgOfBlockExpansion},
                             std::pair{"repeats and casts", &ExampleChecks::ProvenanceSvgMarksRepeatsAndUniformCasts},
                             std::pair{"diff", &ExampleChecks::DiffSvgAndHtml}}) {
    SCOPED_TRACE(name);
    check();
  }
}

}  // namespace
}  // namespace strata
