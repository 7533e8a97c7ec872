// The content-addressed store (see formats/STORE_FORMAT.md).
#include "strata/formats/store.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <set>
#include <vector>

#include "strata/formats/error.h"

namespace strata {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kMarker = "strata-store ";
constexpr size_t kIngestChunk = 8u << 20;

std::string FanOut(const std::string& dir, const std::string& hex) {
  return dir + "/" + hex.substr(0, 2) + "/" + hex;
}

bool AllZero(const char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    if (v) return false;
  }
  for (; i < n; ++i)
    if (p[i]) return false;
  return true;
}

// True when every entry of `dir` is one a store has: another strata is creating
// the store right now, or one was interrupted while creating it.
bool OnlyStoreEntries(const std::string& dir) {
  static const std::set<std::string> kNames = {"STORE", "blobs", "nodes", "refs", "cache", "tmp", "lock"};
  for (const auto& e : fs::directory_iterator(dir))
    if (!kNames.count(e.path().filename().string())) return false;
  return true;
}

}  // namespace

std::string Store::DefaultRoot(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* s = std::getenv("STRATA_STORE"); s && *s) return s;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.cache/strata";
}

Store::Store(std::string root, bool create) : root_(std::move(root)) {
  std::string marker = root_ + "/STORE";
  if (FileExists(marker)) {
    std::string text = ReadFile(marker);
    if (!std::string_view(text).starts_with(kMarker))
      throw Error(marker + ": not a strata store marker");
    int version = std::atoi(text.c_str() + kMarker.size());
    version_ = version;
    if (version < 1 || version > kStoreFormatVersion)
      throw Error(root_ + ": store format version " + std::to_string(version) +
                  " was written by a " + (version > kStoreFormatVersion ? "newer" : "different") +
                  " strata; this one reads versions 1 to " + std::to_string(kStoreFormatVersion) +
                  ". Upgrade strata or use another --store.");
  } else {
    if (!create) throw Error(root_ + ": no strata store here (no STORE file); compile a plan into it first");
    if (fs::exists(root_) && !fs::is_empty(root_) && !OnlyStoreEntries(root_))
      throw Error(root_ + ": exists and is not a strata store; choose an empty directory with --store");
    MakeDirs(root_);
    for (const char* d : {"blobs", "nodes", "refs", "cache/sources", "tmp"}) MakeDirs(root_ + "/" + d);
    try {
      WriteFileAtomically(marker, std::string(kMarker) + "1\n", root_ + "/tmp");
    } catch (const Error&) {
      if (!FileExists(marker)) throw;  // a concurrent creator wrote the same marker first
    }
  }
  for (const char* d : {"blobs", "nodes", "refs", "cache/sources", "tmp"})
    if (!fs::is_directory(root_ + "/" + d)) MakeDirs(root_ + "/" + d);
}

std::string Store::BlobPath(const Hash& h) const { return FanOut(root_ + "/blobs", h.Hex()); }
std::string Store::NodePath(const Hash& h) const { return FanOut(root_ + "/nodes", h.Hex()); }
void Store::RequireObjectFile(const std::string& what, const std::string& path) {
  std::string problem;
  switch (StatPath(path, &problem)) {
    case PathState::kFile: return;
    case PathState::kMissing:
      throw Error(what + " is missing from the store (" + path + "); run `strata verify`");
    default:
      throw Error(what + " cannot be read: " + problem);
  }
}

bool Store::HasBlob(const Hash& h) const { return FileExists(BlobPath(h)); }
bool Store::HasNode(const Hash& h) const { return FileExists(NodePath(h)); }

IngestResult Store::IngestRange(int fd, const std::string& what, uint64_t offset, uint64_t n,
                                std::atomic<uint64_t>* progress) {
  std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(std::max<uint64_t>(n, 1), kIngestChunk)));
  Hasher hasher;
  bool zeros = true;
  AtomicFile out(TmpDir() + "/blob", TmpDir());
  for (uint64_t done = 0; done < n;) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(n - done, buf.size()));
    PreadExact(fd, buf.data(), k, offset + done, what);
    hasher.Update(buf.data(), k);
    zeros = zeros && AllZero(buf.data(), k);
    out.file().Append(buf.data(), k);
    DropCache(fd, offset + done, k);
    done += k;
    if (progress) *progress += k;
  }
  IngestResult r;
  if (zeros) {
    r.zeros = true;  // the temporary is removed by ~AtomicFile
    return r;
  }
  r.blob = hasher.Finish();
  std::string path = BlobPath(r.blob);
  if (FileExists(path)) return r;
  MakeDirs(fs::path(path).parent_path().string());
  out.file().MakeReadOnly();
  r.wrote = out.CommitTo(path, /*keep_existing=*/true);
  return r;
}

