// GGUF metadata reader (bounds-checked cursor over the mapped bytes) and the
// GGUF vocabulary -> Hugging Face tokenizer.json conversion.
#include "strata/formats/gguf.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "strata/formats/error.h"
#include "strata/formats/file.h"

namespace strata {

namespace {

constexpr uint32_t kMaxGgufVersion = 3;
constexpr uint32_t kGgmlMaxDims = 4;

// A cursor that refuses to read past the end, with messages that say where.
class Cursor {
 public:
  Cursor(std::string_view b, const std::string& what) : b_(b), what_(what) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return b_.size() - pos_; }

  [[noreturn]] void Fail(const std::string& msg) const {
    throw Error("GGUF " + what_ + ": " + msg + "; the file is truncated or not a valid GGUF file");
  }
  void Need(uint64_t n, const std::string& field) const {
    if (n > left())
      Fail(field + " at offset " + std::to_string(pos_) + " needs " + std::to_string(n) + " bytes but only " +
           std::to_string(left()) + " remain");
  }
  template <class T>
  T Read(const std::string& field) {
    Need(sizeof(T), field);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string ReadString(const std::string& field) {
    const uint64_t at = pos_;
    uint64_t n = Read<uint64_t>(field + " length");
    if (n > left())
      Fail(field + " at offset " + std::to_string(at) + " has length " + std::to_string(n) +
           ", past the end of the data (" + std::to_string(left()) + " bytes remain)");
    std::string s(b_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  void Skip(uint64_t n, const std::string& field) {
    Need(n, field);
    pos_ += n;
  }

 private:
  std::string_view b_;
  const std::string& what_;
  uint64_t pos_ = 0;
};

size_t ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    default: return 0;
  }
}

GgufType ReadType(Cursor& c, const std::string& field) {
  const uint64_t at = c.pos();
  uint32_t t = c.Read<uint32_t>(field);
  if (t > static_cast<uint32_t>(GgufType::kFloat64))
    c.Fail(field + " at offset " + std::to_string(at) + " is " + std::to_string(t) + ", not a GGUF value type (0-12)");
  return static_cast<GgufType>(t);
}

// Reads one scalar into v (u/i/f set for numbers, u for bool).
void ReadScalar(Cursor& c, GgufType t, GgufValue& v, const std::string& field) {
  auto setu = [&](uint64_t x) { v.u = x; v.i = static_cast<int64_t>(x); v.f = static_cast<double>(x); };
  auto seti = [&](int64_t x) { v.i = x; v.u = static_cast<uint64_t>(x); v.f = static_cast<double>(x); };
  switch (t) {
    case GgufType::kUint8: setu(c.Read<uint8_t>(field)); break;
    case GgufType::kInt8: seti(c.Read<int8_t>(field)); break;
    case GgufType::kUint16: setu(c.Read<uint16_t>(field)); break;
    case GgufType::kInt16: seti(c.Read<int16_t>(field)); break;
    case GgufType::kUint32: setu(c.Read<uint32_t>(field)); break;
    case GgufType::kInt32: seti(c.Read<int32_t>(field)); break;
    case GgufType::kUint64: setu(c.Read<uint64_t>(field)); break;
    case GgufType::kInt64: seti(c.Read<int64_t>(field)); break;
    case GgufType::kFloat32: v.f = c.Read<float>(field); break;
    case GgufType::kFloat64: v.f = c.Read<double>(field); break;
    case GgufType::kBool: {
      uint8_t b = c.Read<uint8_t>(field);
      if (b > 1) c.Fail(field + " is a bool with value " + std::to_string(b) + " (must be 0 or 1)");
      setu(b);
      break;
    }
    default: c.Fail(field + ": not a scalar type");
  }
}

void ReadValue(Cursor& c, GgufType t, GgufValue& v, const std::string& field, int depth);

void ReadArray(Cursor& c, GgufValue& v, const std::string& field, int depth) {
  if (depth > 8) c.Fail(field + ": arrays nested more than 8 deep");
  v.elem_type = ReadType(c, field + " element type");
  const uint64_t at = c.pos();
  v.count = c.Read<uint64_t>(field + " element count");
  // Every element takes at least this many bytes: a count that cannot fit in
  // what is left is rejected before anything is allocated.
  const uint64_t min_size = v.elem_type == GgufType::kString ? 8 : v.elem_type == GgufType::kArray ? 12 : ScalarSize(v.elem_type);
  if (v.count > c.left() / min_size)
    c.Fail(field + " at offset " + std::to_string(at) + " claims " + std::to_string(v.count) + " elements of type " +
           std::string(GgufTypeName(v.elem_type)) + ", more than the " + std::to_string(c.left()) +
           " remaining bytes can hold");
  if (v.elem_type == GgufType::kString) {
    v.strings.reserve(v.count);
    for (uint64_t k = 0; k < v.count; ++k) v.strings.push_back(c.ReadString(field + "[" + std::to_string(k) + "]"));
  } else if (v.elem_type == GgufType::kArray) {
    for (uint64_t k = 0; k < v.count; ++k) {
      GgufValue inner;
      inner.type = GgufType::kArray;
      ReadArray(c, inner, field + "[" + std::to_string(k) + "]", depth + 1);
    }
  } else {
    v.numbers.reserve(v.count);
    GgufValue e;
    for (uint64_t k = 0; k < v.count; ++k) {
      ReadScalar(c, v.elem_type, e, field);
      v.numbers.push_back(e.f);
    }
  }
}

void ReadValue(Cursor& c, GgufType t, GgufValue& v, const std::string& field, int depth) {
  v.type = t;
  if (t == GgufType::kString) v.s = c.ReadString(field);
  else if (t == GgufType::kArray) ReadArray(c, v, field, depth);
  else ReadScalar(c, t, v, field);
}

// ggml's type_traits: block elements and bytes (sizeof(block_<type>)).
constexpr GgmlType kGgmlTypes[] = {
    {0, "F32", 1, 4},          {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},       {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},     {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},    {15, "Q8_K", 256, 292},  {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98},  {19, "IQ1_S", 256, 50},  {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
    {26, "I32", 1, 4},         {27, "I64", 1, 8},       {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},        {34, "TQ1_0", 256, 54},  {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
};

std::string TensorField(uint64_t k, const std::string& name) {
  return "tensor info " + std::to_string(k) + (name.empty() ? "" : " (\"" + name + "\")");
}

// One tensor info; `offset` is left relative to the data section.
GgufTensorInfo ReadTensorInfo(Cursor& c, uint64_t k, uint64_t alignment) {
  GgufTensorInfo t;
  t.name = c.ReadString(TensorField(k, "") + " name");
  const std::string field = TensorField(k, t.name);
  if (t.name.empty()) c.Fail(field + " has an empty name");
  uint32_t dims = c.Read<uint32_t>(field + " n_dims");
  if (dims > kGgmlMaxDims) c.Fail(field + " has " + std::to_string(dims) + " dimensions (at most 4)");
  uint64_t numel = 1;
  for (uint32_t d = 0; d < dims; ++d) {
    const int64_t ne = c.Read<int64_t>(field + " dimension " + std::to_string(d));
    if (ne < 0) c.Fail(field + " dimension " + std::to_string(d) + " is " + std::to_string(ne) + " (negative)");
    if (ne != 0 && numel > static_cast<uint64_t>(INT64_MAX) / static_cast<uint64_t>(ne))
      c.Fail(field + " has more elements than fit in 64 bits");
    numel *= static_cast<uint64_t>(ne);
    t.shape.insert(t.shape.begin(), ne);
  }
  t.type = c.Read<uint32_t>(field + " type");
  const GgmlType* type = FindGgmlType(t.type);
  if (!type) c.Fail(field + " has type id " + std::to_string(t.type) + ", which is no GGML tensor type");
  const int64_t row = t.shape.empty() ? 1 : t.shape.back();
  if (row % type->block_elems != 0)
    c.Fail(field + " is " + std::string(type->name) + " with rows of " + std::to_string(row) +
           " elements, not a whole number of its " + std::to_string(type->block_elems) + "-element blocks");
  const uint64_t blocks = numel / type->block_elems;
  if (blocks > UINT64_MAX / type->block_bytes) c.Fail(field + " has a size that overflows 64 bits");
  t.nbytes = blocks * type->block_bytes;
  t.offset = c.Read<uint64_t>(field + " offset");
  if (t.offset % alignment != 0)
    c.Fail(field + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
           std::to_string(alignment));
  return t;
}

// Places every tensor's data: after the aligned end of the infos, inside the
// file, and overlapping no other tensor's.
void PlaceTensors(Cursor& c, std::vector<GgufTensorInfo>& ts, uint64_t alignment, uint64_t file_size) {
  const uint64_t data_start = (c.pos() + alignment - 1) / alignment * alignment;
  for (GgufTensorInfo& t : ts) {
    // No wrap-around near 2^64.
    if (data_start > file_size || t.offset > file_size - data_start || t.nbytes > file_size - data_start - t.offset)
      c.Fail("tensor \"" + t.name + "\" places its " + std::to_string(t.nbytes) + " bytes at " +
             (t.offset > UINT64_MAX - data_start ? std::string("an offset past 2^64")
                                                 : std::to_string(data_start + t.offset)) +
             ", past the end of the file (" + std::to_string(file_size) + " bytes)");
    t.offset += data_start;
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : ts) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensorInfo& a = *by_offset[k - 1];
    const GgufTensorInfo& b = *by_offset[k];
    if (a.offset + a.nbytes > b.offset && a.nbytes > 0 && b.nbytes > 0)
      c.Fail("the data of tensors \"" + a.name + "\" (bytes " + std::to_string(a.offset) + " to " +
             std::to_string(a.offset + a.nbytes) + ") and \"" + b.name + "\" (from byte " +
             std::to_string(b.offset) + ") overlap");
  }
}

std::vector<GgufTensorInfo> ReadTensorInfos(Cursor& c, uint64_t count, uint64_t alignment, uint64_t file_size) {
  std::vector<GgufTensorInfo> ts;
  std::map<std::string, uint64_t> seen;
  for (uint64_t k = 0; k < count; ++k) {
    ts.push_back(ReadTensorInfo(c, k, alignment));
    if (!seen.emplace(ts.back().name, k).second)
      c.Fail("tensor infos " + std::to_string(seen[ts.back().name]) + " and " + std::to_string(k) +
             " are both named \"" + ts.back().name + "\"");
  }
  PlaceTensors(c, ts, alignment, file_size);
  return ts;
}

}  // namespace

const GgmlType* FindGgmlType(uint32_t id) {
  for (const GgmlType& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

namespace {

// HF names to llama.cpp's (gguf-py's tensor_mapping for the llama family).
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},      {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},       {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},       {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},          {"self_attn.v_proj.bias", "attn_v.bias"},
};
constexpr std::pair<std::string_view, std::string_view> kOtherNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"}};

// "<prefix><index>.<rest>" -> (index, rest).
std::optional<std::pair<int, std::string_view>> SplitIndexed(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  if (name.empty() || name[0] < '0' || name[0] > '9') return std::nullopt;
  int index = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), index);
  if (ec != std::errc() || end == name.data() + name.size() || *end != '.' ||
      (name[0] == '0' && end - name.data() > 1))
    return std::nullopt;
  return std::make_pair(index, name.substr(end + 1 - name.data()));
}

}  // namespace

