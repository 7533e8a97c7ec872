// Synthetic checkpoints: N(0, 0.02) weights, norms near 1, a PRNG stream per
// tensor chunk so output is identical whatever the thread count.
#include "strata/compiler/synth.h"

#include <tbb/parallel_for.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "strata/formats/arch.h"
#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "strata/formats/hash.h"
#include "strata/formats/hf_checkpoint.h"
#include "strata/formats/model_config.h"
#include "strata/formats/safetensors.h"

namespace strata {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kChunk = 1u << 20;  // elements per PRNG stream

// The --preset shapes; --layers etc. override them. Everything else in
// config.json comes from the architecture's table entry (ArchInfo::synth).
struct Preset {
  std::string_view name;
  int layers, hidden, heads, kv_heads, intermediate, vocab;
  std::optional<int> max_position_embeddings;  // else the architecture's
};

const Preset kPresets[] = {
    {"tiny", 32, 64, 4, 2, 128, 256, std::nullopt},
    {"small", 32, 512, 8, 4, 1024, 32000, std::nullopt},
    {"mistral-7b", 32, 4096, 32, 8, 14336, 32000, 32768},
};

// "a, b or c" for error messages.
template <typename Names>
std::string OneOf(const Names& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

struct Shape {
  const ArchInfo* arch;
  const Preset* preset;
  int layers, hidden, heads, kv_heads, intermediate, vocab;
};

Shape ResolveShape(const SynthSpec& s) {
  Shape sh{};
  sh.arch = FindArchByModelType(s.arch);
  if (!sh.arch) {
    std::vector<std::string> names;
    for (const ArchInfo& a : AllArchs()) names.emplace_back(a.model_type);
    throw Error("unknown --arch \"" + s.arch + "\"; use " + OneOf(names));
  }
  for (const Preset& p : kPresets)
    if (p.name == s.preset) sh.preset = &p;
  if (!sh.preset) {
    std::vector<std::string> names;
    for (const Preset& p : kPresets) names.emplace_back(p.name);
    throw Error("unknown --preset \"" + s.preset + "\"; use " + OneOf(names));
  }
  const Preset& p = *sh.preset;
  sh.layers = s.layers.value_or(p.layers);
  sh.hidden = s.hidden.value_or(p.hidden);
  sh.heads = s.heads.value_or(p.heads);
  sh.kv_heads = s.kv_heads.value_or(p.kv_heads);
  sh.intermediate = s.intermediate.value_or(p.intermediate);
  sh.vocab = s.vocab.value_or(p.vocab);
  for (int v : {sh.layers, sh.hidden, sh.heads, sh.kv_heads, sh.intermediate, sh.vocab})
    if (v <= 0) throw Error("synth sizes must be positive");
  if (sh.hidden % sh.heads != 0)
    throw Error("--hidden " + std::to_string(sh.hidden) + " is not divisible by --heads " + std::to_string(sh.heads));
  if (sh.heads % sh.kv_heads != 0)
    throw Error("--heads " + std::to_string(sh.heads) + " is not divisible by --kv-heads " + std::to_string(sh.kv_heads));
  if (s.dtype != DType::kBF16 && s.dtype != DType::kF16 && s.dtype != DType::kF32)
    throw Error("synth --dtype must be bfloat16, float16 or float32");
  return sh;
}

OrderedJson MakeConfig(const SynthSpec& s, const Shape& sh) {
  const ArchInfo& arch = *sh.arch;
  OrderedJson c;
  c["architectures"] = {std::string(arch.hf_name)};
  c["attention_dropout"] = 0.0;
  c["bos_token_id"] = 1;
  c["eos_token_id"] = 2;
  c["hidden_act"] = "silu";
  c["hidden_size"] = sh.hidden;
  c["initializer_range"] = 0.02;
  c["intermediate_size"] = sh.intermediate;
  c["max_position_embeddings"] = sh.preset->max_position_embeddings.value_or(arch.synth.max_position_embeddings);
  c["model_type"] = std::string(arch.model_type);
  c["num_attention_heads"] = sh.heads;
  c["num_hidden_layers"] = sh.layers;
  c["num_key_value_heads"] = sh.kv_heads;
  c["rms_norm_eps"] = arch.synth.rms_norm_eps;
  c["rope_theta"] = arch.synth.rope_theta;
  for (const SynthKey& k : arch.synth.extra) {
    const std::string key(k.key);
    switch (k.kind) {
      case SynthKey::kInt: c[key] = k.value; break;
      case SynthKey::kBool: c[key] = k.value != 0; break;
      case SynthKey::kLayerCount: c[key] = sh.layers; break;
    }
  }
  c["tie_word_embeddings"] = s.tie_embeddings;
  c["torch_dtype"] = std::string(TorchDTypeName(s.dtype));
  c["transformers_version"] = "4.44.0";
  c["use_cache"] = true;
  c["vocab_size"] = sh.vocab;
  return c;
}

struct SynthTensor {
  TensorSpec spec;
  float mean, stddev;  // norms: 1 + N(0, 0.02); weights N(0, 0.02); biases N(0, 0.02)
};

// The architecture's tensors, with the shapes config.json implies (RoleShape,
// NonLayerShape: the same rule compile and the runtime check against).
std::vector<SynthTensor> MakeTensors(const SynthSpec& s, const Shape& sh) {
  const ArchInfo& arch = *sh.arch;
  ModelConfig c;
  c.arch = &arch;
  c.hidden = sh.hidden, c.layers = sh.layers, c.heads = sh.heads, c.kv_heads = sh.kv_heads;
  c.head_dim = sh.hidden / sh.heads, c.intermediate = sh.intermediate, c.vocab = sh.vocab;
  std::vector<SynthTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool norm) {
    out.push_back({{std::move(name), s.dtype, std::move(shape)}, norm ? 1.0f : 0.0f, 0.02f});
  };
  auto add_non_layer = [&](const std::vector<NonLayerTensor>& ts) {
    for (const NonLayerTensor& t : ts)
      if (!(t.optional && s.tie_embeddings)) add(std::string(t.name), *NonLayerShape(c, t.name), t.norm);
  };
  add_non_layer(arch.pre);
  for (int l = 0; l < sh.layers; ++l)
    for (const RoleName& r : arch.layer) add(LayerPrefix(l) + std::string(r.name), RoleShape(c, r.role), IsNormRole(r.role));
  add_non_layer(arch.post);
  return out;
}

uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Fills elements [begin, begin+n) of a tensor: one PRNG stream per kChunk.
void Generate(const SynthTensor& t, uint64_t tensor_seed, uint64_t begin, uint64_t n, char* out) {
  std::vector<float> vals(n);
  for (uint64_t c = begin / kChunk; c * kChunk < begin + n; ++c) {
    uint64_t state = tensor_seed ^ (c * 0xD1B54A32D192ED03ull);
    uint64_t lo = std::max(begin, c * kChunk), hi = std::min(begin + n, (c + 1) * kChunk);
    for (uint64_t i = c * kChunk; i < hi; i += 2) {
      // Box-Muller: two normals from two uniforms in (0, 1].
      double u1 = (static_cast<double>(SplitMix(state) >> 11) + 1) * 0x1.0p-53;
      double u2 = static_cast<double>(SplitMix(state) >> 11) * 0x1.0p-53;
      double r = std::sqrt(-2 * std::log(u1));
      float z[2] = {static_cast<float>(r * std::cos(2 * M_PI * u2)),
                    static_cast<float>(r * std::sin(2 * M_PI * u2))};
      for (int k = 0; k < 2; ++k)
        if (i + k >= lo && i + k < hi) vals[i + k - begin] = t.mean + t.stddev * z[k];
    }
  }
  ConvertElements(DType::kF32, vals.data(), t.spec.dtype, out, n);
}

void WriteTensor(const SynthTensor& t, uint64_t seed, SafetensorsWriter& w, std::atomic<uint64_t>* done) {
  const uint64_t tensor_seed = XXH3_64bits_withSeed(t.spec.name.data(), t.spec.name.size(), seed);
  uint64_t numel = 1;
  for (int64_t d : t.spec.shape) numel *= static_cast<uint64_t>(d);
  const size_t es = DTypeSize(t.spec.dtype);
  const uint64_t batch = 16 * kChunk;  // elements generated in parallel, then written
  std::vector<char> buf(std::min(numel, batch) * es);
  for (uint64_t b = 0; b < numel; b += batch) {
    uint64_t n = std::min(batch, numel - b);
    tbb::parallel_for(uint64_t{0}, (n + kChunk - 1) / kChunk, [&](uint64_t c) {
      uint64_t lo = c * kChunk, k = std::min(kChunk, n - lo);
      Generate(t, tensor_seed, b + lo, k, buf.data() + lo * es);
    });
    w.Append(buf.data(), n * es);
    if (done) *done += n * es;
  }
}

// HF's sharding rule (save_pretrained): a tensor that would push a non-empty
// shard past the limit starts a new one; tensors in name order.
std::vector<std::vector<const SynthTensor*>> Shards(const std::vector<SynthTensor>& ts, uint64_t max) {
  std::vector<const SynthTensor*> sorted;
  for (const auto& t : ts) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->spec.name < b->spec.name; });
  std::vector<std::vector<const SynthTensor*>> out(1);
  uint64_t cur = 0;
  for (const SynthTensor* t : sorted) {
    uint64_t n = DTypeSize(t->spec.dtype);
    for (int64_t d : t->spec.shape) n *= static_cast<uint64_t>(d);
    if (!out.back().empty() && cur + n > max) {
      out.emplace_back();
      cur = 0;
    }
    out.back().push_back(t);
    cur += n;
  }
  return out;
}

