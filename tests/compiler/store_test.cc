// Tests of the content-addressed store (store.h) against formats/STORE_FORMAT.md:
// layout, hashing (checked with xxhash directly), canonical nodes, refs,
// corruption detection, ingest, the source cache and write-failure cleanup.
#include "strata/formats/store.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testutil::ErrorOf;
using testutil::FilesUnder;
using testutil::ReadText;
using testutil::ScopedTempDir;
using testutil::WriteText;

// The store's naming rule computed without strata: XXH3-128, high 64 bits then
// low 64 bits, each as 16 lowercase hex digits.
std::string Xxh3Hex(const std::string& bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

// Flips one bit of the byte at `offset` of `path` in place.
void FlipByte(const std::string& path, size_t offset) {
  // Store objects are written read-only; make this one writable to damage it.
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x01));
  ASSERT_TRUE(f.good());
}

// A file with `prefix` followed by `payload`, for IngestRange at an offset.
std::string MakeSource(const std::string& path, const std::string& prefix, const std::string& payload) {
  WriteText(path, prefix + payload);
  return path;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// Opens a file read-only for IngestRange and closes it with the scope.
class Fd {
 public:
  explicit Fd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY)) { EXPECT_GE(fd_, 0) << path; }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// ---------------------------------------------------------------------------
// Creating and opening

TEST(StoreOpen, NewDirectoryBecomesStore) {
  ScopedTempDir tmp;
  const std::string root = tmp / "store";
  Store s(root);
  EXPECT_EQ(s.root(), root);
  EXPECT_EQ(ReadText(root + "/STORE"), "strata-store 1\n");
  for (const char* d : {"blobs", "nodes", "refs", "cache/sources", "tmp"})
    EXPECT_TRUE(fs::is_directory(root + "/" + d)) << d;
  // Nothing but the marker is a file; the marker's temporary is gone.
  EXPECT_THAT(FilesUnder(root), ElementsAre("STORE"));
}

TEST(StoreOpen, ExistingEmptyDirectoryBecomesStore) {
  ScopedTempDir tmp;
  Store s(tmp.path());
  EXPECT_EQ(ReadText(tmp / "STORE"), "strata-store 1\n");
}

TEST(StoreOpen, ReopenKeepsContent) {
  ScopedTempDir tmp;
  Hash h;
  {
    Store s(tmp / "store");
    h = s.PutBlob("hello");
    s.SetRef("v", h);
  }
  Store again(tmp / "store", /*create=*/false);
  EXPECT_EQ(again.ReadBlob(h), "hello");
  EXPECT_EQ(again.GetRef("v"), h);
}

TEST(StoreOpen, NonEmptyNonStoreDirectoryThrows) {
  ScopedTempDir tmp;
  WriteText(tmp / "precious.txt", "do not touch");
  std::string msg = ErrorOf([&] { Store s(tmp.path()); });
  EXPECT_THAT(msg, HasSubstr(tmp.path()));
  // Refusing must not have written anything.
  EXPECT_THAT(testutil::EntriesIn(tmp.path()), ElementsAre("precious.txt"));
  EXPECT_EQ(ReadText(tmp / "precious.txt"), "do not touch");
}

TEST(StoreOpen, MissingStoreWithoutCreateThrows) {
  ScopedTempDir tmp;
  ErrorOf([&] { Store s(tmp / "nothing", /*create=*/false); });
  EXPECT_FALSE(fs::exists(tmp / "nothing"));
}

TEST(StoreOpen, NewerVersionThrows) {
  ScopedTempDir tmp;
  WriteText(tmp / "STORE", "strata-store 99\n");
  std::string msg = ErrorOf([&] { Store s(tmp.path()); });
  EXPECT_THAT(msg, HasSubstr("newer"));
  EXPECT_THAT(msg, HasSubstr("99"));
}

TEST(StoreOpen, GarbageMarkerThrows) {
  ScopedTempDir tmp;
  WriteText(tmp / "STORE", "something else\n");
  ErrorOf([&] { Store s(tmp.path()); });
}

TEST(StoreOpen, DefaultRoot) {
  EXPECT_EQ(Store::DefaultRoot("/explicit"), "/explicit");
  testutil::ScopedEnv env("STRATA_STORE", "/from/env");
  EXPECT_EQ(Store::DefaultRoot(""), "/from/env");
}

// ---------------------------------------------------------------------------
// Blobs