std::optional<std::string> GgufTensorName(std::string_view hf) {
  for (const auto& [h, g] : kOtherNames)
    if (hf == h) return std::string(g);
  if (auto s = SplitIndexed(hf, "model.layers."))
    for (const auto& [h, g] : kLayerNames)
      if (s->second == h) return "blk." + std::to_string(s->first) + "." + std::string(g);
  return std::nullopt;
}

std::optional<std::string> HfTensorName(std::string_view gguf) {
  for (const auto& [h, g] : kOtherNames)
    if (gguf == g) return std::string(h);
  if (auto s = SplitIndexed(gguf, "blk."))
    for (const auto& [h, g] : kLayerNames)
      if (s->second == g) return "model.layers." + std::to_string(s->first) + "." + std::string(h);
  return std::nullopt;
}

int64_t GgufPermutedRow(int64_t r, int64_t rows, int heads) {
  const int64_t half = rows / heads / 2, h = r / (2 * half), i = (r % (2 * half)) / 2, j = r % 2;
  return h * 2 * half + j * half + i;
}

std::string_view GgufTypeName(GgufType t) {
  static constexpr std::string_view kNames[] = {"uint8", "int8",  "uint16", "int16", "uint32", "int32", "float32",
                                                "bool",  "string", "array", "uint64", "int64", "float64"};
  auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

GgufFile GgufFile::Parse(std::string_view bytes, const std::string& what) {
  GgufFile f;
  f.what_ = what;
  Cursor c(bytes, f.what_);
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "GGUF", 4) != 0) {
    std::string got = bytes.size() < 4 ? "only " + std::to_string(bytes.size()) + " bytes" : "magic \"" + std::string(bytes.substr(0, 4)) + "\"";
    throw Error("GGUF " + what + ": not a GGUF file (" + got + ", expected magic \"GGUF\")");
  }
  c.Skip(4, "magic");
  f.version_ = c.Read<uint32_t>("version");
  if (f.version_ > kMaxGgufVersion)
    throw Error("GGUF " + what + ": version " + std::to_string(f.version_) + " is newer than strata reads (2 and 3); "
                "upgrade strata or convert the file with an older gguf writer");
  if (f.version_ < 2)
    throw Error("GGUF " + what + ": version " + std::to_string(f.version_) + " is too old (strata reads 2 and 3); "
                "re-convert it with a current llama.cpp");
  f.tensor_count_ = c.Read<uint64_t>("tensor count");
  const uint64_t kv_count = c.Read<uint64_t>("key/value count");
  if (kv_count > c.left() / 14)  // key length, a 1-byte key, type, and a value of at least 1 byte
    c.Fail("key/value count " + std::to_string(kv_count) + " is more than the remaining " + std::to_string(c.left()) + " bytes can hold");
  if (f.tensor_count_ > c.left() / 24)  // name length, n_dims, type, offset
    c.Fail("tensor count " + std::to_string(f.tensor_count_) + " is more than the remaining " + std::to_string(c.left()) + " bytes can hold");
  for (uint64_t k = 0; k < kv_count; ++k) {
    std::string key = c.ReadString("key " + std::to_string(k));
    if (key.empty()) c.Fail("key " + std::to_string(k) + " is empty");
    if (f.Find(key)) c.Fail("key \"" + key + "\" appears twice");
    GgufValue v;
    ReadValue(c, ReadType(c, "type of \"" + key + "\""), v, "value of \"" + key + "\"", 0);
    f.entries_.emplace_back(std::move(key), std::move(v));
  }
  uint64_t alignment = 32;
  if (const GgufValue* a = f.Find("general.alignment")) {
    if (a->type != GgufType::kUint32 || a->u == 0 || (a->u & (a->u - 1)) != 0)
      c.Fail("general.alignment must be a uint32 power of two");
    alignment = a->u;
  }
  f.tensors_ = ReadTensorInfos(c, f.tensor_count_, alignment, bytes.size());
  return f;
}

