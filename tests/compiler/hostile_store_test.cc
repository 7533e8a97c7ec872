// Crafted and damaged store objects (issue: hostile inputs): every reader
// refuses them with an Error naming the object, verify reports them, and
// nothing is written outside OUTDIR or left half-written.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "store_maint_util.h"
#include "strata/compiler/diff.h"
#include "strata/compiler/export.h"
#include "strata/compiler/gc.h"
#include "strata/compiler/inspect.h"
#include "strata/compiler/verify.h"
#include "strata/formats/materialize.h"
#include "strata/formats/variant_check.h"

namespace strata {
namespace {

using testutil::ErrorOf;
using testutil::ObjPath;
using ::testing::HasSubstr;

class HostileStoreTest : public testutil::StoreMaintTest {
 protected:
  void SetUp() override {
    StoreMaintTest::SetUp();
    Synth("org/m");
    dus_ = Compile("dus", testutil::kDusPlan);
  }

  Json Node(const Hash& h) { return store_->GetNode(h); }

  // A copy of variant `base` changed by `edit`, stored under ref `name`.
  Hash Craft(const std::string& name, const Hash& base, const std::function<void(Json&)>& edit) {
    Json v = Node(base);
    edit(v);
    Hash h = store_->PutNode(v);
    store_->SetRef(name, h);
    return h;
  }

  // The first layer node of `variant` changed by `edit` (a new node).
  Hash CraftLayer(const Hash& variant, const std::function<void(Json&)>& edit) {
    Json l = Node(*Hash::FromHex(Node(variant)["layers"][0]["layer"].get<std::string>()));
    edit(l);
    return store_->PutNode(l);
  }

  // A chain of `n` scale-by-1 nodes over the first layer's q_proj.
  Hash Chain(int n) {
    Json l = Node(*Hash::FromHex(Node(dus_)["layers"][0]["layer"].get<std::string>()));
    Hash cur = *Hash::FromHex(l["tensors"]["self_attn.q_proj.weight"].get<std::string>());
    Json base = Node(cur);
    for (int i = 0; i < n; ++i) {
      Json s{{"kind", "tensor"}, {"dtype", base["dtype"]}, {"shape", base["shape"]}, {"op", "scale"},
             {"src", cur.Hex()}, {"factor", 1.0}};
      cur = store_->PutNode(s);
    }
    return cur;
  }

  // Variant `dus` with layer 0's q_proj replaced by `tensor`, as ref `name`.
  Hash WithQ(const std::string& name, const Hash& tensor) {
    Hash layer = CraftLayer(dus_, [&](Json& l) { l["tensors"]["self_attn.q_proj.weight"] = tensor.Hex(); });
    return Craft(name, dus_, [&](Json& v) { v["layers"][0]["layer"] = layer.Hex(); });
  }

  VerifyReport VerifyAll() { return Verify(*store_, VerifyOptions{}); }

  std::string ExportError(const std::string& name, const std::string& out) {
    return ErrorOf([&] { Export(*store_, name, out, ExportOptions{}); });
  }

  Hash dus_;
};

// --- deep chains: bounded, never recursing into the stack -------------------

TEST_F(HostileStoreTest, ChainAtTheLimitIsRead) {
  WithQ("deep", Chain(kMaxTensorChain));  // q_proj is a blob node: the chain is exactly at the limit
  EXPECT_NO_THROW(Export(*store_, "deep", tmp_ / "out", ExportOptions{}));
  EXPECT_TRUE(VerifyAll().clean());
}

TEST_F(HostileStoreTest, ChainPastTheLimitIsRefusedEverywhere) {
  Hash top = Chain(kMaxTensorChain + 30);
  Hash v = WithQ("deep", top);
  EXPECT_THAT(ExportError("deep", tmp_ / "out"), HasSubstr("past strata's limit"));
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "out"));
  TensorReader r(*store_);
  EXPECT_THAT(ErrorOf([&] { r.Node(top); }), HasSubstr("chain of more than"));
  EXPECT_THAT(ErrorOf([&] { DiffVariants(*store_, dus_, "dus", v, "deep"); }), HasSubstr("limit"));
  VerifyReport rep = VerifyAll();
  ASSERT_FALSE(rep.clean());
  // One node is blamed (the first past the limit), and the variant is broken.
  int chain_damage = 0;
  for (const Damage& d : rep.damage)
    if (d.problem.find("derived (scale/cast/merge) node of a chain") != std::string::npos) ++chain_damage;
  EXPECT_EQ(chain_damage, 1);
  EXPECT_THAT(rep.BrokenVariants(), ::testing::ElementsAre("deep"));
}

