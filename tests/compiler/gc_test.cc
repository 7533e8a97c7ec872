// Tests of rm and gc (gc.h) and of the store lock: gc removes exactly what no
// remaining variant reaches (computed here from node JSON), dry runs remove
// nothing, temporaries and source-cache entries go, damage stops the sweep, and
// compiles running in parallel with gc all succeed and verify.
#include "strata/compiler/gc.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "store_maint_util.h"
#include "strata/compiler/verify.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testutil::ErrorOf;
using testutil::FilesUnder;
using testutil::ObjPath;
using testutil::Reach;

class GcTest : public testutil::StoreMaintTest {
 protected:
  void SetUp() override {
    StoreMaintTest::SetUp();
    Synth("org/m");
    Synth("org/n", 2, /*seed=*/7);
  }

  GcReport Gc(bool dry_run = false, int64_t grace = 3600) {
    GcOptions o;
    o.dry_run = dry_run;
    o.grace_s = grace;
    return CollectGarbage(*store_, o);
  }

  // blobs/... and nodes/... files now in the store.
  std::set<std::string> Objects() {
    std::set<std::string> out;
    for (const char* dir : {"blobs", "nodes"})
      for (const std::string& f : FilesUnder(P(dir))) out.insert(std::string(dir) + "/" + f);
    return out;
  }
};

std::set<std::string> Minus(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::set<std::string> out;
  for (const std::string& x : a)
    if (!b.count(x)) out.insert(x);
  return out;
}

std::set<std::string> RemovedPaths(const GcReport& r) {
  std::set<std::string> out;
  for (const GcRemoved& x : r.removed)
    if (x.kind != "tmp") out.insert(x.path);
  return out;
}

TEST_F(GcTest, RemovesExactlyWhatOnlyTheRemovedVariantUsed) {
  Hash dus = Compile("dus", testutil::kDusPlan);
  Hash expand = Compile("expand", testutil::kExpandPlan);
  Hash other = Compile("other", "models:\n  - model: org/n\nmerge_method: passthrough\n");
  std::set<std::string> before = Objects();
  std::set<std::string> keep = Reach(Root(), dus.Hex());
  for (const std::string& f : Reach(Root(), other.Hex())) keep.insert(f);
  std::set<std::string> expected = Minus(Reach(Root(), expand.Hex()), keep);
  ASSERT_FALSE(expected.empty());

  RemoveVariants(*store_, {"expand"});
  EXPECT_FALSE(store_->GetRef("expand"));
  GcReport dry = Gc(/*dry_run=*/true);
  EXPECT_EQ(Objects(), before);  // nothing removed
  EXPECT_EQ(RemovedPaths(dry), expected);

  GcReport r = Gc();
  EXPECT_EQ(RemovedPaths(r), expected);
  EXPECT_EQ(r.BytesFreed(), dry.BytesFreed());
  EXPECT_EQ(Objects(), Minus(before, expected));
  EXPECT_EQ(r.nodes + r.blobs, expected.size());
  EXPECT_TRUE(Verify(*store_, {}).clean());
  EXPECT_EQ(Gc().removed.size(), 0u);  // a second gc finds nothing
}

TEST_F(GcTest, DropsSourceCacheEntriesOfSweptBlobs) {
  Compile("dus", testutil::kDusPlan);
  Compile("other", "models:\n  - model: org/n\nmerge_method: passthrough\n");
  size_t cache_files = FilesUnder(P("cache/sources")).size();
  ASSERT_EQ(cache_files, 2u);  // one source file per model
  RemoveVariants(*store_, {"other"});
  GcReport r = Gc();
  EXPECT_GT(r.cache_entries, 0u);
  EXPECT_EQ(r.cache_files, 1u);
  EXPECT_EQ(FilesUnder(P("cache/sources")).size(), 1u);  // org/n's entry had only swept blobs
  // Compiling org/n again reads its tensors again and the store is whole.
  CompileOptions o;
  o.name = "other";
  CompileStats st = strata::Compile(*store_, PlanFile("other", "models:\n  - model: org/n\nmerge_method: passthrough\n"), o);
  EXPECT_EQ(st.cached_tensors, 0u);
  EXPECT_TRUE(Verify(*store_, {}).clean());
}

