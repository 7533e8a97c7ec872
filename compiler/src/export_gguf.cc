// ExportGguf: plan every tensor (GGUF name, type, bytes), build the keys, then
// stream the data tensor by tensor into a temporary file renamed at the end.
#include "strata/compiler/export_gguf.h"

#include <filesystem>
#include <map>
#include <vector>

#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/gguf.h"
#include "strata/formats/gguf_writer.h"
#include "strata/formats/materialize.h"
#include "strata/formats/quant.h"
#include "strata/formats/variant.h"
#include "strata/formats/variant_check.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

// llama_ftype values (llama.h).
uint32_t FileTypeOf(const std::string& mix_or_dtype) {
  static const std::map<std::string, uint32_t> k = {
      {"F32", 0},     {"F16", 1},     {"Q4_0", 2},    {"Q8_0", 7},    {"Q5_0", 8},   {"Q5_1", 9},
      {"Q4_K_S", 14}, {"Q4_K_M", 15}, {"Q5_K_S", 16}, {"Q5_K_M", 17}, {"Q6_K", 18},  {"BF16", 32},
      {"Q4_K", 15},   {"Q5_K", 17}};
  auto it = k.find(mix_or_dtype);
  return it == k.end() ? 0 : it->second;
}

std::string GgufName(const std::string& hf) {
  auto g = GgufTensorName(hf);
  if (!g) throw Error("tensor " + hf + " has no GGUF name in strata");
  return *g;
}

struct Item {
  std::string name;  // GGUF name
  Hash node;
  std::vector<int64_t> shape;
  uint32_t type = kGgufTypeF32;
  QuantType quant = QuantType::kNone;  // blocks copied as they are
  DType out = DType::kF32;             // otherwise the element type written
  uint64_t nbytes = 0;
  int permute_heads = 0;  // rows permuted as llama.cpp's converter does, for this many heads
  std::vector<float> generated = {};  // a tensor of no node (rope_freqs): these F32 values
};

struct Plan {
  Variant v;
  ModelConfig c;
  std::vector<Item> items;
  GgufWriter w;
  uint32_t file_type = 0;
  std::string tok_model, tok_pre;
};

Item PlanItem(TensorReader& reader, const std::string& gguf, const Hash& h, const std::string& type, int permute) {
  const TensorNode& n = reader.Node(h);
  Item it{gguf, h, n.shape};
  it.permute_heads = permute;
  const bool vec = n.shape.size() == 1;
  if (!vec && type == "keep" && n.op == TensorNode::Op::kQuant) {
    it.quant = n.quant;
    it.type = QuantTypeInfo(n.quant).ggml_type;
    it.nbytes = n.nbytes();
    return it;
  }
  DType out = vec ? DType::kF32
              : type == "keep" ? n.dtype
              : type == "f32" ? DType::kF32
              : type == "f16" ? DType::kF16
                              : DType::kBF16;
  if (out != DType::kF32 && out != DType::kF16 && out != DType::kBF16)
    throw Error("tensor " + gguf + " is " + std::string(DTypeName(out)) + ", which GGUF export does not write; "
                "pass --type f32, f16 or bf16");
  it.out = out;
  it.type = out == DType::kF32 ? kGgufTypeF32 : out == DType::kF16 ? kGgufTypeF16 : kGgufTypeBF16;
  it.nbytes = n.numel() * DTypeSize(out);
  return it;
}

void AddVocabKeys(Plan& p, const Store& store) {
  auto file = [&](const char* f) -> std::string {
    auto it = p.v.files.find(f);
    return it == p.v.files.end() ? "" : store.ReadBlob(it->second);
  };
  const std::string tj = file("tokenizer.json");
  if (tj.empty())
    throw Error("the variant has no tokenizer.json, and a GGUF file needs its vocabulary (llama.cpp reads no "
                "model without one); compile it from a model that has one");
  GgufVocabKeys k = HfToGgufVocab(tj, file("tokenizer_config.json"), p.c.vocab, "the variant's tokenizer.json");
  if (k.bos < 0) k.bos = p.c.bos_token_id;
  if (k.eos < 0 && !p.c.eos_token_ids.empty()) k.eos = p.c.eos_token_ids[0];
  GgufWriter& w = p.w;
  w.AddString("tokenizer.ggml.model", k.model);
  w.AddString("tokenizer.ggml.pre", k.pre);
  w.AddStrings("tokenizer.ggml.tokens", k.tokens);
  if (k.model == "llama") w.AddF32s("tokenizer.ggml.scores", k.scores);
  w.AddI32s("tokenizer.ggml.token_type", k.types);
  if (k.model == "gpt2") w.AddStrings("tokenizer.ggml.merges", k.merges);
  if (k.bos >= 0) w.AddU32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(k.bos));
  if (k.eos >= 0) w.AddU32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(k.eos));
  if (k.unk >= 0) w.AddU32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(k.unk));
  if (k.add_bos) w.AddBool("tokenizer.ggml.add_bos_token", *k.add_bos);
  if (k.add_eos) w.AddBool("tokenizer.ggml.add_eos_token", *k.add_eos);
  if (k.chat_template) w.AddString("tokenizer.chat_template", *k.chat_template);
  p.tok_model = k.model;
  p.tok_pre = k.pre;
}