// Writes a content-addressed object once: read-only, linked into place so an
// existing copy (the same bytes by construction) is kept.
bool Store::WriteObject(const std::string& path, std::string_view bytes) const {
  if (FileExists(path)) return false;
  MakeDirs(fs::path(path).parent_path().string());
  AtomicFile out(path, TmpDir());
  out.file().Append(bytes);
  out.file().MakeReadOnly();
  return out.Commit(/*keep_existing=*/true);
}

Hash Store::PutBlob(std::string_view bytes, bool* wrote) {
  Hash h = HashBytes(bytes);
  const bool w = WriteObject(BlobPath(h), bytes);
  if (wrote) *wrote = w;
  return h;
}

std::string Store::ReadBlob(const Hash& h) const {
  std::string path = BlobPath(h);
  RequireObjectFile("blob " + h.Hex(), path);
  std::string bytes = ReadFile(path);
  if (HashBytes(bytes) != h)
    throw Error("blob " + h.Hex() + " is corrupt: its bytes hash to " + HashBytes(bytes).Hex() +
                " (" + path + "); run `strata verify`");
  return bytes;
}

Hash Store::PutNode(const Json& node) {
  std::string bytes = node.dump();
  Hash h = HashBytes(bytes);
  WriteObject(NodePath(h), bytes);
  return h;
}

Json Store::GetNode(const Hash& h) const {
  std::string path = NodePath(h);
  RequireObjectFile("node " + h.Hex(), path);
  std::string bytes = ReadFile(path);
  if (HashBytes(bytes) != h)
    throw Error("node " + h.Hex() + " is corrupt: its bytes do not match its name (" + path +
                "); run `strata verify`");
  try {
    Json j = Json::parse(bytes);
    if (!j.is_object() || !j.contains("kind")) throw Error("no kind");
    return j;
  } catch (const std::exception& e) {
    throw Error("node " + h.Hex() + " is not a valid node (" + path + "): " + e.what());
  }
}

bool Store::ValidRefName(const std::string& name) {
  static const std::regex re("[A-Za-z0-9][A-Za-z0-9._-]{0,127}");
  return std::regex_match(name, re);
}

void Store::SetRef(const std::string& name, const Hash& variant) {
  if (!ValidRefName(name))
    throw Error("\"" + name + "\" is not a valid variant name: use letters, digits, '.', '_' and '-' "
                "(at most 128, starting with a letter or digit)");
  WriteFileAtomically(root_ + "/refs/" + name, variant.Hex() + "\n", TmpDir());
}

std::optional<Hash> Store::GetRef(const std::string& name) const {
  if (!ValidRefName(name)) return std::nullopt;
  std::string path = root_ + "/refs/" + name;
  if (!FileExists(path)) return std::nullopt;
  std::string text = ReadFile(path);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  auto h = Hash::FromHex(text);
  if (!h) throw Error("ref " + name + " is damaged (" + path + " does not hold a node hash); run `strata verify`");
  return h;
}

Hash Store::ResolveRef(const std::string& name) const {
  if (auto h = GetRef(name)) return *h;
  std::string known;
  for (const auto& r : ListRefs()) known += (known.empty() ? "" : ", ") + r;
  throw Error("no variant named \"" + name + "\" in store " + root_ +
              (known.empty() ? " (it holds no variants; run `strata compile PLAN` first)"
                             : " (variants: " + known + ")"));
}

std::vector<std::string> Store::ListRefs() const {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(root_ + "/refs"))
    if (e.is_regular_file() && ValidRefName(e.path().filename().string()))
      out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool Store::RemoveRef(const std::string& name) {
  if (!ValidRefName(name)) return false;
  std::error_code ec;
  bool removed = fs::remove(root_ + "/refs/" + name, ec);
  if (ec) throw Error("cannot remove ref " + root_ + "/refs/" + name + ": " + ec.message());
  if (removed) SyncDir(root_ + "/refs");
  return removed;
}

std::string Store::SourceCachePath(const FileIdentity& id) const {
  return FanOut(root_ + "/cache/sources", HashBytes(id.Key()).Hex());
}

Json Store::ReadSourceCache(const std::string& path) const {
  if (!FileExists(path)) return Json::object();
  try {
    Json j = Json::parse(ReadFile(path));
    if (j.is_object() && j.contains("tensors") && j["tensors"].is_object() && j.contains("identity") &&
        j["identity"].is_string())
      return j;
  } catch (const std::exception&) {
  }
  return Json::object();  // a damaged cache entry is only a miss
}

namespace {
std::string SourceCacheKey(uint64_t offset, uint64_t n, std::string_view transform) {
  std::string key = std::to_string(offset) + ":" + std::to_string(n);
  if (!transform.empty()) {
    key += ':';
    key += transform;
  }
  return key;
}
}  // namespace