TEST(StoreBlob, HashIsXxh3CanonicalHex) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  for (const std::string& bytes : {std::string("hello"), std::string(""), RandomBytes(5000, 7)}) {
    Hash h = s.PutBlob(bytes);
    EXPECT_EQ(h.Hex(), Xxh3Hex(bytes));
  }
}

TEST(StoreBlob, PathIsFannedOut) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string hex = Xxh3Hex("tokenizer bytes");
  Hash h = s.PutBlob("tokenizer bytes");
  EXPECT_EQ(s.BlobPath(h), tmp / "store" + "/blobs/" + hex.substr(0, 2) + "/" + hex);
  EXPECT_EQ(ReadText(s.BlobPath(h)), "tokenizer bytes");
  EXPECT_THAT(FilesUnder(tmp / "store/blobs"), ElementsAre(hex.substr(0, 2) + "/" + hex));
}

TEST(StoreBlob, PutIsIdempotent) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash a = s.PutBlob("same bytes");
  Hash b = s.PutBlob("same bytes");
  EXPECT_EQ(a, b);
  EXPECT_EQ(FilesUnder(tmp / "store/blobs").size(), 1u);
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
  EXPECT_TRUE(s.HasBlob(a));
  Hash other = s.PutBlob("other bytes");
  EXPECT_NE(a, other);
  EXPECT_EQ(FilesUnder(tmp / "store/blobs").size(), 2u);
}

TEST(StoreBlob, ReadBlobDetectsCorruption) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash h = s.PutBlob("payload that will rot");
  FlipByte(s.BlobPath(h), 3);
  std::string msg = ErrorOf([&] { s.ReadBlob(h); });
  EXPECT_THAT(msg, HasSubstr(h.Hex()));
  EXPECT_THAT(msg, HasSubstr("corrupt"));
}

TEST(StoreBlob, ReadBlobMissing) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash h = *Hash::FromHex(Xxh3Hex("never stored"));
  EXPECT_FALSE(s.HasBlob(h));
  std::string msg = ErrorOf([&] { s.ReadBlob(h); });
  EXPECT_THAT(msg, HasSubstr(h.Hex()));
}

// ---------------------------------------------------------------------------
// Nodes

TEST(StoreNode, CanonicalBytesAndHash) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Json a = Json::object();
  a["z"] = Json::array({1, 2});
  a["kind"] = "test";
  a["a"] = 1.5;
  Json b = Json::object();
  b["a"] = 1.5;
  b["kind"] = "test";
  b["z"] = Json::array({1, 2});
  Hash ha = s.PutNode(a), hb = s.PutNode(b);
  EXPECT_EQ(ha, hb);
  // Keys sorted by byte value, no whitespace, no trailing newline.
  const std::string canonical = R"({"a":1.5,"kind":"test","z":[1,2]})";
  EXPECT_EQ(ReadText(s.NodePath(ha)), canonical);
  EXPECT_EQ(ha.Hex(), Xxh3Hex(canonical));
  EXPECT_EQ(s.NodePath(ha), tmp / "store" + "/nodes/" + ha.Hex().substr(0, 2) + "/" + ha.Hex());
  EXPECT_EQ(FilesUnder(tmp / "store/nodes").size(), 1u);
  EXPECT_EQ(s.GetNode(ha), a);
}

TEST(StoreNode, NestedKeysSortedToo) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Json n = Json::object();
  n["kind"] = "layer";
  n["tensors"]["self_attn.q_proj.weight"] = "q";
  n["tensors"]["input_layernorm.weight"] = "n";
  Hash h = s.PutNode(n);
  const std::string canonical =
      R"({"kind":"layer","tensors":{"input_layernorm.weight":"n","self_attn.q_proj.weight":"q"}})";
  EXPECT_EQ(ReadText(s.NodePath(h)), canonical);
  EXPECT_EQ(h.Hex(), Xxh3Hex(canonical));
}

TEST(StoreNode, GetNodeDetectsCorruption) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash h = s.PutNode(Json{{"kind", "tensor"}, {"dtype", "BF16"}});
  FlipByte(s.NodePath(h), 5);
  std::string msg = ErrorOf([&] { s.GetNode(h); });
  EXPECT_THAT(msg, HasSubstr(h.Hex()));
}

TEST(StoreNode, GetNodeMissingNamesHash) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash h = *Hash::FromHex(Xxh3Hex("{\"kind\":\"x\"}"));
  std::string msg = ErrorOf([&] { s.GetNode(h); });
  EXPECT_THAT(msg, HasSubstr(h.Hex()));
}

