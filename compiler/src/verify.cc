// strata verify: walk the store's graph from its refs, check every node, size
// and rehash every blob in parallel, and name the variants each damage breaks.
#include "strata/compiler/verify.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <map>
#include <set>
#include <tuple>

#include "store_graph.h"
#include "strata/formats/error.h"
#include "strata/formats/materialize.h"
#include "strata/formats/variant_check.h"

namespace strata {

namespace fs = std::filesystem;

namespace {

constexpr size_t kRehashChunk = 8u << 20;

// A node still to check, and who pointed at it (for messages and kind checks).
struct Pending {
  Hash hash;
  std::string want;  // expected kind; "" for nodes found by listing nodes/
  std::string from;  // "ref NAME" or "<kind> node <hash>"; "" when listed
  std::string from_key;  // damage key of the referrer ("" for none)
};

// What a blob must be, learned from the nodes that reference it.
struct BlobUse {
  std::string from;                // first referrer, for "missing" messages
  std::optional<uint64_t> bytes;   // the size a tensor node needs
  std::string bytes_from;          // that tensor node
};

std::string Key(const std::string& kind, const std::string& id) { return kind + ":" + id; }

// Streams the file through XXH3-128 with one bounded buffer.
Hash RehashFile(const std::string& path, uint64_t size, std::atomic<uint64_t>* progress) {
  std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(std::max<uint64_t>(size, 1), kRehashChunk)));
  Hasher hasher;
  int fd = OpenReadOnly(path);
  try {
    for (uint64_t done = 0; done < size;) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(size - done, buf.size()));
      PreadExact(fd, buf.data(), k, done, path);
      hasher.Update(buf.data(), k);
      done += k;
      if (progress) *progress += k;
    }
  } catch (...) {
    CloseFd(fd);
    throw;
  }
  CloseFd(fd);
  return hasher.Finish();
}

class Verifier {
 public:
  Verifier(const Store& store, const VerifyOptions& opts) : store_(store), opts_(opts) {}
  VerifyReport Run();

 private:
  void AddDamage(const std::string& kind, const std::string& hash, const std::string& path,
                 const std::string& problem, const std::string& key);
  void CheckRefs();
  void CheckRef(const std::string& name);
  void Walk();
  void CheckNode(const Pending& p);
  void CheckKind(const Pending& p, const std::string& kind);
  void FollowEdges(const Hash& h, const graph::ParsedNode& n);
  void ListStore();
  void CheckBlobs();
  void CheckBlobSize(const Hash& h, const std::string& path, uint64_t size);
  void Rehash(const std::vector<std::pair<Hash, std::string>>& todo);
  void CheckChains();
  void CheckVariants();
  void FindBrokenVariants();

  const Store& store_;
  const VerifyOptions& opts_;
  VerifyReport report_;
  std::map<std::string, Damage> damage_;            // by key: "blob:<h>", "node:<h>", "ref:<name>"
  std::vector<std::pair<std::string, Hash>> roots_;  // ref name -> variant node
  std::deque<Pending> queue_;
  std::map<Hash, std::string> node_kind_;            // checked nodes; "" when damaged
  std::map<Hash, std::vector<graph::Edge>> edges_;   // of valid nodes
  std::map<Hash, TensorNode> tensors_;               // valid tensor nodes
  std::map<Hash, BlobUse> blob_uses_;
  std::map<Hash, std::pair<std::string, uint64_t>> blob_files_;  // blobs to check: path, size
};

void Verifier::AddDamage(const std::string& kind, const std::string& hash, const std::string& path,
                         const std::string& problem, const std::string& key) {
  auto [it, inserted] = damage_.try_emplace(key, Damage{kind, hash, graph::RelPath(store_, path), problem, {}});
  if (!inserted && it->second.problem.find(problem) == std::string::npos)
    it->second.problem += "; " + problem;
}

void Verifier::CheckRefs() {
  if (opts_.names.empty()) {
    for (const std::string& name : store_.ListRefs()) CheckRef(name);
    return;
  }
  for (const std::string& name : opts_.names) {
    std::string path = store_.root() + "/refs/" + name;
    if (!Store::ValidRefName(name) || !FileExists(path)) store_.ResolveRef(name);  // throws, listing the variants
    CheckRef(name);
  }
}

