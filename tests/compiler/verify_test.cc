// Tests of Verify (verify.h): a clean store, then each kind of damage — a
// flipped byte, a truncated blob, a missing node, garbage and wrong-kind refs,
// a corrupt node — reported with the right object and the variants it breaks.
#include "strata/compiler/verify.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "store_maint_util.h"
#include "strata/compiler/inspect.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testutil::ErrorOf;
using testutil::FlipByteAt;
using testutil::MakeWritable;
using testutil::ObjPath;
using testutil::Reach;

class VerifyTest : public testutil::StoreMaintTest {
 protected:
  void SetUp() override {
    StoreMaintTest::SetUp();
    Synth("org/m");
    Synth("org/n", 2, /*seed=*/7);
    dus_ = Compile("dus", testutil::kDusPlan);
    expand_ = Compile("expand", testutil::kExpandPlan);
    other_ = Compile("other", "models:\n  - model: org/n\nmerge_method: passthrough\n");
  }

  VerifyReport Run(std::vector<std::string> names = {}, bool quick = false) {
    VerifyOptions o;
    o.names = std::move(names);
    o.quick = quick;
    return Verify(*store_, o);
  }

  // The blob of pre tensor `name` (e.g. the embeddings) of variant `v`.
  std::string PreBlob(const std::string& v, const std::string& name) {
    Json show = ShowVariant(*store_, v);  // kept alive: the loop borrows from it
    for (const Json& t : show["tensors"])
      if (t["name"].get<std::string>() == name)
        return Json::parse(testutil::ReadText(P(ObjPath("nodes", t["node"].get<std::string>()))))["blob"];
    ADD_FAILURE() << "no tensor " << name;
    return "";
  }

  Hash dus_, expand_, other_;
};

const Damage* Find(const VerifyReport& r, const std::string& kind, const std::string& hash) {
  for (const Damage& d : r.damage)
    if (d.kind == kind && d.hash == hash) return &d;
  return nullptr;
}

TEST_F(VerifyTest, UntouchedStoreIsClean) {
  VerifyReport r = Run();
  EXPECT_TRUE(r.clean()) << r.ToJson(*store_, false).dump(2);
  EXPECT_EQ(r.refs, 3u);
  EXPECT_GT(r.nodes, 0u);
  EXPECT_GT(r.blobs, 0u);
  EXPECT_EQ(r.rehashed_bytes, r.blob_bytes);
  // Every node and blob file was looked at.
  EXPECT_EQ(r.nodes, testutil::FilesUnder(P("nodes")).size());
  EXPECT_EQ(r.blobs, testutil::FilesUnder(P("blobs")).size());
}

TEST_F(VerifyTest, TempFilesAreNotDamage) {
  testutil::WriteText(P("tmp/blob.123.0.deadbeef.tmp"), "half a blob");
  EXPECT_TRUE(Run().clean());
}

TEST_F(VerifyTest, FlippedByteIsFoundByRehashOnly) {
  std::string blob = PreBlob("dus", "model.embed_tokens.weight");
  FlipByteAt(P(ObjPath("blobs", blob)), 100);
  VerifyReport r = Run();
  ASSERT_EQ(r.damage.size(), 1u) << r.ToJson(*store_, false).dump(2);
  const Damage& d = r.damage[0];
  EXPECT_EQ(d.kind, "blob");
  EXPECT_EQ(d.hash, blob);
  EXPECT_EQ(d.path, ObjPath("blobs", blob));
  EXPECT_THAT(d.problem, HasSubstr("hash to"));
  EXPECT_THAT(d.variants, ElementsAre("dus", "expand"));  // org/n's variant does not use it
  EXPECT_THAT(r.BrokenVariants(), ElementsAre("dus", "expand"));
  EXPECT_TRUE(Run({}, /*quick=*/true).clean());  // sizes are right: --quick cannot see it
  EXPECT_EQ(Run({"other"}).damage.size(), 0u);   // not reached from "other"
  EXPECT_EQ(Run({"expand"}).damage.size(), 1u);
}

TEST_F(VerifyTest, TruncatedBlobIsFoundByQuickToo) {
  std::string blob = PreBlob("other", "model.embed_tokens.weight");
  std::string path = P(ObjPath("blobs", blob));
  MakeWritable(path);
  fs::resize_file(path, fs::file_size(path) - 2);
  for (bool quick : {false, true}) {
    VerifyReport r = Run({}, quick);
    const Damage* d = Find(r, "blob", blob);
    ASSERT_NE(d, nullptr) << r.ToJson(*store_, quick).dump(2);
    EXPECT_EQ(r.damage.size(), 1u);
    EXPECT_THAT(d->problem, HasSubstr("bytes, but tensor node"));
    EXPECT_THAT(d->variants, ElementsAre("other"));
  }
}