TEST(StoreNode, GetNodeRejectsNonNodeJson) {
  // Bytes that hash to their name but are not an object with a kind.
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string bytes = "[1,2,3]";
  Hash h = *Hash::FromHex(Xxh3Hex(bytes));
  fs::create_directories(fs::path(s.NodePath(h)).parent_path());
  WriteText(s.NodePath(h), bytes);
  std::string msg = ErrorOf([&] { s.GetNode(h); });
  EXPECT_THAT(msg, HasSubstr(h.Hex()));
}

// ---------------------------------------------------------------------------
// Refs

TEST(StoreRef, SetGetList) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash a = s.PutNode(Json{{"kind", "variant"}, {"n", 1}});
  Hash b = s.PutNode(Json{{"kind", "variant"}, {"n", 2}});
  EXPECT_EQ(s.GetRef("solar"), std::nullopt);
  EXPECT_TRUE(s.ListRefs().empty());
  s.SetRef("solar", a);
  s.SetRef("block-exp_40.v1", b);
  EXPECT_EQ(s.GetRef("solar"), a);
  EXPECT_EQ(s.GetRef("block-exp_40.v1"), b);
  EXPECT_EQ(ReadText(tmp / "store/refs/solar"), a.Hex() + "\n");
  EXPECT_THAT(s.ListRefs(), ElementsAre("block-exp_40.v1", "solar"));
  // Replacing a ref points it at the new node.
  s.SetRef("solar", b);
  EXPECT_EQ(s.GetRef("solar"), b);
  EXPECT_EQ(s.ResolveRef("solar"), b);
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
}

TEST(StoreRef, InvalidNamesRejected) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  Hash h = s.PutBlob("x");
  for (const std::string& bad : {std::string("../x"), std::string(""), std::string(".hidden"),
                                 std::string("a/b"), std::string("-dash"), std::string("sp ace"),
                                 std::string(129, 'a')}) {
    EXPECT_FALSE(Store::ValidRefName(bad)) << bad;
    ErrorOf([&] { s.SetRef(bad, h); });
    EXPECT_EQ(s.GetRef(bad), std::nullopt) << bad;
  }
  EXPECT_TRUE(Store::ValidRefName(std::string(128, 'a')));
  EXPECT_TRUE(Store::ValidRefName("A0._-z"));
  // Nothing escaped the refs directory.
  EXPECT_TRUE(FilesUnder(tmp / "store/refs").empty());
  EXPECT_FALSE(fs::exists(tmp / "store/x"));
}

TEST(StoreRef, ResolveUnknownListsVariants) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  std::string empty_msg = ErrorOf([&] { s.ResolveRef("nope"); });
  EXPECT_THAT(empty_msg, HasSubstr("nope"));
  Hash h = s.PutBlob("v");
  s.SetRef("beta", h);
  s.SetRef("alpha", h);
  std::string msg = ErrorOf([&] { s.ResolveRef("gamma"); });
  EXPECT_THAT(msg, HasSubstr("gamma"));
  EXPECT_THAT(msg, HasSubstr("alpha, beta"));
}

TEST(StoreRef, DamagedRefThrows) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  WriteText(tmp / "store/refs/broken", "not a hash\n");
  std::string msg = ErrorOf([&] { s.GetRef("broken"); });
  EXPECT_THAT(msg, HasSubstr("broken"));
}

// ---------------------------------------------------------------------------
// IngestRange

TEST(StoreIngest, AllZeroRangeWritesNothing) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string src = MakeSource(tmp / "src.bin", "HEADER", std::string(4096, '\0'));
  Fd fd(src);
  std::atomic<uint64_t> progress{0};
  IngestResult r = s.IngestRange(fd.get(), src, 6, 4096, &progress);
  EXPECT_TRUE(r.zeros);
  EXPECT_FALSE(r.wrote);
  EXPECT_EQ(progress.load(), 4096u);
  EXPECT_TRUE(FilesUnder(tmp / "store/blobs").empty());
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
}