GgufFile GgufFile::Read(const std::string& path) {
  MappedFile m(path);
  return Parse(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), path);
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  for (const auto& [k, v] : entries_)
    if (k == key) return &v;
  return nullptr;
}

const GgufValue& GgufFile::Require(std::string_view key, const char* expected) const {
  const GgufValue* v = Find(key);
  if (!v) throw Error("GGUF " + what_ + ": no key \"" + std::string(key) + "\" (" + expected + ")");
  return *v;
}

namespace {
bool IsInteger(GgufType t) {
  return t != GgufType::kFloat32 && t != GgufType::kFloat64 && t != GgufType::kBool && t != GgufType::kString &&
         t != GgufType::kArray;
}
[[noreturn]] void WrongType(const std::string& what, std::string_view key, const GgufValue& v, const char* expected) {
  std::string got(GgufTypeName(v.type));
  if (v.type == GgufType::kArray) got = "array of " + std::string(GgufTypeName(v.elem_type));
  throw Error("GGUF " + what + ": key \"" + std::string(key) + "\" is " + got + ", expected " + expected);
}
}  // namespace

std::string GgufFile::GetString(std::string_view key) const {
  const GgufValue& v = Require(key, "a string");
  if (v.type != GgufType::kString) WrongType(what_, key, v, "a string");
  return v.s;
}

