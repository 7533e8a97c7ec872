// Variant -> HF checkpoint directory.
#include "strata/compiler/export.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "strata/formats/materialize.h"
#include "strata/formats/variant.h"
#include "strata/formats/error.h"
#include "strata/formats/hf_checkpoint.h"

namespace strata {

namespace fs = std::filesystem;

uint64_t ParseByteSize(const std::string& s) {
  static const std::pair<const char*, double> kUnits[] = {
      {"GiB", 1073741824.0}, {"MiB", 1048576.0}, {"KiB", 1024.0}, {"GB", 1e9}, {"MB", 1e6},
      {"KB", 1e3},           {"B", 1e9},         {"G", 1e9},      {"M", 1e6},  {"K", 1e3},
      {"k", 1e3},            {"m", 1e6},         {"b", 1e9},      {"g", 1e9}};
  double mult = 1;
  std::string num = s;
  for (const auto& [unit, m] : kUnits) {
    std::string_view u(unit);
    if (num.size() > u.size() && std::string_view(num).ends_with(u)) {
      num.resize(num.size() - u.size());
      mult = m;
      break;
    }
  }
  try {
    size_t used = 0;
    double v = std::stod(num, &used);
    if (used != num.size() || !(v > 0) || !std::isfinite(v)) throw 0;
    return static_cast<uint64_t>(v * mult);
  } catch (...) {
    throw Error("cannot read size \"" + s + "\": use bytes or a suffix, e.g. 5B (5e9 bytes, mergekit's "
                "default), 500M, 2GiB");
  }
}

namespace {

struct Shard {
  std::vector<TensorSpec> specs;
  std::vector<Hash> nodes;
  uint64_t bytes = 0;
};

// The order mergekit's executor hands tensors to its writer: its schedule is a
// lexicographical topological sort keyed by each task's group label, which for
// passthrough is the source tensor name, so tensors come grouped by source name
// in string order (lm_head, embed_tokens, layers.0, layers.1, layers.10, ...,
// norm); outputs of one source tensor keep plan order.
std::vector<NamedTensor> MergekitWriteOrder(std::vector<NamedTensor> tensors) {
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const NamedTensor& a, const NamedTensor& b) { return a.source < b.source; });
  return tensors;
}

// mergekit's TensorWriter: a tensor that would push a non-empty shard past the
// limit starts a new one.
std::vector<Shard> AssignShards(TensorReader& reader, const std::vector<NamedTensor>& tensors,
                                uint64_t max_bytes) {
  std::vector<Shard> shards(1);
  for (const NamedTensor& t : tensors) {
    const TensorNode& n = reader.Node(t.node);
    if (!shards.back().specs.empty() && shards.back().bytes + n.nbytes() > max_bytes)
      shards.emplace_back();
    shards.back().specs.push_back({t.name, n.dtype, n.shape});
    shards.back().nodes.push_back(t.node);
    shards.back().bytes += n.nbytes();
  }
  return shards;
}

void WriteSmallFile(const std::string& path, std::string_view bytes, ExportStats& stats) {
  WritableFile f(path);
  f.Append(bytes);
  f.Sync();
  f.Close();
  stats.bytes_written += bytes.size();
}

// A directory that is removed on destruction unless released.
class TempDir {
 public:
  explicit TempDir(std::string path) : path_(std::move(path)) { MakeDirs(path_); }
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }
  void Release() { path_.clear(); }

 private:
  std::string path_;
};

void CheckOutDir(const std::string& outdir, bool force) {
  if (!fs::exists(outdir)) return;
  if (!fs::is_directory(outdir)) throw Error(outdir + " exists and is not a directory");
  if (!fs::is_empty(outdir) && !force)
    throw Error(outdir + " is not empty; choose a new directory, or pass --force to replace its contents");
}

}  // namespace

ExportStats Export(const Store& store, const std::string& name, const std::string& outdir_in,
                   const ExportOptions& opts) {
  const std::string outdir = NormalizeDirPath(outdir_in);
  CheckOutDir(outdir, opts.force);
  Variant v = LoadVariant(store, store.ResolveRef(name));
  TensorReader reader(store);
  std::vector<NamedTensor> tensors = MergekitWriteOrder(OutputTensors(store, v));
  std::vector<Shard> shards = AssignShards(reader, tensors, opts.shard_size);
  ExportStats stats;
  stats.tensors = tensors.size();
  stats.shards = static_cast<int>(shards.size());
  for (const Shard& s : shards) stats.tensor_bytes += s.bytes;
  if (opts.on_start) opts.on_start(stats.tensor_bytes);

  fs::path out(outdir);
  MakeDirs(out.parent_path().string());
  TempDir tmp((out.parent_path() / ("." + out.filename().string() + "." + TempName("strata-export"))).string());
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string file = ShardFileName(static_cast<int>(i) + 1, static_cast<int>(shards.size()));
    WritableFile f(tmp.path() + "/" + file);
    SafetensorsWriter w(&f, shards[i].specs, {{"format", "pt"}});
    std::map<std::string, Hash> by_name;
    for (size_t k = 0; k < shards[i].specs.size(); ++k) {
      by_name[shards[i].specs[k].name] = shards[i].nodes[k];
      weight_map.push_back({shards[i].specs[k].name, file});
    }
    for (const TensorInfo& t : w.layout().tensors) reader.AppendTo(by_name.at(t.name), w, opts.bytes_done);
    w.Finish();
    f.Sync();
    stats.bytes_written += f.size();
    f.Close();
  }
  if (shards.size() > 1)
    WriteSmallFile(tmp.path() + "/model.safetensors.index.json", ShardIndexJson(stats.tensor_bytes, weight_map), stats);
  WriteSmallFile(tmp.path() + "/config.json", store.ReadBlob(v.config), stats);
  for (const auto& [file, h] : v.files) WriteSmallFile(tmp.path() + "/" + file, store.ReadBlob(h), stats);
  WriteSmallFile(tmp.path() + "/mergekit_config.yml", store.ReadBlob(v.plan), stats);
  SyncDir(tmp.path());

  // Swap into place: the old contents (if any, with --force) move aside first.
  std::string old;
  if (fs::exists(outdir)) {
    old = tmp.path() + ".old";
    fs::rename(outdir, old);
  }
  fs::rename(tmp.path(), outdir);
  tmp.Release();
  SyncDir(out.parent_path().string());
  if (!old.empty()) fs::remove_all(old);
  return stats;
}

}  // namespace strata