TEST_F(HostileStoreTest, DerivedNodeThatDoesNotFitItsSourceIsRefused) {
  Json l = Node(*Hash::FromHex(Node(dus_)["layers"][0]["layer"].get<std::string>()));
  Hash q = *Hash::FromHex(l["tensors"]["self_attn.q_proj.weight"].get<std::string>());
  Json s{{"kind", "tensor"}, {"dtype", "F32"}, {"shape", Node(q)["shape"]}, {"op", "scale"},
         {"src", q.Hex()}, {"factor", 2.0}};  // scales a BF16 source into F32: twice the bytes
  WithQ("misfit", store_->PutNode(s));
  EXPECT_THAT(ExportError("misfit", tmp_ / "out"), HasSubstr("cannot be computed from its source"));
  EXPECT_THAT(VerifyAll().BrokenVariants(), ::testing::ElementsAre("misfit"));
}

// arcee_fusion's node is F32 over inputs of one dtype: other inputs, or another
// node dtype, are damage that export and verify name.
TEST_F(HostileStoreTest, FusionNodeOverMixedDtypesIsRefused) {
  Json l = Node(*Hash::FromHex(Node(dus_)["layers"][0]["layer"].get<std::string>()));
  const Hash q = *Hash::FromHex(l["tensors"]["self_attn.q_proj.weight"].get<std::string>());
  const Json shape = Node(q)["shape"];
  const Hash q16 = store_->PutNode(
      Json{{"kind", "tensor"}, {"dtype", "F16"}, {"shape", shape}, {"op", "cast"}, {"src", q.Hex()}});
  store_->RequireVersion(3);
  auto fusion = [&](const char* dtype, const Hash& other) {
    return store_->PutNode(Json{{"kind", "tensor"}, {"dtype", dtype}, {"shape", shape}, {"op", "merge"},
                                {"method", "arcee_fusion"}, {"inputs", {q.Hex(), other.Hex()}}, {"base", 0},
                                {"params", Json::object()}, {"tensor_params", {Json::object(), Json::object()}}});
  };
  WithQ("fine", fusion("F32", q));
  EXPECT_NO_THROW(Export(*store_, "fine", tmp_ / "fine", ExportOptions{}));
  EXPECT_TRUE(VerifyAll().clean());
  WithQ("mixed", fusion("F32", q16));
  EXPECT_THAT(ExportError("mixed", tmp_ / "mixed"), HasSubstr("merges inputs of different dtypes"));
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "mixed"));
  WithQ("bf16", fusion("BF16", q));
  EXPECT_THAT(ExportError("bf16", tmp_ / "bf16"), HasSubstr("its method's result is F32, not BF16"));
  EXPECT_THAT(VerifyAll().BrokenVariants(), ::testing::UnorderedElementsAre("mixed", "bf16"));
}

// --- names in nodes: plain names only ----------------------------------------