int64_t GgufFile::GetInteger(std::string_view key) const {
  const GgufValue& v = Require(key, "an integer");
  if (!IsInteger(v.type)) WrongType(what_, key, v, "an integer");
  return v.i;
}

bool GgufFile::GetBool(std::string_view key) const {
  const GgufValue& v = Require(key, "a bool");
  if (v.type != GgufType::kBool) WrongType(what_, key, v, "a bool");
  return v.u != 0;
}

const std::vector<std::string>& GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue& v = Require(key, "an array of strings");
  if (v.type != GgufType::kArray || v.elem_type != GgufType::kString) WrongType(what_, key, v, "an array of strings");
  return v.strings;
}

const std::vector<double>& GgufFile::GetNumberArray(std::string_view key) const {
  const GgufValue& v = Require(key, "an array of numbers");
  if (v.type != GgufType::kArray || v.elem_type == GgufType::kString || v.elem_type == GgufType::kArray)
    WrongType(what_, key, v, "an array of numbers");
  return v.numbers;
}

std::optional<std::string> GgufFile::FindString(std::string_view key) const {
  return Find(key) ? std::optional(GetString(key)) : std::nullopt;
}
std::optional<int64_t> GgufFile::FindInteger(std::string_view key) const {
  return Find(key) ? std::optional(GetInteger(key)) : std::nullopt;
}
std::optional<bool> GgufFile::FindBool(std::string_view key) const {
  return Find(key) ? std::optional(GetBool(key)) : std::nullopt;
}

// ---- GGUF vocabulary -> tokenizer.json ----

namespace {

using OJson = nlohmann::ordered_json;

// The pre-tokenizer regexes, exactly as the Hugging Face tokenizer.json files
// of Llama 3 and Qwen2 spell them.
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// transformers' LlamaTokenizer.default_chat_template (the Llama 2 chat format),
// which HF applied to SentencePiece Llama vocabularies without a template.
constexpr const char* kLlama2ChatTemplate =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

struct GgufVocab {
  std::string model, pre;
  std::vector<std::string> tokens;
  std::vector<double> scores;
  std::vector<int> types;
  std::vector<std::string> merges;
  int bos = -1, eos = -1, unk = -1;
  std::optional<bool> add_bos, add_eos;
  std::optional<std::string> chat_template;
};

}  // namespace