void Verifier::CheckRef(const std::string& name) {
  ++report_.refs;
  std::string path = store_.root() + "/refs/" + name;
  std::optional<Hash> h;
  try {
    h = store_.GetRef(name);
  } catch (const Error&) {
    AddDamage("ref", "", path, "does not hold a node hash", Key("ref", name));
    damage_[Key("ref", name)].variants.push_back(name);
    return;
  }
  if (!h) {
    AddDamage("ref", "", path, "vanished while verifying (removed by `strata rm`?)", Key("ref", name));
    return;
  }
  roots_.push_back({name, *h});
  queue_.push_back(Pending{*h, "variant", "ref " + name, Key("ref", name)});
}

void Verifier::Walk() {
  while (!queue_.empty()) {
    Pending p = std::move(queue_.front());
    queue_.pop_front();
    auto it = node_kind_.find(p.hash);
    if (it == node_kind_.end()) {
      CheckNode(p);
      it = node_kind_.find(p.hash);
    }
    CheckKind(p, it->second);
  }
}

// A reference to a valid node of another kind than the referrer needs damages
// the referrer (the node itself is fine; something else may use it rightly).
void Verifier::CheckKind(const Pending& p, const std::string& kind) {
  if (p.want.empty() || kind.empty() || kind == p.want) return;
  const std::string problem = "points at " + kind + " node " + p.hash.Hex() + ", which is not a " + p.want;
  if (p.from.starts_with("ref ")) {
    std::string name = p.from.substr(4);
    AddDamage("ref", p.hash.Hex(), store_.root() + "/refs/" + name, problem, p.from_key);
  } else {
    const std::string from_hex = p.from_key.substr(5);
    AddDamage("node", from_hex, store_.NodePath(*Hash::FromHex(from_hex)), problem, p.from_key);
  }
}

void Verifier::CheckNode(const Pending& p) {
  ++report_.nodes;
  node_kind_[p.hash] = "";
  const std::string path = store_.NodePath(p.hash), key = Key("node", p.hash.Hex());
  std::string problem;
  if (PathState state = StatPath(path, &problem); state != PathState::kFile) {
    AddDamage("node", p.hash.Hex(), path,
              state == PathState::kMissing ? "missing (referenced by " + p.from + ")" : "unreadable: " + problem,
              key);
    return;
  }
  std::string bytes;
  try {
    bytes = ReadFile(path);
  } catch (const Error& e) {
    AddDamage("node", p.hash.Hex(), path, std::string("unreadable: ") + e.what(), key);
    return;
  }
  if (Hash got = HashBytes(bytes); got != p.hash) {
    AddDamage("node", p.hash.Hex(), path, "its bytes hash to " + got.Hex() + ", not to its name", key);
    return;
  }
  try {
    Json j = Json::parse(bytes);
    if (!j.is_object()) throw Error("not a JSON object");
    graph::ParsedNode n = graph::ParseNode(store_, p.hash, j);
    node_kind_[p.hash] = n.kind;
    if (n.kind == "tensor") tensors_.emplace(p.hash, ParseTensorNode(j, p.hash));
    FollowEdges(p.hash, n);
  } catch (const std::exception& e) {
    AddDamage("node", p.hash.Hex(), path, std::string("not a valid node: ") + e.what(), key);
  }
}

void Verifier::FollowEdges(const Hash& h, const graph::ParsedNode& n) {
  const std::string from = n.kind + " node " + h.Hex(), from_key = Key("node", h.Hex());
  for (const graph::Edge& e : n.edges) {
    if (!e.blob) {
      queue_.push_back(Pending{e.hash, e.want, from, from_key});
      continue;
    }
    BlobUse& use = blob_uses_[e.hash];
    if (use.from.empty()) use.from = from;
    if (!e.bytes) continue;
    if (!use.bytes) {
      use.bytes = e.bytes;
      use.bytes_from = h.Hex();
    } else if (*use.bytes != *e.bytes) {
      AddDamage("node", h.Hex(), store_.NodePath(h),
                "needs blob " + e.hash.Hex() + " to be " + std::to_string(*e.bytes) + " bytes, but tensor node " +
                    use.bytes_from + " needs " + std::to_string(*use.bytes),
                from_key);
    }
  }
  edges_[h] = n.edges;
}

// The whole store: objects no variant reaches are checked too, and files in
// blobs/ or nodes/ that are not objects are damage (tmp/ is not looked at).
void Verifier::ListStore() {
  std::vector<std::string> stray;
  for (const graph::ObjectFile& f : graph::ListObjects(store_.root() + "/nodes", &stray))
    if (!node_kind_.count(f.hash)) queue_.push_back(Pending{f.hash, "", "", ""});
  Walk();
  for (const graph::ObjectFile& f : graph::ListObjects(store_.root() + "/blobs", &stray))
    blob_files_[f.hash] = {f.path, f.size};
  for (const std::string& path : stray) {
    bool in_blobs = graph::RelPath(store_, path).starts_with("blobs/");
    AddDamage(in_blobs ? "blob" : "node", "", path,
              "not a store object (its name is not a hash in its fan-out directory)", Key("stray", path));
  }
}

