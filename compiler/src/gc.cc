// strata rm and strata gc: refs go at once; objects go when gc finds that no
// ref reaches them.
#include "strata/compiler/gc.h"

#include <chrono>
#include <filesystem>
#include <map>
#include <set>

#include "store_graph.h"
#include "strata/formats/error.h"

namespace strata {

namespace fs = std::filesystem;

namespace {

// Everything reachable from the refs.
struct Live {
  std::set<Hash> nodes, blobs;
};

Hash RefTarget(const Store& store, const std::string& name) {
  try {
    if (auto h = store.GetRef(name)) return *h;
  } catch (const Error&) {
  }
  throw Error("gc removed nothing: ref " + name + " is damaged, so what it keeps alive is unknown; run "
              "`strata verify`, then `strata rm " + name + "` or recompile it with --force");
}

Live Mark(const Store& store) {
  Live live;
  std::vector<Hash> stack;
  for (const std::string& name : store.ListRefs()) stack.push_back(RefTarget(store, name));
  while (!stack.empty()) {
    Hash h = stack.back();
    stack.pop_back();
    if (!live.nodes.insert(h).second) continue;
    std::optional<graph::ParsedNode> n;
    try {
      n = graph::ReadNode(store, h);
    } catch (const Error& e) {
      throw Error(std::string("gc removed nothing: ") + e.what() +
                  "; a damaged node hides what it references. Run `strata verify` and remove the variants it "
                  "breaks with `strata rm` (or repair them) first");
    }
    // One rule for a missing node and a damaged one: what it keeps alive is
    // unknown, so nothing is removed.
    if (!n)
      throw Error("gc removed nothing: node " + h.Hex() + ", which a variant uses, is missing, so what it keeps "
                  "alive is unknown. Run `strata verify` and remove the variants it breaks with `strata rm` (or "
                  "compile them again) first");
    for (const graph::Edge& e : n->edges) {
      if (e.blob) live.blobs.insert(e.hash);
      else stack.push_back(e.hash);
    }
    // What `strata materialize` stored for a live derived node stays.
    if (n->derived_bytes)
      if (auto b = store.LookupMaterialized(h, *n->derived_bytes)) live.blobs.insert(*b);
  }
  return live;
}

// Dead nodes in an order where a node goes before every dead node it names, so
// a gc interrupted half-way leaves no node that names a missing object.
std::vector<graph::ObjectFile> SweepOrder(const Store& store, std::vector<graph::ObjectFile> dead) {
  std::map<Hash, size_t> index;
  for (size_t i = 0; i < dead.size(); ++i) index[dead[i].hash] = i;
  std::vector<std::vector<size_t>> named(dead.size());
  std::vector<int> referrers(dead.size(), 0);
  for (size_t i = 0; i < dead.size(); ++i) {
    std::optional<graph::ParsedNode> n;
    try {
      n = graph::ReadNode(store, dead[i].hash);
    } catch (const Error&) {
      continue;  // a damaged dead node names nothing we can trust; it just goes
    }
    if (!n) continue;
    for (const graph::Edge& e : n->edges)
      if (auto it = index.find(e.hash); !e.blob && it != index.end() && it->second != i) {
        named[i].push_back(it->second);
        ++referrers[it->second];
      }
  }
  std::vector<size_t> ready;
  for (size_t i = 0; i < dead.size(); ++i)
    if (referrers[i] == 0) ready.push_back(i);
  std::vector<graph::ObjectFile> out;
  while (!ready.empty()) {
    size_t i = ready.back();
    ready.pop_back();
    out.push_back(dead[i]);
    for (size_t j : named[i])
      if (--referrers[j] == 0) ready.push_back(j);
  }
  // Content addressing makes cycles impossible; anything left would be one.
  for (size_t i = 0; i < dead.size(); ++i)
    if (referrers[i] > 0) out.push_back(dead[i]);
  return out;
}

class Collector {
 public:
  Collector(Store& store, const GcOptions& opts) : store_(store), opts_(opts) {}
  GcReport Run();

 private:
  void Remove(const std::string& kind, const graph::ObjectFile& f);
  void SweepNodes();
  void SweepBlobs();
  void SweepTmp();
  void PruneSourceCache();
  void PruneMaterializedCache();
  bool PruneCacheFile(const std::string& path);