std::vector<int> GgufTokenTypes(const GgufFile& f, size_t n) {
  std::vector<int> types(n, static_cast<int>(GgufTokenType::kNormal));
  if (!f.Find("tokenizer.ggml.token_type")) return types;
  const auto& t = f.GetNumberArray("tokenizer.ggml.token_type");
  if (t.size() != n)
    throw Error("GGUF " + f.what() + ": tokenizer.ggml.token_type has " + std::to_string(t.size()) +
                " entries but tokenizer.ggml.tokens has " + std::to_string(n));
  for (size_t i = 0; i < n; ++i) {
    // Also NaN: converting a float outside int's range is undefined.
    if (!(t[i] >= 0 && t[i] <= 1000))
      throw Error("GGUF " + f.what() + ": tokenizer.ggml.token_type[" + std::to_string(i) + "] is " +
                  std::to_string(t[i]) + ", not a token type (1 to 6)");
    types[i] = static_cast<int>(t[i]);
  }
  return types;
}

namespace {

GgufVocab ReadVocab(const GgufFile& f) {
  GgufVocab v;
  v.model = f.GetString("tokenizer.ggml.model");
  v.pre = f.FindString("tokenizer.ggml.pre").value_or("default");
  v.tokens = f.GetStringArray("tokenizer.ggml.tokens");
  const size_t n = v.tokens.size();
  auto check_len = [&](const char* key, size_t len) {
    if (len != n)
      throw Error("GGUF " + f.what() + ": " + key + " has " + std::to_string(len) + " entries but tokenizer.ggml.tokens has " +
                  std::to_string(n));
  };
  if (f.Find("tokenizer.ggml.scores")) v.scores = f.GetNumberArray("tokenizer.ggml.scores");
  else v.scores.assign(n, 0.0);
  check_len("tokenizer.ggml.scores", v.scores.size());
  v.types = GgufTokenTypes(f, n);
  if (f.Find("tokenizer.ggml.merges")) v.merges = f.GetStringArray("tokenizer.ggml.merges");
  auto id = [&](const char* key) -> int {
    auto x = f.FindInteger(key);
    if (!x) return -1;
    if (*x < 0 || *x >= static_cast<int64_t>(n))
      throw Error("GGUF " + f.what() + ": " + key + " is " + std::to_string(*x) + ", outside the vocabulary of " +
                  std::to_string(n) + " tokens");
    return static_cast<int>(*x);
  };
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  v.unk = id("tokenizer.ggml.unknown_token_id");
  v.add_bos = f.FindBool("tokenizer.ggml.add_bos_token");
  v.add_eos = f.FindBool("tokenizer.ggml.add_eos_token");
  v.chat_template = f.FindString("tokenizer.chat_template");
  return v;
}

size_t Utf8Len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// transformers' SentencePieceExtractor: every split of every piece into two
// pieces is a merge, ranked by the merged piece's score (highest first), ties
// in vocabulary order. Only normal and user-defined pieces are merge results,
// so control and byte tokens never come out of BPE.
std::vector<std::pair<std::string, std::string>> SpmMerges(const GgufVocab& v) {
  std::unordered_map<std::string, int> ids;
  for (size_t i = 0; i < v.tokens.size(); ++i) ids.emplace(v.tokens[i], static_cast<int>(i));
  struct M {
    int l, r;
    double score;
  };
  std::vector<M> merges;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.types[i] != static_cast<int>(GgufTokenType::kNormal) && v.types[i] != static_cast<int>(GgufTokenType::kUserDefined))
      continue;
    const std::string& t = v.tokens[i];
    std::vector<M> local;
    for (size_t k = Utf8Len(t[0]); k < t.size(); k += Utf8Len(t[k])) {
      auto l = ids.find(t.substr(0, k)), r = ids.find(t.substr(k));
      if (l != ids.end() && r != ids.end()) local.push_back({l->second, r->second, v.scores[i]});
    }
    std::sort(local.begin(), local.end(), [](const M& a, const M& b) { return std::pair(a.l, a.r) < std::pair(b.l, b.r); });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const M& a, const M& b) { return a.score > b.score; });
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const M& m : merges) out.emplace_back(v.tokens[m.l], v.tokens[m.r]);
  return out;
}

OJson AddedToken(int id, const std::string& content, bool special) {
  return OJson{{"id", id},           {"content", content}, {"single_word", false}, {"lstrip", false},
               {"rstrip", false},    {"normalized", !special}, {"special", special}};
}

OJson AddedTokens(const GgufVocab& v) {
  OJson out = OJson::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    auto t = static_cast<GgufTokenType>(v.types[i]);
    if (t == GgufTokenType::kControl || t == GgufTokenType::kUnknown)
      out.push_back(AddedToken(static_cast<int>(i), v.tokens[i], true));
    else if (t == GgufTokenType::kUserDefined)
      out.push_back(AddedToken(static_cast<int>(i), v.tokens[i], false));
  }
  return out;
}