std::optional<IngestResult> Store::LookupSource(const FileIdentity& id, uint64_t offset, uint64_t n,
                                                std::string_view transform) const {
  Json j = ReadSourceCache(SourceCachePath(id));
  if (!j.contains("tensors") || j["identity"] != id.Key()) return std::nullopt;
  const std::string key = SourceCacheKey(offset, n, transform);
  auto it = j["tensors"].find(key);
  if (it == j["tensors"].end() || !it->is_object()) return std::nullopt;
  IngestResult r;
  // Compared, not converted: a damaged entry is only a miss.
  if (it->contains("zeros") && (*it)["zeros"] == true) {
    r.zeros = true;
    return r;
  }
  auto h = it->contains("blob") && (*it)["blob"].is_string() ? Hash::FromHex((*it)["blob"].get<std::string>())
                                                            : std::nullopt;
  if (!h || !HasBlob(*h)) return std::nullopt;
  r.blob = *h;
  return r;
}

void Store::RecordSources(const FileIdentity& id,
                          const std::vector<std::pair<SourceRangeKey, IngestResult>>& entries) {
  if (entries.empty()) return;
  std::string path = SourceCachePath(id);
  Json j = ReadSourceCache(path);
  if (!j.contains("identity") || j["identity"] != id.Key()) j = Json::object();
  j["identity"] = id.Key();
  if (!j.contains("tensors")) j["tensors"] = Json::object();
  for (const auto& [range, r] : entries) {
    const std::string key = SourceCacheKey(range.offset, range.n, range.transform);
    j["tensors"][key] = r.zeros ? Json{{"zeros", true}} : Json{{"blob", r.blob.Hex()}};
  }
  MakeDirs(fs::path(path).parent_path().string());
  WriteFileAtomically(path, j.dump(), TmpDir());
}

void Store::RequireVersion(int version) {
  if (version_ >= version) return;
  WriteFileAtomically(root_ + "/STORE", std::string(kMarker) + std::to_string(version) + "\n", TmpDir());
  version_ = version;
}

std::string Store::QuantCachePath(const Hash& src, std::string_view type) const {
  return FanOut(root_ + "/cache/quant", HashBytes(src.Hex() + ":" + std::string(type)).Hex());
}

std::optional<Hash> Store::LookupQuant(const Hash& src, std::string_view type) const {
  const std::string path = QuantCachePath(src, type);
  if (!FileExists(path)) return std::nullopt;
  try {
    const Json j = Json::parse(ReadFile(path));
    if (!j.is_object() || j.value("src", "") != src.Hex() || j.value("type", "") != type) return std::nullopt;
    auto node = Hash::FromHex(j.value("node", ""));
    auto blob = Hash::FromHex(j.value("blob", ""));
    if (!node || !blob || !HasNode(*node) || !HasBlob(*blob)) return std::nullopt;
    return node;
  } catch (const std::exception&) {
    return std::nullopt;  // damaged: a miss
  }
}

void Store::RecordQuant(const Hash& src, std::string_view type, const Hash& node) {
  const Json n = GetNode(node);
  const Json j{{"src", src.Hex()}, {"type", std::string(type)}, {"node", node.Hex()}, {"blob", n.value("blob", "")}};
  const std::string path = QuantCachePath(src, type);
  MakeDirs(fs::path(path).parent_path().string());
  WriteFileAtomically(path, j.dump(), TmpDir());
}

std::string Store::MaterializedCachePath(const Hash& node) const { return FanOut(MaterializedCacheDir(), node.Hex()); }

std::optional<Hash> Store::LookupMaterialized(const Hash& node, uint64_t nbytes) const {
  const std::string path = MaterializedCachePath(node);
  if (!FileExists(path)) return std::nullopt;
  try {
    const Json j = Json::parse(ReadFile(path));
    if (!j.is_object() || j.value("node", "") != node.Hex() || !j.contains("bytes") || !j["bytes"].is_number_unsigned() ||
        j["bytes"].get<uint64_t>() != nbytes)
      return std::nullopt;
    auto blob = Hash::FromHex(j.value("blob", ""));
    if (!blob) return std::nullopt;
    struct stat st;
    const std::string bp = BlobPath(*blob);
    if (stat(bp.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != nbytes)
      return std::nullopt;
    return blob;
  } catch (const std::exception&) {
    return std::nullopt;  // damaged: a miss
  }
}

void Store::RecordMaterialized(const Hash& node, const Hash& blob, uint64_t nbytes) {
  const Json j{{"node", node.Hex()}, {"blob", blob.Hex()}, {"bytes", nbytes}};
  const std::string path = MaterializedCachePath(node);
  MakeDirs(fs::path(path).parent_path().string());
  WriteFileAtomically(path, j.dump(), TmpDir());
}

Store::Usage Store::DiskUsage() const {
  Usage u;
  for (const auto& [dir, bytes, count] :
       {std::tuple{"/blobs", &u.blob_bytes, &u.blob_count},
        std::tuple{"/nodes", &u.node_bytes, &u.node_count}}) {
    for (const auto& e : fs::recursive_directory_iterator(root_ + dir)) {
      if (!e.is_regular_file()) continue;
      *bytes += e.file_size();
      ++*count;
    }
  }
  return u;
}

}  // namespace strata