TEST_F(HostileStoreTest, FileNameWithPathIsRefusedAndNothingIsWrittenOutside) {
  for (const std::string bad : {"../evil.json", "/tmp/evil.json", "a/b", "..", ""}) {
    SCOPED_TRACE(bad);
    Craft("evil", dus_, [&](Json& v) {
      v["files"][bad] = v["plan"];
      v["files"]["tokenizer.json"] = v["plan"];  // a good entry listed with it
    });
    const std::string out = tmp_ / "x/out";
    EXPECT_THAT(ExportError("evil", out), HasSubstr("not a plain file name"));
    EXPECT_TRUE(testutil::FilesUnder(tmp_ / "x").empty());
    EXPECT_FALSE(std::filesystem::exists(tmp_ / "evil.json"));
    EXPECT_THAT(VerifyAll().BrokenVariants(), ::testing::Contains("evil"));
  }
}

TEST_F(HostileStoreTest, RoleAndTensorNamesMustBeTensorNames) {
  EXPECT_TRUE(ValidTensorName("self_attn.q_proj.weight"));
  EXPECT_TRUE(ValidTensorName("model.layers.0.mlp.up_proj.weight"));
  for (const char* bad : {"../x", "a..b", ".a", "a.", "a/b", "", "a b"}) EXPECT_FALSE(ValidTensorName(bad)) << bad;
  EXPECT_TRUE(ValidFileName("tokenizer.json"));
  for (const char* bad : {"..", ".", "a/b", "a\\b", "", "tab\tname"}) EXPECT_FALSE(ValidFileName(bad)) << bad;
  Hash layer = CraftLayer(dus_, [](Json& l) { l["tensors"]["../../escape"] = l["tensors"]["self_attn.q_proj.weight"]; });
  EXPECT_THAT(ErrorOf([&] { LoadLayer(*store_, layer); }), HasSubstr("not a valid tensor name"));
}

// --- node parsers never leak nlohmann's type errors --------------------------

TEST_F(HostileStoreTest, WrongTypedNodeFieldsAreErrors) {
  Hash h{};
  for (const char* text : {R"({"kind":5})", R"({"kind":"variant","format":"1"})", R"([1,2])",
                           R"({"kind":"variant","format":1,"architecture":7})"}) {
    Json j = Json::parse(text);
    EXPECT_THAT(ErrorOf([&] { ParseVariant(j, h); }), HasSubstr("variant")) << text;
  }
  Json v = Node(dus_);
  v["layers"][0]["source_layer"] = "zero";
  EXPECT_THAT(ErrorOf([&] { ParseVariant(v, h); }), HasSubstr("not an integer"));
  Json t = Json::parse(R"({"kind":"tensor","dtype":"BF16","shape":[4294967296,4294967296],"op":"zeros"})");
  EXPECT_THAT(ErrorOf([&] { ParseTensorNode(t, h); }), HasSubstr("more than 2^48"));
  t = Json::parse(R"({"kind":"tensor","dtype":7,"shape":[1],"op":"zeros"})");
  EXPECT_THAT(ErrorOf([&] { ParseTensorNode(t, h); }), HasSubstr("unknown dtype"));
}

// --- corrupt blobs: never used silently ----------------------------------------

TEST_F(HostileStoreTest, CorruptBlobFailsExportAndDiffNamingIt) {
  Json l = Node(*Hash::FromHex(Node(dus_)["layers"][1]["layer"].get<std::string>()));
  Json q = Node(*Hash::FromHex(l["tensors"]["mlp.down_proj.weight"].get<std::string>()));
  const std::string blob = q["blob"];
  testutil::FlipByteAt(P(ObjPath("blobs", blob)), 17);
  const std::string out = tmp_ / "out";
  std::string e = ExportError("dus", out);
  EXPECT_THAT(e, HasSubstr("blob " + blob + " is corrupt"));
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_TRUE(testutil::EntriesIn(tmp_.path()).size() > 0);
  for (const std::string& entry : testutil::EntriesIn(tmp_.path())) EXPECT_EQ(entry.find("strata-export"), std::string::npos);
  // Diff reads the tensors of layers that differ: those of another model.
  Synth("org/n", 4, /*seed=*/7);
  std::string plan = testutil::kDusPlan;
  for (size_t at; (at = plan.find("org/m")) != std::string::npos;) plan.replace(at, 5, "org/n");
  Hash other = Compile("other", plan);
  EXPECT_THAT(ErrorOf([&] { DiffVariants(*store_, dus_, "dus", other, "other"); }), HasSubstr("is corrupt"));
  // The unchecked path still works for those who opt out (and is what verify is for).
  ExportOptions o;
  o.verify = false;
  EXPECT_NO_THROW(Export(*store_, "dus", out, o));
}