// The vocabulary in id order. ordered_json's operator[] searches linearly, so
// entries are appended to its underlying vector directly (a duplicate token
// keeps the last id, as llama.cpp does).
OJson Vocab(const GgufVocab& v) {
  OJson out = OJson::object();
  auto& entries = static_cast<std::vector<std::pair<const std::string, OJson>>&>(out.get_ref<OJson::object_t&>());
  entries.reserve(v.tokens.size());
  std::unordered_map<std::string_view, size_t> seen;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    auto [it, fresh] = seen.emplace(v.tokens[i], entries.size());
    if (fresh) entries.emplace_back(v.tokens[i], static_cast<int>(i));
    else entries[it->second].second = static_cast<int>(i);
  }
  return out;
}

OJson BpeModel(const GgufVocab& v, OJson merges, bool byte_fallback, bool ignore_merges) {
  OJson m;
  m["type"] = "BPE";
  m["dropout"] = nullptr;
  m["unk_token"] = v.unk >= 0 ? OJson(v.tokens[v.unk]) : OJson(nullptr);
  m["continuing_subword_prefix"] = nullptr;
  m["end_of_word_suffix"] = nullptr;
  m["fuse_unk"] = byte_fallback;
  m["byte_fallback"] = byte_fallback;
  m["ignore_merges"] = ignore_merges;
  m["vocab"] = Vocab(v);
  m["merges"] = std::move(merges);
  return m;
}

// A merge as "left right", or as a pair when a side contains a space (the
// newer tokenizer.json form, which is unambiguous).
OJson MergeJson(const std::string& l, const std::string& r) {
  if (l.find(' ') == std::string::npos && r.find(' ') == std::string::npos) return l + " " + r;
  return OJson::array({l, r});
}

OJson TemplateProcessing(const GgufVocab& v, bool add_bos, bool add_eos) {
  OJson single = OJson::array(), pair = OJson::array(), specials = OJson::object();
  // [BOS] $A [EOS] for one sequence; the pair repeats it for $B with type 1.
  auto append = [&](OJson& seq, const char* name, int type_id) {
    for (int id : {add_bos ? v.bos : -1, -2, add_eos ? v.eos : -1}) {
      if (id == -2) {
        seq.push_back({{"Sequence", {{"id", name}, {"type_id", type_id}}}});
      } else if (id >= 0) {
        seq.push_back({{"SpecialToken", {{"id", v.tokens[id]}, {"type_id", type_id}}}});
        specials[v.tokens[id]] = {{"id", v.tokens[id]}, {"ids", {id}}, {"tokens", {v.tokens[id]}}};
      }
    }
  };
  append(single, "A", 0);
  append(pair, "A", 0);
  append(pair, "B", 1);
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

OJson SpmTokenizerJson(const GgufVocab& v, bool add_bos, bool add_eos) {
  OJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = AddedTokens(v);
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = TemplateProcessing(v, add_bos, add_eos);
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  OJson merges = OJson::array();
  for (const auto& [l, r] : SpmMerges(v)) merges.push_back(MergeJson(l, r));
  j["model"] = BpeModel(v, std::move(merges), /*byte_fallback=*/true, /*ignore_merges=*/false);
  return j;
}

OJson ByteLevel(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

OJson Gpt2TokenizerJson(const GgufVocab& v, const std::string& what) {
  OJson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = AddedTokens(v);
  j["normalizer"] = nullptr;
  bool ignore_merges = false;
  if (v.pre == "gpt-2" || v.pre == "default") {
    j["pre_tokenizer"] = ByteLevel(true);
  } else if (v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "qwen2") {
    const bool qwen = v.pre == "qwen2";
    if (qwen) j["normalizer"] = {{"type", "NFC"}};
    OJson split = {{"type", "Split"}, {"pattern", {{"Regex", qwen ? kQwen2Regex : kLlama3Regex}}},
                   {"behavior", "Isolated"}, {"invert", false}};
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {split, ByteLevel(false)}}};
    ignore_merges = !qwen;
  } else {
    throw Error("GGUF " + what + ": tokenizer.ggml.pre \"" + v.pre +
                "\" is not supported (strata knows gpt-2, llama-bpe and qwen2)");
  }
  j["post_processor"] = ByteLevel(true);
  j["decoder"] = ByteLevel(true);
  OJson merges = OJson::array();
  for (const std::string& m : v.merges) {
    size_t sp = m.find(' ');
    if (sp == std::string::npos || m.find(' ', sp + 1) != std::string::npos)
      throw Error("GGUF " + what + ": merge \"" + m + "\" is not two tokens separated by one space");
    merges.push_back(m);
  }
  j["model"] = BpeModel(v, std::move(merges), /*byte_fallback=*/false, ignore_merges);
  return j;
}