void Verifier::CheckBlobs() {
  for (const auto& [h, use] : blob_uses_) {
    if (blob_files_.count(h)) continue;
    std::string path = store_.BlobPath(h);
    std::error_code ec;
    uint64_t size = fs::file_size(path, ec);
    if (ec) {
      AddDamage("blob", h.Hex(), path, "missing (referenced by " + use.from + ")", Key("blob", h.Hex()));
      continue;
    }
    blob_files_[h] = {path, size};
  }
  std::vector<std::pair<Hash, std::string>> todo;
  for (const auto& [h, file] : blob_files_) {
    ++report_.blobs;
    report_.blob_bytes += file.second;
    CheckBlobSize(h, file.first, file.second);
    if (!opts_.quick && !damage_.count(Key("blob", h.Hex()))) todo.push_back({h, file.first});
  }
  Rehash(todo);
}

void Verifier::CheckBlobSize(const Hash& h, const std::string& path, uint64_t size) {
  auto it = blob_uses_.find(h);
  if (it == blob_uses_.end() || !it->second.bytes || *it->second.bytes == size) return;
  AddDamage("blob", h.Hex(), path,
            "is " + std::to_string(size) + " bytes, but tensor node " + it->second.bytes_from + " needs " +
                std::to_string(*it->second.bytes),
            Key("blob", h.Hex()));
}

// Parallel over blobs, largest first so the tail is short; each task holds one
// buffer of at most 8 MiB, so memory is bounded by threads x 8 MiB.
void Verifier::Rehash(const std::vector<std::pair<Hash, std::string>>& todo_in) {
  std::vector<std::pair<Hash, std::string>> todo = todo_in;
  std::sort(todo.begin(), todo.end(), [&](const auto& a, const auto& b) {
    return blob_files_.at(a.first).second > blob_files_.at(b.first).second;
  });
  uint64_t total = 0;
  for (const auto& [h, path] : todo) total += blob_files_.at(h).second;
  if (opts_.on_rehash_start) opts_.on_rehash_start(total);
  std::vector<std::string> problems(todo.size());
  tbb::parallel_for(size_t{0}, todo.size(), [&](size_t i) {
    const auto& [h, path] = todo[i];
    try {
      Hash got = RehashFile(path, blob_files_.at(h).second, opts_.bytes_done);
      if (got != h) problems[i] = "its bytes hash to " + got.Hex() + ", not to its name";
    } catch (const Error& e) {
      problems[i] = std::string("unreadable: ") + e.what();
    }
  });
  report_.rehashed_bytes = total;
  for (size_t i = 0; i < todo.size(); ++i)
    if (!problems[i].empty())
      AddDamage("blob", todo[i].first.Hex(), todo[i].second, problems[i], Key("blob", todo[i].first.Hex()));
}

// The readers' rules for chains of derived nodes (materialize.h): a derived
// node must fit its source, and no chain may be longer than kMaxTensorChain.
// Only the first node past the limit is damaged: every node above reaches it.
void Verifier::CheckChains() {
  // depth: derived nodes down to the deepest leaf, computed bottom-up with an
  // explicit stack (a hostile chain costs no native stack); missing or
  // damaged children count as leaves (they are reported already).
  std::map<Hash, int> depth;
  for (const auto& [top, unused] : tensors_) {
    std::vector<std::pair<Hash, bool>> stack{{top, false}};
    while (!stack.empty()) {
      auto [h, expanded] = stack.back();
      stack.pop_back();
      if (depth.count(h)) continue;
      const TensorNode& n = tensors_.at(h);
      if (!expanded) {
        stack.push_back({h, true});
        for (const Hash& c : n.Children())
          if (tensors_.count(c) && !depth.count(c)) stack.push_back({c, false});
        continue;
      }
      int below = 0;
      for (const Hash& c : n.Children()) {
        auto src = tensors_.find(c);
        if (src == tensors_.end()) continue;
        below = std::max(below, depth.at(c) + 1);
        if (std::string p = DerivedNodeProblem(n, src->second); !p.empty())
          AddDamage("node", h.Hex(), store_.NodePath(h), "cannot be computed from its source " + c.Hex() + ": " + p,
                    Key("node", h.Hex()));
      }
      if (n.op == TensorNode::Op::kMerge && n.merge->method->out_f32) {  // its inputs' dtype is not the node's
        std::set<DType> dtypes;
        for (const Hash& c : n.Children())
          if (auto src = tensors_.find(c); src != tensors_.end()) dtypes.insert(src->second.dtype);
        if (dtypes.size() > 1)
          AddDamage("node", h.Hex(), store_.NodePath(h), "merges inputs of different dtypes", Key("node", h.Hex()));
      }
      if (below == kMaxTensorChain + 1)
        AddDamage("node", h.Hex(), store_.NodePath(h),
                  "is the " + std::to_string(kMaxTensorChain + 1) + "th derived (scale/cast/merge) node of a chain; "
                  "strata reads chains of at most " + std::to_string(kMaxTensorChain),
                  Key("node", h.Hex()));
      depth[h] = below;
    }
  }
}