Plan MakePlan(const Store& store, const std::string& name, const GgufExportOptions& opts, TensorReader& reader) {
  if (opts.type != "keep" && opts.type != "f32" && opts.type != "f16" && opts.type != "bf16")
    throw Error("GGUF export --type must be keep, f32, f16 or bf16, not \"" + opts.type +
                "\" (quantize first: strata quantize NAME --type q4_k_m)");
  Plan p;
  p.v = LoadVariant(store, store.ResolveRef(name));
  p.c = RequireCompleteVariant(store, p.v, reader);
  const ArchInfo& arch = *p.v.arch;
  if (arch.gguf_arch.empty()) throw Error(std::string(arch.hf_name) + " has no GGUF mapping in strata");
  // rope_scaling as llama.cpp's converter writes it: linear as two keys,
  // llama3 as the per-frequency factors in a rope_freqs tensor, first.
  if (p.c.rope_scaling && p.c.rope_scaling->type == "llama3") {
    if (arch.gguf_arch != "llama")
      throw Error("the variant's config.json has llama3 rope_scaling, which llama.cpp reads only for llama models");
    Item it{"rope_freqs.weight", Hash{}, {p.c.head_dim / 2}};
    for (double f : RopeFactors(p.c)) it.generated.push_back(static_cast<float>(f));
    it.nbytes = it.generated.size() * 4;
    p.items.push_back(std::move(it));
  }
  for (const auto& group : {p.v.pre, p.v.post})
    for (const NamedTensor& t : group) p.items.push_back(PlanItem(reader, GgufName(t.name), t.node, opts.type, 0));
  for (size_t l = 0; l < p.v.layers.size(); ++l) {
    const auto roles = LoadLayer(store, p.v.layers[l].layer);
    for (const RoleName& r : arch.layer) {
      const std::string role(r.name);
      int permute = 0;
      if (arch.gguf_permute_qk && r.role == Role::kQ) permute = p.c.heads;
      if (arch.gguf_permute_qk && r.role == Role::kK) permute = p.c.kv_heads;
      p.items.push_back(PlanItem(reader, GgufName(LayerPrefix(static_cast<int>(l)) + role), roles.at(role),
                                 opts.type, permute));
    }
  }
  // general.file_type: the mix strata quantize recorded, else the most common type.
  std::map<std::string, uint64_t> weight_by_type;
  bool quantized = false;
  for (const Item& it : p.items) {
    if (it.shape.size() != 2) continue;
    quantized |= it.quant != QuantType::kNone;
    weight_by_type[it.quant != QuantType::kNone ? std::string(QuantTypeInfo(it.quant).name)
                                                : std::string(DTypeName(it.out))] += it.nbytes;
  }
  std::string common;
  for (const auto& [t, b] : weight_by_type)
    if (common.empty() || b > weight_by_type[common]) common = t;
  const Json& q = p.v.node.value("quantization", Json::object());
  p.file_type = FileTypeOf(quantized && q.is_object() && q.contains("mix") ? q["mix"].get<std::string>() : common);

  GgufWriter& w = p.w;
  const std::string a(arch.gguf_arch);
  w.AddString("general.architecture", a);
  w.AddString("general.name", name);
  w.AddU32("general.file_type", p.file_type);
  if (quantized) w.AddU32("general.quantization_version", 2);
  w.AddU32(a + ".context_length", static_cast<uint32_t>(p.c.max_position_embeddings));
  w.AddU32(a + ".embedding_length", static_cast<uint32_t>(p.c.hidden));
  w.AddU32(a + ".block_count", static_cast<uint32_t>(p.c.layers));
  w.AddU32(a + ".feed_forward_length", static_cast<uint32_t>(p.c.intermediate));
  w.AddU32(a + ".attention.head_count", static_cast<uint32_t>(p.c.heads));
  w.AddU32(a + ".attention.head_count_kv", static_cast<uint32_t>(p.c.kv_heads));
  w.AddF32(a + ".rope.freq_base", static_cast<float>(p.c.rope_theta));
  w.AddF32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(p.c.rms_norm_eps));
  w.AddU32(a + ".rope.dimension_count", static_cast<uint32_t>(p.c.head_dim));
  if (p.c.head_dim * p.c.heads != p.c.hidden) {
    w.AddU32(a + ".attention.key_length", static_cast<uint32_t>(p.c.head_dim));
    w.AddU32(a + ".attention.value_length", static_cast<uint32_t>(p.c.head_dim));
  }
  w.AddU32(a + ".vocab_size", static_cast<uint32_t>(p.c.vocab));
  if (p.c.rope_scaling && p.c.rope_scaling->type == "linear") {
    w.AddString(a + ".rope.scaling.type", "linear");
    w.AddF32(a + ".rope.scaling.factor", static_cast<float>(p.c.rope_scaling->factor));
  }
  AddVocabKeys(p, store);
  for (const Item& it : p.items) w.AddTensor(it.name, it.type, it.shape, it.nbytes);
  return p;
}