std::string Dump(const OJson& j, const std::string& what) {
  try {
    return j.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    throw Error("GGUF " + what + ": the vocabulary cannot be written as JSON (" + e.what() + "): a token is not valid UTF-8");
  }
}

}  // namespace

namespace {

// The pre-tokenizer name whose tokenizer.json Gpt2TokenizerJson writes with
// this pre_tokenizer, or "" when none does.
std::string PreTokenizerName(const nlohmann::json& pre) {
  auto byte_level = [](const nlohmann::json& p, bool regex) {
    return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true) == regex;
  };
  if (byte_level(pre, true)) return "gpt-2";
  if (!pre.is_object() || pre.value("type", "") != "Sequence" || !pre.contains("pretokenizers")) return "";
  const auto& ps = pre["pretokenizers"];
  if (!ps.is_array() || ps.size() != 2 || !byte_level(ps[1], false)) return "";
  const auto& split = ps[0];
  if (!split.is_object() || split.value("type", "") != "Split" || !split.contains("pattern") ||
      !split["pattern"].is_object() || !split["pattern"].contains("Regex"))
    return "";
  const std::string re = split["pattern"]["Regex"].is_string() ? split["pattern"]["Regex"].get<std::string>() : "";
  if (re == kLlama3Regex) return "llama-bpe";
  if (re == kQwen2Regex) return "qwen2";
  return "";
}

// The SentencePiece-style normalizer transformers writes for Llama/Mistral
// tokenizers (" " -> "▁", possibly with a prepended "▁"), or a Metaspace pre-tokenizer.
bool SpmStyle(const nlohmann::json& tok) {
  const std::string dumped = tok.value("normalizer", nlohmann::json()).dump() + tok.value("pre_tokenizer", nlohmann::json()).dump();
  return dumped.find("\u2581") != std::string::npos || dumped.find("Metaspace") != std::string::npos;
}

std::string MergeString(const nlohmann::json& m, const std::string& what) {
  if (m.is_string()) return m.get<std::string>();
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return m[0].get<std::string>() + " " + m[1].get<std::string>();
  throw Error(what + ": a merge is neither \"a b\" nor [\"a\", \"b\"]");
}

bool IsByteToken(const std::string& t) {
  return t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
         std::isxdigit(static_cast<unsigned char>(t[4]));
}

}  // namespace

GgufVocabKeys HfToGgufVocab(std::string_view tokenizer_json, std::string_view tokenizer_config_json, int vocab_size,
                            const std::string& what) {
  nlohmann::json tok, cfg = nlohmann::json::object();
  try {
    tok = nlohmann::json::parse(tokenizer_json);
    if (!tokenizer_config_json.empty()) cfg = nlohmann::json::parse(tokenizer_config_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": not JSON (" + std::string(e.what()) + ")");
  }
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object() || tok["model"].value("type", "") != "BPE")
    throw Error(what + ": strata writes GGUF vocabularies for BPE tokenizers (byte-level, or with byte fallback) only");
  const auto& model = tok["model"];
  GgufVocabKeys v;
  std::vector<std::string> tokens;
  auto put = [&](int id, const std::string& t) {
    if (id < 0 || id > (1 << 24)) throw Error(what + ": token id " + std::to_string(id) + " is out of range");
    if (static_cast<size_t>(id) >= tokens.size()) tokens.resize(id + 1);
    tokens[id] = t;
  };
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw Error(what + ": model.vocab is missing");
  for (const auto& [t, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) throw Error(what + ": the id of token " + nlohmann::json(t).dump() + " is not an integer");
    put(id.get<int>(), t);
  }
  std::map<int, bool> added;  // id -> special
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array())
    for (const auto& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        throw Error(what + ": malformed added_tokens entry");
      put(a["id"].get<int>(), a["content"].get<std::string>());
      added[a["id"].get<int>()] = a.value("special", false);
    }
  if (static_cast<int>(tokens.size()) < vocab_size) tokens.resize(vocab_size);
  v.types.assign(tokens.size(), static_cast<int32_t>(GgufTokenType::kNormal));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty()) {
      tokens[i] = "[PAD" + std::to_string(i) + "]";
      v.types[i] = static_cast<int32_t>(GgufTokenType::kUnused);
    }
  }
  auto id_of = [&](const char* key) {
    const auto& t = cfg.contains(key) ? cfg[key] : nlohmann::json();
    const std::string s = t.is_string() ? t.get<std::string>() : t.is_object() ? t.value("content", "") : "";
    if (s.empty()) return -1;
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == s) return static_cast<int>(i);
    return -1;
  };
  v.bos = id_of("bos_token");
  v.eos = id_of("eos_token");
  v.unk = id_of("unk_token");
  if (v.unk < 0 && model.contains("unk_token") && model["unk_token"].is_string())
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == model["unk_token"].get<std::string>()) v.unk = static_cast<int>(i);
  for (const auto& [id, special] : added)
    v.types[id] = static_cast<int32_t>(special ? GgufTokenType::kControl : GgufTokenType::kUserDefined);
  if (v.unk >= 0) v.types[v.unk] = static_cast<int32_t>(GgufTokenType::kUnknown);
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) v.add_bos = cfg["add_bos_token"].get<bool>();
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) v.add_eos = cfg["add_eos_token"].get<bool>();
  if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) v.chat_template = cfg["chat_template"].get<std::string>();

  std::vector<std::string> merges;
  if (model.contains("merges") && model["merges"].is_array())
    for (const auto& m : model["merges"]) merges.push_back(MergeString(m, what));
  const bool byte_fallback = model.value("byte_fallback", false);
  if (byte_fallback && SpmStyle(tok)) {
    v.model = "llama";
    v.pre = "default";
    // A token's score ranks it by its first merge; tokens no merge makes keep 0.
    std::unordered_map<std::string, int> id;
    for (size_t i = 0; i < tokens.size(); ++i) id.emplace(tokens[i], static_cast<int>(i));
    v.scores.assign(tokens.size(), 0.0f);
    std::vector<bool> seen(tokens.size(), false);
    for (size_t r = 0; r < merges.size(); ++r) {
      const size_t sp = merges[r].find(' ');
      auto it = id.find(merges[r].substr(0, sp) + merges[r].substr(sp + 1));
      if (it == id.end() || seen[it->second]) continue;
      seen[it->second] = true;
      v.scores[it->second] = -static_cast<float>(r);
    }
    for (size_t i = 0; i < tokens.size(); ++i)
      if (v.types[i] == static_cast<int32_t>(GgufTokenType::kNormal) && IsByteToken(tokens[i]))
        v.types[i] = static_cast<int32_t>(GgufTokenType::kByte);
  } else {
    v.model = "gpt2";
    v.pre = PreTokenizerName(tok.value("pre_tokenizer", nlohmann::json()));
    if (v.pre.empty())
      throw Error(what + ": its pre-tokenizer is not one llama.cpp knows by name (strata recognizes gpt-2, "
                         "llama-bpe and qwen2); llama.cpp could not tokenize this vocabulary as it does");
    v.merges = std::move(merges);
  }
  v.tokens = std::move(tokens);
  return v;
}