// --tokenizer: the GGUF vocabulary as tokenizer.json + tokenizer_config.json.
std::optional<HfTokenizerFiles> SynthTokenizer(const SynthSpec& s) {
  if (s.tokenizer.empty()) return std::nullopt;
  const char* model = s.tokenizer == "llama-spm" ? "llama" : s.tokenizer == "gpt2" ? "gpt2" : nullptr;
  if (!model) throw Error("unknown --tokenizer \"" + s.tokenizer + "\"; use llama-spm or gpt2");
  if (s.vocab_gguf.empty())
    throw Error("--tokenizer " + s.tokenizer + " needs --vocab-gguf FILE (a GGUF vocabulary such as ggml-vocab-" +
                s.tokenizer + ".gguf)");
  GgufFile f = GgufFile::Read(s.vocab_gguf);
  if (f.GetString("tokenizer.ggml.model") != model)
    throw Error(s.vocab_gguf + " holds a \"" + f.GetString("tokenizer.ggml.model") + "\" vocabulary; --tokenizer " +
                s.tokenizer + " needs a \"" + model + "\" one");
  return GgufVocabToHf(f);
}

// Writes a checkpoint's files into `dir` through `emit(file_name, writer_fn)`.
SynthResult WriteCheckpoint(const SynthSpec& spec, const std::string& dir) {
  std::optional<HfTokenizerFiles> tok = SynthTokenizer(spec);
  SynthSpec s = spec;
  if (tok) {
    if (spec.vocab && *spec.vocab < tok->vocab_size)
      throw Error("--vocab " + std::to_string(*spec.vocab) + " is smaller than the tokenizer's " + std::to_string(tok->vocab_size) + " tokens");
    s.vocab = spec.vocab.value_or(tok->vocab_size);
  }
  Shape sh = ResolveShape(s);
  std::vector<SynthTensor> tensors = MakeTensors(s, sh);
  auto shards = Shards(tensors, s.shard_size);
  SynthResult res;
  res.dir = dir;
  res.shards = static_cast<int>(shards.size());
  uint64_t total = 0;
  for (const auto& t : tensors) {
    uint64_t n = 1;
    for (int64_t d : t.spec.shape) n *= static_cast<uint64_t>(d);
    res.parameters += n;
    total += n * DTypeSize(t.spec.dtype);
  }
  if (s.on_start) s.on_start(total);
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    std::string file = ShardFileName(static_cast<int>(i) + 1, static_cast<int>(shards.size()));
    std::vector<TensorSpec> specs;
    std::map<std::string, const SynthTensor*> by_name;
    for (const SynthTensor* t : shards[i]) {
      specs.push_back(t->spec);
      by_name[t->spec.name] = t;
      weight_map.push_back({t->spec.name, file});
    }
    WritableFile f(dir + "/" + file);
    SafetensorsWriter w(&f, specs, {{"format", "pt"}});
    for (const TensorInfo& t : w.layout().tensors) WriteTensor(*by_name.at(t.name), s.seed, w, s.bytes_done);
    w.Finish();
    f.Sync();
    res.bytes += f.size();
    f.Close();
  }
  if (shards.size() > 1) {
    std::sort(weight_map.begin(), weight_map.end());
    OrderedJson index;
    index["metadata"]["total_size"] = total;
    index["weight_map"] = OrderedJson::object();
    for (const auto& [n, f] : weight_map) index["weight_map"][n] = f;
    WriteFileAtomically(dir + "/model.safetensors.index.json", index.dump(2) + "\n", dir);
  }
  OrderedJson config = MakeConfig(s, sh);
  if (tok) {
    config["bos_token_id"] = tok->bos_id;
    config["eos_token_id"] = tok->eos_id;
    WriteFileAtomically(dir + "/tokenizer.json", tok->tokenizer_json, dir);
    WriteFileAtomically(dir + "/tokenizer_config.json", tok->tokenizer_config_json, dir);
  }
  WriteFileAtomically(dir + "/config.json", DumpConfigJson(config), dir);
  return res;
}