void WriteItem(const Store& store, TensorReader& reader, const Item& it, WritableFile& f,
               std::atomic<uint64_t>* progress) {
  if (!it.generated.empty()) {
    f.Append(it.generated.data(), it.nbytes);
    return;
  }
  const int64_t rows = it.shape.size() == 2 ? it.shape[0] : 1, cols = it.shape.back();
  const TensorNode& node = reader.Node(it.node);
  if (node.op == TensorNode::Op::kQuant) {
    const TensorNode& n = node;
    MappedFile m(store.BlobPath(n.blob));
    if (m.size() != n.nbytes())
      throw Error("blob " + n.blob.Hex() + " has " + std::to_string(m.size()) + " bytes, expected " +
                  std::to_string(n.nbytes()) + "; the store is damaged, run `strata verify`");
    reader.VerifyMapped(n.blob, m.data(), m.size());
    const uint64_t rb = QuantRowBytes(n.quant, cols);
    if (it.quant == QuantType::kNone) {
      // Converted: each row dequantized in float32, then to the output type
      // (not through the node's dtype, which would round twice).
      std::vector<float> row(cols);
      std::vector<char> out(cols * DTypeSize(it.out));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t from = it.permute_heads ? GgufPermutedRow(r, rows, it.permute_heads) : r;
        DequantizeRow(n.quant, m.data() + from * rb, cols, row.data());
        ConvertElements(DType::kF32, row.data(), it.out, out.data(), cols);
        f.Append(out.data(), out.size());
      }
    } else if (!it.permute_heads) {
      f.Append(m.data(), m.size());
    } else {
      for (int64_t r = 0; r < rows; ++r) f.Append(m.data() + GgufPermutedRow(r, rows, it.permute_heads) * rb, rb);
    }
    if (progress) *progress += it.nbytes;
    return;
  }
  const DType src = node.dtype;
  const int64_t chunk = it.permute_heads ? 1 : std::max<int64_t>(1, (int64_t{1} << 22) / cols);
  std::vector<char> in(static_cast<size_t>(chunk * cols) * DTypeSize(src));
  std::vector<char> out(static_cast<size_t>(chunk * cols) * DTypeSize(it.out));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    CheckInterrupt();
    const int64_t n = std::min(chunk, rows - r0);
    const int64_t from = it.permute_heads ? GgufPermutedRow(r0, rows, it.permute_heads) : r0;
    reader.Read(it.node, static_cast<uint64_t>(from * cols), static_cast<uint64_t>(n * cols), in.data());
    ConvertElements(src, in.data(), it.out, out.data(), static_cast<size_t>(n * cols));
    f.Append(out.data(), static_cast<size_t>(n * cols) * DTypeSize(it.out));
    if (progress) *progress += static_cast<uint64_t>(n * cols) * DTypeSize(it.out);
  }
}

}  // namespace

uint64_t GgufExportSize(const Store& store, const std::string& name, const GgufExportOptions& opts) {
  TensorReader reader(store, false);
  Plan p = MakePlan(store, name, opts, reader);
  return p.w.Header().size() + p.w.DataBytes();
}

GgufExportStats ExportGguf(const Store& store, const std::string& name, const std::string& path,
                           const GgufExportOptions& opts) {
  if (fs::exists(path) && !opts.force)
    throw Error(path + " exists; pass --force to replace it, or choose another file name");
  if (fs::is_directory(path)) throw Error(path + " is a directory; GGUF export writes one file");
  TensorReader reader(store, opts.verify);
  Plan p = MakePlan(store, name, opts, reader);
  const std::string header = p.w.Header();
  const fs::path abs = fs::absolute(path);
  AtomicFile out(abs.string(), abs.parent_path().string());
  if (opts.on_start) opts.on_start(p.w.DataBytes());
  out.file().Append(header);
  for (const Item& it : p.items) {
    WriteItem(store, reader, it, out.file(), opts.bytes_done);
    out.file().AppendZeros(GgufWriter::Padding(it.nbytes));
  }
  out.file().Sync();
  out.Commit();
  GgufExportStats s;
  s.file_bytes = header.size() + p.w.DataBytes();
  s.tensors = p.items.size();
  s.file_type = p.file_type;
  s.tokenizer_model = p.tok_model;
  s.tokenizer_pre = p.tok_pre;
  return s;
}

}  // namespace strata