// --- incomplete variants: verify and export check them against the architecture

TEST_F(HostileStoreTest, LayerWithoutARoleIsIncomplete) {
  Hash layer = CraftLayer(dus_, [](Json& l) { l["tensors"].erase("self_attn.q_proj.weight"); });
  Craft("holey", dus_, [&](Json& v) { v["layers"][0]["layer"] = layer.Hex(); });
  VerifyReport r = VerifyAll();
  EXPECT_THAT(r.BrokenVariants(), ::testing::ElementsAre("holey"));
  bool found = false;
  for (const Damage& d : r.damage) found = found || d.problem.find("has no self_attn.q_proj.weight") != std::string::npos;
  EXPECT_TRUE(found);
  EXPECT_THAT(ExportError("holey", tmp_ / "out"), HasSubstr("not a complete model"));
}

TEST_F(HostileStoreTest, NoLayersOrConfigNotJsonIsIncomplete) {
  Craft("empty", dus_, [](Json& v) { v["layers"] = Json::array(); });
  Hash bad_cfg = store_->PutBlob("{not json");
  Craft("badcfg", dus_, [&](Json& v) { v["config"] = bad_cfg.Hex(); });
  VerifyReport r = VerifyAll();
  EXPECT_THAT(r.BrokenVariants(), ::testing::ElementsAre("badcfg", "empty"));
  EXPECT_THAT(ExportError("empty", tmp_ / "o1"), HasSubstr("has no layers"));
  EXPECT_THAT(ExportError("badcfg", tmp_ / "o2"), HasSubstr("not valid JSON"));
}

TEST_F(HostileStoreTest, WrongShapeAndUnknownRoleAreIncomplete) {
  Hash norm = *Hash::FromHex(Node(*Hash::FromHex(Node(dus_)["layers"][0]["layer"].get<std::string>()))["tensors"]
                                 ["input_layernorm.weight"].get<std::string>());
  Hash layer = CraftLayer(dus_, [&](Json& l) {
    l["tensors"]["self_attn.q_proj.weight"] = norm.Hex();  // a vector where a matrix belongs
    l["tensors"]["mlp.extra.weight"] = norm.Hex();
  });
  Craft("odd", dus_, [&](Json& v) { v["layers"][0]["layer"] = layer.Hex(); });
  TensorReader reader(*store_);
  VariantCheck c = CheckVariant(*store_, LoadVariant(*store_, *store_->GetRef("odd")), reader);
  ASSERT_EQ(c.problems.size(), 2u);
  EXPECT_THAT(c.problems[0], HasSubstr("self_attn.q_proj.weight has shape"));
  EXPECT_THAT(c.problems[1], HasSubstr("mlp.extra.weight, which is not a tensor"));
  EXPECT_TRUE(CheckVariant(*store_, LoadVariant(*store_, dus_), reader).problems.empty());
}

// --- one damaged variant does not hide the others -------------------------------