TEST(StoreIngest, RangeBecomesBlobOfExactlyThoseBytes) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string payload = RandomBytes(10000, 1);
  const std::string src = MakeSource(tmp / "src.bin", std::string(37, 'h'), payload + "TRAILER");
  Fd fd(src);
  IngestResult r = s.IngestRange(fd.get(), src, 37, payload.size(), nullptr);
  EXPECT_FALSE(r.zeros);
  EXPECT_TRUE(r.wrote);
  EXPECT_EQ(r.blob.Hex(), Xxh3Hex(payload));
  EXPECT_EQ(ReadText(s.BlobPath(r.blob)), payload);
  EXPECT_EQ(FilesUnder(tmp / "store/blobs").size(), 1u);
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());

  // The same bytes again (here: from another file) are already stored.
  const std::string src2 = MakeSource(tmp / "src2.bin", "", payload);
  Fd fd2(src2);
  IngestResult again = s.IngestRange(fd2.get(), src2, 0, payload.size(), nullptr);
  EXPECT_FALSE(again.zeros);
  EXPECT_FALSE(again.wrote);
  EXPECT_EQ(again.blob, r.blob);
  EXPECT_EQ(FilesUnder(tmp / "store/blobs").size(), 1u);
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
}

TEST(StoreIngest, MostlyZeroRangeIsNotZeros) {
  // One non-zero byte at the very end must still produce a blob.
  ScopedTempDir tmp;
  Store s(tmp / "store");
  std::string payload(4099, '\0');
  payload.back() = 1;
  const std::string src = MakeSource(tmp / "src.bin", "", payload);
  Fd fd(src);
  IngestResult r = s.IngestRange(fd.get(), src, 0, payload.size(), nullptr);
  EXPECT_FALSE(r.zeros);
  EXPECT_EQ(r.blob.Hex(), Xxh3Hex(payload));
}

TEST(StoreIngest, RangeLargerThanOneChunk) {
  // Over the 8 MiB streaming buffer: hashing across chunks must equal the
  // one-shot hash of the whole range.
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string payload = RandomBytes((9u << 20) + 13, 3);
  const std::string src = MakeSource(tmp / "src.bin", "xy", payload);
  Fd fd(src);
  std::atomic<uint64_t> progress{0};
  IngestResult r = s.IngestRange(fd.get(), src, 2, payload.size(), &progress);
  EXPECT_EQ(r.blob.Hex(), Xxh3Hex(payload));
  EXPECT_EQ(progress.load(), payload.size());
  EXPECT_TRUE(ReadText(s.BlobPath(r.blob)) == payload);
}

TEST(StoreIngest, ShortFileThrowsAndLeavesNothing) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string src = MakeSource(tmp / "src.bin", "", RandomBytes(100, 4));
  Fd fd(src);
  ErrorOf([&] { s.IngestRange(fd.get(), src, 50, 100, nullptr); });
  EXPECT_TRUE(FilesUnder(tmp / "store/blobs").empty());
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
}

TEST(StoreIngest, WriteFailureLeavesNoFile) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string payload = RandomBytes(4096, 5);
  const std::string src = MakeSource(tmp / "src.bin", "", payload);
  Fd fd(src);
  {
    testutil::ScopedWriteBudget budget(100);
    std::string msg = ErrorOf([&] { s.IngestRange(fd.get(), src, 0, payload.size(), nullptr); });
    EXPECT_THAT(msg, HasSubstr("No space left"));
  }
  EXPECT_TRUE(FilesUnder(tmp / "store/blobs").empty());
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
  // With the budget lifted the same ingest succeeds.
  IngestResult r = s.IngestRange(fd.get(), src, 0, payload.size(), nullptr);
  EXPECT_TRUE(r.wrote);
  EXPECT_EQ(r.blob.Hex(), Xxh3Hex(payload));
}

TEST(StoreIngest, PutBlobWriteFailureLeavesNoFile) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  {
    testutil::ScopedWriteBudget budget(3);
    ErrorOf([&] { s.PutBlob("more than three bytes"); });
    ErrorOf([&] { s.PutNode(Json{{"kind", "x"}}); });
  }
  EXPECT_TRUE(FilesUnder(tmp / "store/blobs").empty());
  EXPECT_TRUE(FilesUnder(tmp / "store/nodes").empty());
  EXPECT_TRUE(FilesUnder(tmp / "store/tmp").empty());
}

// ---------------------------------------------------------------------------
// Source cache