TEST_F(GcTest, SweepsOldTemporariesOnly) {
  Compile("dus", testutil::kDusPlan);
  std::string old_tmp = P("tmp/blob.1.2.3.tmp"), new_tmp = P("tmp/node.1.2.4.tmp");
  testutil::WriteText(old_tmp, "left by a crash");
  testutil::WriteText(new_tmp, "being written");
  fs::last_write_time(old_tmp, fs::file_time_type::clock::now() - std::chrono::hours(2));
  GcReport r = Gc();
  EXPECT_EQ(r.tmp_files, 1u);
  EXPECT_FALSE(fs::exists(old_tmp));
  EXPECT_TRUE(fs::exists(new_tmp));
  EXPECT_EQ(Gc(false, /*grace=*/0).tmp_files, 1u);
  EXPECT_FALSE(fs::exists(new_tmp));
}

TEST_F(GcTest, DamagedRefStopsTheSweep) {
  Compile("dus", testutil::kDusPlan);
  Compile("other", "models:\n  - model: org/n\nmerge_method: passthrough\n");
  testutil::WriteText(P("refs/other"), "garbage\n");
  std::set<std::string> before = Objects();
  EXPECT_THAT(ErrorOf([&] { Gc(); }), HasSubstr("ref other is damaged"));
  EXPECT_EQ(Objects(), before);
  RemoveVariants(*store_, {"other"});  // a damaged ref can be removed
  EXPECT_GT(Gc().blobs, 0u);
}

TEST_F(GcTest, CorruptReachableNodeStopsTheSweep) {
  Hash dus = Compile("dus", testutil::kDusPlan);
  testutil::FlipByteAt(P(ObjPath("nodes", dus.Hex())), 5);
  EXPECT_THAT(ErrorOf([&] { Gc(); }), HasSubstr("gc removed nothing"));
}

TEST_F(GcTest, RmOfUnknownNameRemovesNothing) {
  Compile("dus", testutil::kDusPlan);
  EXPECT_THAT(ErrorOf([&] { RemoveVariants(*store_, {"dus", "nosuch"}); }), HasSubstr("variants: dus"));
  EXPECT_TRUE(store_->GetRef("dus"));
}

TEST(FileLockTest, ExclusiveWaitsForShared) {
  testutil::ScopedTempDir tmp;
  const std::string path = tmp / "lock";
  auto shared = std::make_unique<FileLock>(path, false);
  auto also_shared = std::make_unique<FileLock>(path, false);  // shared locks coexist
  std::atomic<bool> waited{false}, got{false};
  std::thread t([&] {
    FileLock ex(path, true, [&] { waited = true; }, 0.05);
    got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_TRUE(waited);
  EXPECT_FALSE(got);
  shared.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(got);  // the second shared lock still holds it
  also_shared.reset();
  t.join();
  EXPECT_TRUE(got);
}

// Four compiles of overlapping plans into one store at once, each through its
// own Store object (as separate processes would), with gc looping meanwhile.
TEST_F(GcTest, ConcurrentCompilesAndGc) {
  const std::vector<std::pair<std::string, std::string>> plans = {
      {"dus", testutil::kDusPlan}, {"expand", testutil::kExpandPlan},
      {"dus2", std::string(testutil::kDusPlan) + "out_dtype: float16\n"},
      {"expand2", std::string(testutil::kExpandPlan) + "out_dtype: float32\n"}};
  std::vector<Plan> loaded;
  for (const auto& [name, text] : plans) loaded.push_back(PlanFile(name, text));
  std::atomic<bool> done{false};
  std::atomic<int> gcs{0};
  std::thread gc([&] {
    Store s(Root(), false);
    while (!done) {
      GcOptions o;
      o.grace_s = 0;
      CollectGarbage(s, o);
      ++gcs;
    }
  });
  std::vector<std::thread> compiles;
  std::vector<std::string> errors(plans.size());
  for (size_t i = 0; i < plans.size(); ++i)
    compiles.emplace_back([&, i] {
      try {
        Store s(Root(), false);
        CompileOptions o;
        o.name = plans[i].first;
        strata::Compile(s, loaded[i], o);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : compiles) t.join();
  done = true;
  gc.join();
  for (const std::string& e : errors) EXPECT_EQ(e, "");
  EXPECT_GT(gcs.load(), 0);
  EXPECT_EQ(store_->ListRefs().size(), 4u);
  VerifyReport r = Verify(*store_, {});
  EXPECT_TRUE(r.clean()) << r.ToJson(*store_, false).dump(2);
  EXPECT_EQ(Gc(false, 0).removed.size(), 0u);  // nothing half-written was left behind
}

}  // namespace
}  // namespace strata