  Store& store_;
  const GcOptions& opts_;
  Live live_;
  std::set<Hash> blobs_left_;  // blobs present after the sweep
  GcReport report_;
};

void Collector::Remove(const std::string& kind, const graph::ObjectFile& f) {
  if (!opts_.dry_run) {
    std::error_code ec;
    fs::remove(f.path, ec);
    if (ec)
      throw Error("cannot remove " + f.path + ": " + ec.message() +
                  "; gc stopped, the store is consistent: fix the cause and run gc again");
  }
  report_.removed.push_back({kind, kind == "tmp" ? "" : f.hash.Hex(), graph::RelPath(store_, f.path), f.size});
}

void Collector::SweepNodes() {
  std::vector<graph::ObjectFile> dead;
  for (graph::ObjectFile& f : graph::ListObjects(store_.root() + "/nodes", nullptr)) {
    if (live_.nodes.count(f.hash)) {
      ++report_.kept_nodes;
      continue;
    }
    dead.push_back(std::move(f));
  }
  for (const graph::ObjectFile& f : SweepOrder(store_, std::move(dead))) {
    Remove("node", f);
    ++report_.nodes;
    report_.node_bytes += f.size;
  }
}

void Collector::SweepBlobs() {
  for (const graph::ObjectFile& f : graph::ListObjects(store_.root() + "/blobs", nullptr)) {
    if (live_.blobs.count(f.hash)) {
      ++report_.kept_blobs;
      blobs_left_.insert(f.hash);
      continue;
    }
    Remove("blob", f);
    ++report_.blobs;
    report_.blob_bytes += f.size;
  }
}

// Temporaries of writers that died (kill -9, power loss). The lock already
// keeps compiles out; the grace period also spares writers that do not lock.
void Collector::SweepTmp() {
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::seconds(opts_.grace_s);
  for (const auto& e : fs::directory_iterator(store_.TmpDir())) {
    std::error_code ec;
    if (!e.is_regular_file(ec) || e.last_write_time(ec) > cutoff || ec) continue;
    graph::ObjectFile f{Hash{}, e.path().string(), e.file_size(ec)};
    if (ec) continue;  // gone meanwhile
    Remove("tmp", f);
    ++report_.tmp_files;
    report_.tmp_bytes += f.size;
  }
}

// Drops the entries of one source-cache file whose blob is not in the store any
// more (a lookup would only miss on them); returns true when the file changed.
bool Collector::PruneCacheFile(const std::string& path) {
  Json j;
  try {
    j = Json::parse(ReadFile(path));
  } catch (const std::exception&) {
    j = Json();  // unreadable: only ever a miss, so it goes
  }
  if (!j.is_object() || !j.contains("tensors") || !j["tensors"].is_object()) {
    if (!opts_.dry_run) fs::remove(path);
    return true;
  }
  std::vector<std::string> drop;
  for (auto& [key, entry] : j["tensors"].items()) {
    if (!entry.is_object() || (entry.contains("zeros") && entry["zeros"] == true)) continue;
    auto h = entry.contains("blob") && entry["blob"].is_string() ? Hash::FromHex(entry["blob"].get<std::string>())
                                                                 : std::nullopt;
    if (!h || !blobs_left_.count(*h)) drop.push_back(key);
  }
  if (drop.empty()) return false;
  report_.cache_entries += drop.size();
  if (opts_.dry_run) return true;
  for (const std::string& key : drop) j["tensors"].erase(key);
  if (j["tensors"].empty()) fs::remove(path);
  else WriteFileAtomically(path, j.dump(), store_.TmpDir());
  return true;
}

void Collector::PruneSourceCache() {
  const std::string dir = store_.root() + "/cache/sources";
  if (!fs::is_directory(dir)) return;
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path().string());
  for (const std::string& path : files)
    if (PruneCacheFile(path)) ++report_.cache_files;
}

// Entries of the materialized cache whose node is gone, whose blob is gone, or
// that are damaged (a lookup would only miss on them).
void Collector::PruneMaterializedCache() {
  const std::string dir = store_.MaterializedCacheDir();
  if (!fs::is_directory(dir)) return;
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path().string());
  for (const std::string& path : files) {
    bool keep = false;
    try {
      const Json j = Json::parse(ReadFile(path));
      auto node = Hash::FromHex(j.value("node", ""));
      auto blob = Hash::FromHex(j.value("blob", ""));
      keep = node && blob && store_.MaterializedCachePath(*node) == path && live_.nodes.count(*node) &&
             blobs_left_.count(*blob);
    } catch (const std::exception&) {
      keep = false;  // unreadable: only ever a miss
    }
    if (keep) continue;
    if (!opts_.dry_run) fs::remove(path);
    ++report_.cache_entries;
    ++report_.cache_files;
  }
}

GcReport Collector::Run() {
  FileLock lock(store_.LockPath(), /*exclusive=*/true, opts_.on_lock_wait);
  live_ = Mark(store_);
  SweepNodes();  // nodes first: an interrupted gc leaves no node naming a missing blob
  SweepBlobs();
  SweepTmp();
  PruneSourceCache();
  PruneMaterializedCache();
  return std::move(report_);
}

}  // namespace

Json GcReport::ToJson(bool dry_run) const {
  Json list = Json::array();
  for (const GcRemoved& r : removed)
    list.push_back(Json{{"kind", r.kind}, {"hash", r.hash.empty() ? Json(nullptr) : Json(r.hash)},
                        {"path", r.path}, {"bytes", r.bytes}});
  return Json{{"dry_run", dry_run},     {"bytes_freed", BytesFreed()}, {"blobs", blobs},
              {"blob_bytes", blob_bytes}, {"nodes", nodes},              {"node_bytes", node_bytes},
              {"tmp_files", tmp_files},   {"tmp_bytes", tmp_bytes},      {"kept_blobs", kept_blobs},
              {"kept_nodes", kept_nodes}, {"cache_entries", cache_entries}, {"cache_files", cache_files},
              {"removed", list}};
}

GcReport CollectGarbage(Store& store, const GcOptions& opts) { return Collector(store, opts).Run(); }

void RemoveVariants(Store& store, const std::vector<std::string>& names) {
  // A damaged ref can be removed too: that is how verify's advice is followed.
  for (const std::string& name : names)
    if (!Store::ValidRefName(name) || !FileExists(store.root() + "/refs/" + name))
      store.ResolveRef(name);  // throws, listing the variants
  for (const std::string& name : names) store.RemoveRef(name);
}

}  // namespace strata