TEST_F(VerifyTest, MissingNodeNamesTheVariantsThatUseIt) {
  // The last layer of the expansion (scaled copy) is used by "expand" only;
  // source layer 1 of org/m by both "dus" and "expand".
  Json show = ShowVariant(*store_, "expand");
  std::string scaled = show["layers"][4]["layer"], shared = show["layers"][1]["layer"];
  fs::remove(P(ObjPath("nodes", scaled)));
  fs::remove(P(ObjPath("nodes", shared)));
  VerifyReport r = Run();
  ASSERT_EQ(r.damage.size(), 2u) << r.ToJson(*store_, false).dump(2);
  const Damage* d = Find(r, "node", scaled);
  ASSERT_NE(d, nullptr);
  EXPECT_THAT(d->problem, HasSubstr("missing"));
  EXPECT_THAT(d->variants, ElementsAre("expand"));
  d = Find(r, "node", shared);
  ASSERT_NE(d, nullptr);
  EXPECT_THAT(d->variants, ElementsAre("dus", "expand"));
}

TEST_F(VerifyTest, CorruptNodeIsReported) {
  std::string path = P(ObjPath("nodes", dus_.Hex()));
  FlipByteAt(path, 3);
  VerifyReport r = Run();
  const Damage* d = Find(r, "node", dus_.Hex());
  ASSERT_NE(d, nullptr) << r.ToJson(*store_, false).dump(2);
  EXPECT_THAT(d->problem, HasSubstr("not to its name"));
  EXPECT_THAT(d->variants, ElementsAre("dus"));
}

TEST_F(VerifyTest, GarbageRef) {
  testutil::WriteText(P("refs/dus"), "not a hash\n");
  VerifyReport r = Run();
  ASSERT_EQ(r.damage.size(), 1u) << r.ToJson(*store_, false).dump(2);
  EXPECT_EQ(r.damage[0].kind, "ref");
  EXPECT_EQ(r.damage[0].path, "refs/dus");
  EXPECT_THAT(r.damage[0].variants, ElementsAre("dus"));
}

TEST_F(VerifyTest, RefToAbsentHash) {
  const std::string bogus = "0123456789abcdef0123456789abcdef";
  testutil::WriteText(P("refs/expand"), bogus + "\n");
  VerifyReport r = Run();
  ASSERT_EQ(r.damage.size(), 1u) << r.ToJson(*store_, false).dump(2);
  EXPECT_EQ(r.damage[0].kind, "node");
  EXPECT_EQ(r.damage[0].hash, bogus);
  EXPECT_THAT(r.damage[0].problem, HasSubstr("ref expand"));
  EXPECT_THAT(r.damage[0].variants, ElementsAre("expand"));
}

TEST_F(VerifyTest, RefToNonVariantNode) {
  std::string layer = ShowVariant(*store_, "dus")["layers"][0]["layer"];
  testutil::WriteText(P("refs/other"), layer + "\n");
  VerifyReport r = Run();
  ASSERT_EQ(r.damage.size(), 1u) << r.ToJson(*store_, false).dump(2);
  EXPECT_EQ(r.damage[0].kind, "ref");
  EXPECT_EQ(r.damage[0].hash, layer);
  EXPECT_THAT(r.damage[0].problem, HasSubstr("not a variant"));
  EXPECT_THAT(r.damage[0].variants, ElementsAre("other"));
}

TEST_F(VerifyTest, UnreferencedDamageIsFoundOnlyForTheWholeStore) {
  std::string blob = PreBlob("other", "model.embed_tokens.weight");
  ASSERT_TRUE(store_->RemoveRef("other"));
  FlipByteAt(P(ObjPath("blobs", blob)), 0);
  VerifyReport r = Run();
  ASSERT_EQ(r.damage.size(), 1u);
  EXPECT_TRUE(r.damage[0].variants.empty());
  EXPECT_TRUE(Run({"dus", "expand"}).clean());
}

TEST_F(VerifyTest, NamesLimitTheWalk) {
  VerifyReport all = Run(), one = Run({"other"});
  EXPECT_EQ(one.refs, 1u);
  EXPECT_EQ(one.nodes + one.blobs, Reach(Root(), other_.Hex()).size());
  EXPECT_LT(one.blob_bytes, all.blob_bytes);
}

TEST_F(VerifyTest, UnknownNameIsAnError) {
  EXPECT_THAT(ErrorOf([&] { Run({"nosuch"}); }), HasSubstr("variants: dus, expand, other"));
}

}  // namespace
}  // namespace strata