void RequireEmpty(const std::string& dir) {
  if (fs::exists(dir) && !(fs::is_directory(dir) && fs::is_empty(dir)))
    throw Error(dir + " exists and is not empty; synth writes only into a new directory");
}

// Builds into a temporary sibling and renames it into place, so a failure
// leaves nothing at `dir`.
SynthResult BuildAtomically(const SynthSpec& spec, const std::string& dir) {
  fs::path p = NormalizeDirPath(dir);
  MakeDirs(p.parent_path().string());
  std::string tmp = (p.parent_path() / ("." + p.filename().string() + "." + TempName("synth"))).string();
  MakeDirs(tmp);
  try {
    SynthResult r = WriteCheckpoint(spec, tmp);
    if (fs::exists(p)) fs::remove(p);  // an empty directory (checked by RequireEmpty)
    fs::rename(tmp, p);
    r.dir = p.string();
    return r;
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace

SynthResult SynthToDir(const SynthSpec& spec, const std::string& out_dir) {
  RequireEmpty(out_dir);
  return BuildAtomically(spec, out_dir);
}

SynthResult SynthToHfCache(const SynthSpec& spec, const std::string& cache_dir, const std::string& id) {
  auto slash = id.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == id.size() || id.find('/', slash + 1) != std::string::npos)
    throw Error("--as \"" + id + "\" must be an HF id of the form org/name");
  std::string repo = cache_dir + "/models--" + id.substr(0, slash) + "--" + id.substr(slash + 1);
  if (fs::exists(repo + "/refs/main"))
    throw Error(repo + " already holds a model; remove it or choose another --as");
  // A revision that depends on everything that shapes the content.
  std::string desc = spec.arch + "|" + spec.preset + "|" + std::to_string(spec.seed) + "|" +
                     std::string(DTypeName(spec.dtype)) + "|" + std::to_string(spec.tie_embeddings);
  if (!spec.tokenizer.empty()) desc += "|" + spec.tokenizer + "|" + spec.vocab_gguf;
  for (const auto& o : {spec.layers, spec.hidden, spec.heads, spec.kv_heads, spec.intermediate, spec.vocab})
    desc += "|" + (o ? std::to_string(*o) : std::string("-"));
  std::string rev = HashBytes(desc).Hex() + HashBytes(desc + "rev").Hex().substr(0, 8);
  std::string staging = repo + "/blobs/.staging-" + TempName("synth");
  MakeDirs(repo + "/blobs");
  SynthResult r = BuildAtomically(spec, staging);
  // The hub cache keeps content in blobs/ and links it from snapshots/<rev>/.
  std::string snap = repo + "/snapshots/" + rev;
  MakeDirs(snap);
  for (const auto& e : fs::directory_iterator(staging)) {
    std::string name = e.path().filename().string();
    std::string blob = IdentifyFile(e.path().string()).Key();
    blob = HashBytes(blob + name).Hex();
    fs::rename(e.path(), repo + "/blobs/" + blob);
    fs::create_symlink("../../blobs/" + blob, snap + "/" + name);
  }
  fs::remove(staging);
  MakeDirs(repo + "/refs");
  WriteFileAtomically(repo + "/refs/main", rev, repo + "/blobs");
  r.dir = snap;
  return r;
}

}  // namespace strata