// Each valid variant against its architecture and config.json: a layer
// missing a role, no layers, a config that is not valid JSON.
void Verifier::CheckVariants() {
  TensorReader reader(store_);
  for (const auto& [h, kind] : node_kind_) {
    if (kind != "variant") continue;
    VariantCheck c;
    try {
      c = CheckVariant(store_, LoadVariant(store_, h), reader);
    } catch (const Error&) {
      continue;  // a damaged object below it: reported where it is
    }
    for (const std::string& p : c.problems)
      AddDamage("node", h.Hex(), store_.NodePath(h), "incomplete variant: " + p, Key("node", h.Hex()));
  }
}

// A variant is broken by every damaged object it reaches (through valid nodes).
void Verifier::FindBrokenVariants() {
  for (const auto& [name, root] : roots_) {
    std::set<std::string> seen;
    std::vector<std::pair<bool, Hash>> stack = {{false, root}};
    if (damage_.count(Key("ref", name))) damage_[Key("ref", name)].variants.push_back(name);
    while (!stack.empty()) {
      auto [blob, h] = stack.back();
      stack.pop_back();
      std::string key = Key(blob ? "blob" : "node", h.Hex());
      if (!seen.insert(key).second) continue;
      if (auto d = damage_.find(key); d != damage_.end()) d->second.variants.push_back(name);
      if (blob) continue;
      if (auto e = edges_.find(h); e != edges_.end())
        for (const graph::Edge& edge : e->second) stack.push_back({edge.blob, edge.hash});
    }
  }
}

VerifyReport Verifier::Run() {
  CheckRefs();
  Walk();
  if (opts_.names.empty()) ListStore();
  CheckBlobs();
  CheckChains();
  CheckVariants();
  FindBrokenVariants();
  for (auto& [key, d] : damage_) {
    std::sort(d.variants.begin(), d.variants.end());
    d.variants.erase(std::unique(d.variants.begin(), d.variants.end()), d.variants.end());
    report_.damage.push_back(std::move(d));
  }
  std::sort(report_.damage.begin(), report_.damage.end(), [](const Damage& a, const Damage& b) {
    return std::tie(a.kind, a.hash, a.path) < std::tie(b.kind, b.hash, b.path);
  });
  return std::move(report_);
}

}  // namespace

std::vector<std::string> VerifyReport::BrokenVariants() const {
  std::set<std::string> names;
  for (const Damage& d : damage) names.insert(d.variants.begin(), d.variants.end());
  return {names.begin(), names.end()};
}

Json VerifyReport::ToJson(const Store& store, bool quick) const {
  Json damaged = Json::array();
  for (const Damage& d : damage)
    damaged.push_back(Json{{"kind", d.kind},
                           {"hash", d.hash.empty() ? Json(nullptr) : Json(d.hash)},
                           {"path", d.path},
                           {"problem", d.problem},
                           {"variants", d.variants}});
  return Json{{"store", store.root()},
              {"quick", quick},
              {"clean", clean()},
              {"checked", Json{{"refs", refs}, {"nodes", nodes}, {"blobs", blobs}, {"blob_bytes", blob_bytes},
                               {"rehashed_bytes", rehashed_bytes}}},
              {"damaged", damaged},
              {"broken_variants", BrokenVariants()}};
}

VerifyReport Verify(const Store& store, const VerifyOptions& opts) {
  // Shared, like a compile: a gc waits until verify is done instead of
  // sweeping what verify is reading. A store this user cannot lock (read-only,
  // another user's) is still verified, just without that guarantee.
  std::optional<FileLock> lock;
  try {
    lock.emplace(store.LockPath(), /*exclusive=*/false);
  } catch (const Error&) {
  }
  return Verifier(store, opts).Run();
}

}  // namespace strata
