// Variant -> HF checkpoint directory.
#include "strata/compiler/export.h"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cmath>
#include <filesystem>

#include "strata/formats/materialize.h"
#include "strata/formats/variant.h"
#include "strata/formats/error.h"
#include "strata/formats/hf_checkpoint.h"
#include "strata/formats/variant_check.h"

namespace strata {

namespace fs = std::filesystem;

// In exact integer arithmetic, not floating point: no rounding decides whether
// 1.1G is a whole number of bytes, and nothing wraps past 2^64 (1e30 or 2^64
// cast to an integer became a shard size of a few bytes: a shard per tensor).
uint64_t ParseByteSize(const std::string& s) {
  static const std::pair<const char*, uint64_t> kUnits[] = {
      {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}, {"GB", 1'000'000'000}, {"MB", 1'000'000},
      {"KB", 1'000},       {"B", 1'000'000'000}, {"G", 1'000'000'000}, {"M", 1'000'000},   {"K", 1'000},
      {"k", 1'000},        {"m", 1'000'000},     {"b", 1'000'000'000}, {"g", 1'000'000'000}};
  auto fail = [&](const std::string& why) {
    return Error("cannot read size \"" + s + "\"" + why + ": give a whole number of bytes from 1 to 2^63, alone or "
                 "with a suffix, e.g. 5B (5e9 bytes, mergekit's default), 500M, 1.5G, 2GiB");
  };
  uint64_t mult = 1;
  std::string_view num = s;
  for (const auto& [unit, m] : kUnits) {
    if (num.size() > std::string_view(unit).size() && num.ends_with(unit)) {
      num.remove_suffix(std::string_view(unit).size());
      mult = m;
      break;
    }
  }
  // DIGITS[.DIGITS][e[+-]DIGITS], as mantissa * 10^exp10.
  auto digits = [](std::string_view t) { return t.find_first_not_of("0123456789") == std::string_view::npos; };
  const size_t e = num.find_first_of("eE");
  std::string_view mant = num.substr(0, e), ex = e == std::string_view::npos ? "" : num.substr(e + 1);
  int exp10 = 0;
  if (e != std::string_view::npos) {
    const bool neg = !ex.empty() && ex[0] == '-';
    if (!ex.empty() && (ex[0] == '-' || ex[0] == '+')) ex.remove_prefix(1);
    if (ex.empty() || ex.size() > 4 || !digits(ex)) throw fail("");
    exp10 = (neg ? -1 : 1) * std::stoi(std::string(ex));
  }
  const size_t dot = mant.find('.');
  const std::string_view whole = mant.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? "" : mant.substr(dot + 1);
  if (whole.size() + frac.size() == 0 || !digits(whole) || !digits(frac)) throw fail("");
  while (!frac.empty() && frac.back() == '0') frac.remove_suffix(1);
  exp10 -= static_cast<int>(frac.size());
  // 2^96 bounds the mantissa so that times a unit (<= 2^30) it fits 128 bits.
  unsigned __int128 v = 0;
  const unsigned __int128 kMantissaCap = static_cast<unsigned __int128>(1) << 96, kMax = uint64_t{1} << 63;
  for (std::string_view part : {whole, frac})
    for (char c : part)
      if ((v = v * 10 + (c - '0')) > kMantissaCap) throw fail(" (more than 2^63 bytes, or too many digits)");
  v *= mult;
  for (; exp10 > 0 && v <= kMax; --exp10) v *= 10;
  for (; exp10 < 0; ++exp10, v /= 10)
    if (v % 10) throw fail(" (not a whole number of bytes)");
  if (v == 0) throw fail(" (0 bytes)");
  if (v > kMax) throw fail(" (more than 2^63 bytes)");
  return static_cast<uint64_t>(v);
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
    const uint64_t bytes = n.numel() * DTypeSize(n.dtype);  // a quantized tensor is written dequantized
    if (!shards.back().specs.empty() && shards.back().bytes + bytes > max_bytes)
      shards.emplace_back();
    shards.back().specs.push_back({t.name, n.dtype, n.shape});
    shards.back().nodes.push_back(t.node);
    shards.back().bytes += bytes;
  }
  return shards;
}

void WriteSmallFile(const std::string& dir, const std::string& name, std::string_view bytes, ExportStats& stats) {
  // Names come from a validated node; refusing here too keeps every write inside `dir`.
  if (!ValidFileName(name)) throw Error("refusing to write file " + Json(name).dump() + ": not a plain file name");
  WritableFile f(dir + "/" + name);
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

constexpr std::string_view kTempTag = "strata-export";

// ".<name>.strata-export." (beside OUTDIR; name empty: inside it). Built with
// append: GCC 12 warns falsely (-Wrestrict) about "." + std::string.
std::string TempPrefix(const std::string& name) {
  std::string p(".");
  if (!name.empty()) p.append(name).push_back('.');
  p.append(kTempTag).push_back('.');
  return p;
}

// A temporary of an export whose process is gone: ".<name>.strata-export.<pid>.
// <n>.<r>.tmp[.old]" beside OUTDIR, or ".strata-export.<pid>...tmp" inside it.
bool StaleTemp(const std::string& entry, const std::string& prefix) {
  if (!entry.starts_with(prefix)) return false;
  const std::string rest = entry.substr(prefix.size());
  if (!rest.ends_with(".tmp") && !rest.ends_with(".tmp.old")) return false;
  char* end = nullptr;
  long pid = std::strtol(rest.c_str(), &end, 10);
  if (end == rest.c_str() || *end != '.' || pid <= 0) return false;
  return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

// Removes what interrupted exports (kill -9, power loss) left in `dir`.
void RemoveStaleTemps(const std::string& dir, const std::string& prefix) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!StaleTemp(e.path().filename().string(), prefix)) continue;
    std::error_code ignored;
    fs::remove_all(e.path(), ignored);
  }
}

// Where the export is written before it becomes visible.
enum class Place { kNew, kIntoEmpty, kReplace };

Place CheckOutDir(const std::string& outdir, bool force) {
  std::error_code ec;
  auto st = fs::status(outdir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw Error("cannot look at " + outdir + ": " + ec.message());
  if (!fs::exists(st)) return Place::kNew;
  if (!fs::is_directory(st)) throw Error(outdir + " exists and is not a directory");
  bool empty = true;
  for (const auto& e : fs::directory_iterator(outdir)) {
    if (StaleTemp(e.path().filename().string(), TempPrefix(""))) continue;
    empty = false;
    break;
  }
  if (empty) return Place::kIntoEmpty;
  if (!force) throw Error(outdir + " is not empty; choose a new directory, or pass --force to replace its contents");
  // --force swaps directories by rename, which a mount point refuses (EBUSY):
  // say so now rather than after writing everything aside.
  struct stat here, above;
  const std::string parent = fs::path(outdir).parent_path().string();
  if (::stat(outdir.c_str(), &here) == 0 && ::stat(parent.c_str(), &above) == 0 && here.st_dev != above.st_dev)
    throw Error(outdir + " is a mount point and not empty: --force cannot swap it. Empty it first (the export then "
                "writes inside it), or export into a directory below it");
  return Place::kReplace;
}

void Rename(const std::string& from, const std::string& to, const std::string& why) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (!ec) return;
  std::string hint = ec == std::errc::device_or_resource_busy
                         ? " (it is a mount point or in use: export into it when it is empty, or into a directory below it)"
                         : "";
  throw Error("cannot " + why + ": rename " + from + " to " + to + ": " + ec.message() + hint);
}

// An empty OUTDIR (perhaps a mount point, which cannot be renamed) receives
// the finished files one by one; a failure takes back the ones moved.
void MoveInto(const std::string& tmp, const std::string& outdir) {
  std::vector<std::string> moved;
  try {
    for (const auto& e : fs::directory_iterator(tmp)) {
      const std::string name = e.path().filename().string();
      Rename(e.path().string(), outdir + "/" + name, "move the export into place");
      moved.push_back(name);
    }
  } catch (...) {
    for (const std::string& name : moved) {
      std::error_code ec;
      fs::remove(outdir + "/" + name, ec);
    }
    throw;
  }
}

}  // namespace

ExportStats Export(const Store& store, const std::string& name, const std::string& outdir_in,
                   const ExportOptions& opts) {
  const std::string outdir = NormalizeDirPath(outdir_in);
  fs::path out(outdir);
  const std::string parent = out.parent_path().string();
  if (fs::is_directory(parent)) RemoveStaleTemps(parent, TempPrefix(out.filename().string()));
  if (fs::is_directory(outdir)) RemoveStaleTemps(outdir, TempPrefix(""));
  const Place place = CheckOutDir(outdir, opts.force);
  const Hash variant = store.ResolveRef(name);
  try {
    return ExportVariant(store, variant, outdir, place == Place::kIntoEmpty, opts);
  } catch (const Interrupted&) {
    throw;
  } catch (const Error& e) {
    // An object gone because the variant itself was removed (rm + gc) while
    // it was being exported is no damage: say what happened instead.
    std::optional<Hash> now;
    try {
      now = store.GetRef(name);
    } catch (const Error&) {
    }
    if (!now || *now != variant)
      throw Error("variant \"" + name + "\" was " + (now ? "replaced" : "removed") +
                  " while it was being exported (" + e.what() + "); nothing was written to " + outdir +
                  " and the store is not damaged. Export again" + (now ? "" : " after compiling it again"));
    throw;
  }
}

ExportStats ExportVariant(const Store& store, const Hash& variant, const std::string& outdir, bool into_empty,
                          const ExportOptions& opts) {
  Variant v = LoadVariant(store, variant);
  TensorReader reader(store, opts.verify);
  RequireCompleteVariant(store, v, reader);
  std::vector<NamedTensor> tensors = MergekitWriteOrder(OutputTensors(store, v));
  std::vector<Shard> shards = AssignShards(reader, tensors, opts.shard_size);
  ExportStats stats;
  stats.tensors = tensors.size();
  stats.shards = static_cast<int>(shards.size());
  for (const Shard& s : shards) stats.tensor_bytes += s.bytes;
  if (opts.on_start) opts.on_start(stats.tensor_bytes);

  fs::path out(outdir);
  MakeDirs(out.parent_path().string());
  // Inside an empty OUTDIR (so its files only move, even across a mount
  // point), else beside it; either way on the file system it ends up on.
  std::string tmp_name(".");
  if (!into_empty) tmp_name.append(out.filename().string()).push_back('.');
  tmp_name.append(TempName(kTempTag));
  TempDir tmp(into_empty ? outdir + "/" + tmp_name : (out.parent_path() / tmp_name).string());
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
    WriteSmallFile(tmp.path(), "model.safetensors.index.json", ShardIndexJson(stats.tensor_bytes, weight_map), stats);
  WriteSmallFile(tmp.path(), "config.json", store.ReadBlob(v.config), stats);
  for (const auto& [file, h] : v.files) WriteSmallFile(tmp.path(), file, store.ReadBlob(h), stats);
  WriteSmallFile(tmp.path(), "mergekit_config.yml", store.ReadBlob(v.plan), stats);
  SyncDir(tmp.path());
  CheckInterrupt();

  if (into_empty) {
    MoveInto(tmp.path(), outdir);
    SyncDir(outdir);
    return stats;  // ~TempDir removes the emptied temporary
  }
  // Swap into place: the old contents (if any, with --force) move aside first.
  std::string old;
  if (fs::exists(outdir)) {
    old = tmp.path() + ".old";
    Rename(outdir, old, "move the old contents of " + outdir + " aside");
  }
  try {
    Rename(tmp.path(), outdir, "move the export into place");
  } catch (...) {
    if (!old.empty()) {
      std::error_code ec;
      fs::rename(old, outdir, ec);  // put the old contents back
    }
    throw;
  }
  tmp.Release();
  SyncDir(out.parent_path().string());
  if (!old.empty()) {
    std::error_code ec;
    fs::remove_all(old, ec);
  }
  return stats;
}

}  // namespace strata