TEST(StoreSourceCache, RoundTrip) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  const std::string payload = RandomBytes(256, 6);
  const std::string src = MakeSource(tmp / "model.safetensors", std::string(8, 'h'), payload);
  FileIdentity id = IdentifyFile(src);
  Fd fd(src);
  IngestResult blob = s.IngestRange(fd.get(), src, 8, 256, nullptr);
  IngestResult zeros;
  zeros.zeros = true;
  EXPECT_EQ(s.LookupSource(id, 8, 256), std::nullopt);
  s.RecordSources(id, {{{8, 256}, blob}, {{264, 64}, zeros}});

  auto hit = s.LookupSource(id, 8, 256);
  ASSERT_TRUE(hit.has_value());
  EXPECT_FALSE(hit->zeros);
  EXPECT_EQ(hit->blob, blob.blob);
  EXPECT_FALSE(hit->wrote);
  auto zhit = s.LookupSource(id, 264, 64);
  ASSERT_TRUE(zhit.has_value());
  EXPECT_TRUE(zhit->zeros);
  // Another range of the same file is a miss.
  EXPECT_EQ(s.LookupSource(id, 8, 255), std::nullopt);
  EXPECT_EQ(s.LookupSource(id, 0, 256), std::nullopt);

  // The entry lives where the format says: keyed by the identity string.
  const std::string key = Xxh3Hex(id.Key());
  const std::string entry = tmp / "store" + "/cache/sources/" + key.substr(0, 2) + "/" + key;
  ASSERT_TRUE(fs::exists(entry));
  Json j = Json::parse(ReadText(entry));
  EXPECT_EQ(j["identity"], id.Key());
  EXPECT_EQ(j["tensors"]["8:256"]["blob"], blob.blob.Hex());
  EXPECT_EQ(j["tensors"]["264:64"]["zeros"], true);
}

TEST(StoreSourceCache, RecordsMerge) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  FileIdentity id{1, 2, 3, 4};
  IngestResult z;
  z.zeros = true;
  s.RecordSources(id, {{{0, 8}, z}});
  s.RecordSources(id, {{{8, 8}, z}});
  EXPECT_TRUE(s.LookupSource(id, 0, 8).has_value());
  EXPECT_TRUE(s.LookupSource(id, 8, 8).has_value());
}

TEST(StoreSourceCache, MissWhenIdentityDiffers) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  FileIdentity id{2049, 1234, 4096, 1700000000000000000};
  Hash h = s.PutBlob("cached tensor bytes");
  IngestResult r;
  r.blob = h;
  s.RecordSources(id, {{{0, 19}, r}});
  ASSERT_TRUE(s.LookupSource(id, 0, 19).has_value());
  for (FileIdentity other : {FileIdentity{2049, 1234, 4096, 1700000000000000001},
                             FileIdentity{2049, 1235, 4096, 1700000000000000000},
                             FileIdentity{2049, 1234, 4097, 1700000000000000000},
                             FileIdentity{2050, 1234, 4096, 1700000000000000000}})
    EXPECT_EQ(s.LookupSource(other, 0, 19), std::nullopt) << other.Key();
}

TEST(StoreSourceCache, MissWhenBlobDeleted) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  FileIdentity id{7, 8, 9, 10};
  Hash h = s.PutBlob("soon gone");
  IngestResult r;
  r.blob = h;
  s.RecordSources(id, {{{0, 9}, r}});
  ASSERT_TRUE(s.LookupSource(id, 0, 9).has_value());
  fs::remove(s.BlobPath(h));
  EXPECT_EQ(s.LookupSource(id, 0, 9), std::nullopt);
}

TEST(StoreSourceCache, DamagedEntryIsAMiss) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  FileIdentity id{7, 8, 9, 10};
  IngestResult z;
  z.zeros = true;
  s.RecordSources(id, {{{0, 9}, z}});
  const std::string key = Xxh3Hex(id.Key());
  WriteText(tmp / "store" + "/cache/sources/" + key.substr(0, 2) + "/" + key, "{not json");
  EXPECT_EQ(s.LookupSource(id, 0, 9), std::nullopt);
}

// ---------------------------------------------------------------------------
// Usage

TEST(StoreUsageTest, CountsBlobsAndNodes) {
  ScopedTempDir tmp;
  Store s(tmp / "store");
  s.PutBlob("12345");
  s.PutBlob("1234567890");
  s.PutNode(Json{{"kind", "k"}});  // {"kind":"k"} = 12 bytes
  Store::Usage u = s.DiskUsage();
  EXPECT_EQ(u.blob_count, 2u);
  EXPECT_EQ(u.blob_bytes, 15u);
  EXPECT_EQ(u.node_count, 1u);
  EXPECT_EQ(u.node_bytes, 12u);
}

}  // namespace
}  // namespace strata