HfTokenizerFiles GgufVocabToHf(const GgufFile& f) {
  GgufVocab v = ReadVocab(f);
  HfTokenizerFiles out;
  OJson tok, cfg = OJson::object();
  bool add_bos = false;
  if (v.model == "llama") {
    if (!f.Find("tokenizer.ggml.scores")) throw Error("GGUF " + f.what() + ": a \"llama\" vocabulary needs tokenizer.ggml.scores");
    add_bos = v.add_bos.value_or(true);
    tok = SpmTokenizerJson(v, add_bos, v.add_eos.value_or(false));
    cfg["tokenizer_class"] = "LlamaTokenizer";
    cfg["legacy"] = true;
  } else if (v.model == "gpt2") {
    if (v.merges.empty()) throw Error("GGUF " + f.what() + ": a \"gpt2\" vocabulary needs tokenizer.ggml.merges");
    add_bos = v.add_bos.value_or(v.pre == "llama-bpe" || v.pre == "llama3");
    tok = Gpt2TokenizerJson(v, f.what());
    if (add_bos && v.bos >= 0) tok["post_processor"] = TemplateProcessing(v, true, false);
    cfg["tokenizer_class"] = v.pre == "qwen2" ? "Qwen2Tokenizer" : "PreTrainedTokenizerFast";
  } else {
    throw Error("GGUF " + f.what() + ": tokenizer.ggml.model \"" + v.model +
                "\" is not supported (strata converts \"llama\" and \"gpt2\")");
  }
  cfg["add_bos_token"] = add_bos;
  cfg["add_eos_token"] = v.add_eos.value_or(false);
  if (v.bos >= 0) cfg["bos_token"] = v.tokens[v.bos];
  if (v.eos >= 0) cfg["eos_token"] = v.tokens[v.eos];
  if (v.unk >= 0) cfg["unk_token"] = v.tokens[v.unk];
  cfg["clean_up_tokenization_spaces"] = false;
  if (v.chat_template) cfg["chat_template"] = *v.chat_template;
  else if (v.model == "llama") cfg["chat_template"] = kLlama2ChatTemplate;
  out.tokenizer_json = Dump(tok, f.what());
  out.tokenizer_config_json = Dump(cfg, f.what());
  out.vocab_size = static_cast<int>(v.tokens.size());
  out.bos_id = v.bos;
  out.eos_id = v.eos;
  return out;
}

}  // namespace strata