TEST_F(HostileStoreTest, LsAndDuListTheRestAndMarkTheDamagedOne) {
  Hash v = Craft("broken", dus_, [](Json& j) { j["note"] = "x"; });
  std::filesystem::remove(P(ObjPath("nodes", v.Hex())));
  Json ls = ListVariants(*store_);
  ASSERT_EQ(ls["variants"].size(), 2u);
  EXPECT_EQ(ls["variants"][0]["name"], "broken");
  EXPECT_TRUE(ls["variants"][0]["damaged"].get<bool>());
  EXPECT_THAT(ls["variants"][0]["problem"].get<std::string>(), HasSubstr("missing"));
  EXPECT_EQ(ls["variants"][1]["name"], "dus");
  EXPECT_GT(ls["variants"][1]["logical_bytes"].get<uint64_t>(), 0u);
  Json du = StoreUsage(*store_);
  EXPECT_EQ(du["damaged"].size(), 1u);
  EXPECT_GT(du["logical_bytes"].get<uint64_t>(), 0u);
}

TEST_F(HostileStoreTest, GcHasOneRuleForMissingAndCorruptVariantNodes) {
  Compile("expand", testutil::kExpandPlan);
  const std::set<std::string> before = [&] {
    auto f = testutil::FilesUnder(Root() + "/blobs");
    return std::set<std::string>(f.begin(), f.end());
  }();
  Hash v = *store_->GetRef("expand");
  const std::string path = P(ObjPath("nodes", v.Hex()));
  testutil::FlipByteAt(path, 3);
  EXPECT_THAT(ErrorOf([&] { CollectGarbage(*store_, GcOptions{}); }), HasSubstr("gc removed nothing"));
  std::filesystem::remove(path);
  EXPECT_THAT(ErrorOf([&] { CollectGarbage(*store_, GcOptions{}); }), HasSubstr("gc removed nothing"));
  auto after = testutil::FilesUnder(Root() + "/blobs");
  EXPECT_EQ(std::set<std::string>(after.begin(), after.end()), before);
}

// --- the export's own files ----------------------------------------------------

TEST_F(HostileStoreTest, ExportIntoAnEmptyDirectoryWritesInsideIt) {
  const std::string out = tmp_ / "mnt";
  std::filesystem::create_directories(out);
  Export(*store_, "dus", out, ExportOptions{});
  EXPECT_THAT(testutil::EntriesIn(out), ::testing::ElementsAre("config.json", "mergekit_config.yml", "model.safetensors"));
  EXPECT_THAT(testutil::EntriesIn(tmp_.path()), ::testing::Not(::testing::Contains(HasSubstr("strata-export"))));
}

TEST_F(HostileStoreTest, StaleTemporariesOfDeadExportsAreRemoved) {
  // pid 2^22 + 1 is above Linux's pid_max limit: never a live process.
  const std::string dead = tmp_ / ".out.strata-export.4194305.0.deadbeef.tmp";
  const std::string live = tmp_ / (".out.strata-export." + std::to_string(getpid()) + ".0.deadbeef.tmp");
  for (const std::string& d : {dead, live}) {
    std::filesystem::create_directories(d);
    testutil::WriteText(d + "/model.safetensors", "partial");
  }
  Export(*store_, "dus", tmp_ / "out", ExportOptions{});
  EXPECT_FALSE(std::filesystem::exists(dead));
  EXPECT_TRUE(std::filesystem::exists(live));  // another export of this process may own it
}

TEST_F(HostileStoreTest, RemovedWhileExportingIsNotCalledDamage) {
  Json l = Node(*Hash::FromHex(Node(dus_)["layers"][0]["layer"].get<std::string>()));
  const std::string blob = Node(*Hash::FromHex(l["tensors"]["mlp.up_proj.weight"].get<std::string>()))["blob"];
  ExportOptions o;
  // What `strata rm dus && strata gc` racing the export looks like to it.
  o.on_start = [&](uint64_t) {
    store_->RemoveRef("dus");
    std::filesystem::remove(P(ObjPath("blobs", blob)));
  };
  std::string e = ErrorOf([&] { Export(*store_, "dus", tmp_ / "out", o); });
  EXPECT_THAT(e, HasSubstr("was removed while it was being exported"));
  EXPECT_THAT(e, HasSubstr("not damaged"));
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "out"));
}

}  // namespace
}  // namespace strata
