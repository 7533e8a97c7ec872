// safetensors: the validating header parser, the mmap-backed reader, and the
// layout + streaming writer that reproduce the reference save_file() bytes.
#include "strata/formats/safetensors.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "strata/formats/error.h"

namespace strata {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

using json = nlohmann::json;

[[noreturn]] void Fail(const std::string& what, const std::string& msg) {
  throw Error(what + ": " + msg);
}

// A name as it appears in messages: JSON-quoted, so control characters and
// invalid UTF-8 in hostile names cannot garble the message.
std::string Quote(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string RangeString(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

std::string KnownDTypes() {
  std::string s;
  for (int i = 0;; ++i) {
    auto t = static_cast<DType>(i);
    if (t > DType::kU64) break;
    if (!s.empty()) s += ", ";
    s += DTypeName(t);
  }
  return s;
}

uint64_t ReadLE64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string LE64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

// numel x element size, or nullopt on 64-bit overflow.
std::optional<uint64_t> ByteCount(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t n = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(DTypeSize(dtype)), &n))
    return std::nullopt;
  return n;
}

// Parses the header JSON. nlohmann keeps the last of duplicate keys silently;
// a duplicate tensor name would make the file ambiguous, so the parse callback
// records the first duplicate key of any object and we reject it.
json ParseHeaderJson(const uint8_t* p, uint64_t n, const std::string& what) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  auto on_event = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (ev == json::parse_event_t::key && !keys.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(p, p + n, on_event);
  } catch (const json::exception& e) {
    Fail(what, "safetensors header is not valid JSON (" + std::string(e.what()) +
                   "); the file is corrupt or not safetensors");
  }
  if (!duplicate.empty())
    Fail(what, "safetensors header repeats the key " + Quote(duplicate) +
                   "; each tensor name and field must appear once");
  return j;
}

const json& Field(const std::string& name, const json& entry, const char* key,
                  const std::string& what) {
  auto it = entry.find(key);
  if (it == entry.end())
    Fail(what, "tensor " + Quote(name) + " has no \"" + key +
                   "\"; each tensor needs dtype, shape and data_offsets");
  return *it;
}

DType ParseDType(const std::string& name, const json& v, const std::string& what) {
  if (!v.is_string())
    Fail(what, "tensor " + Quote(name) + " dtype must be a string, got " + v.dump());
  auto t = ParseDTypeName(v.get_ref<const std::string&>());
  if (!t)
    Fail(what, "tensor " + Quote(name) + " has unknown dtype " + v.dump() +
                   "; strata reads " + KnownDTypes());
  return *t;
}

std::vector<int64_t> ParseShape(const std::string& name, const json& v,
                                const std::string& what) {
  const std::string bad = "tensor " + Quote(name) + " shape " + v.dump();
  if (!v.is_array()) Fail(what, bad + " is not a list of dimensions");
  std::vector<int64_t> shape;
  for (const json& d : v) {
    if (d.is_number_unsigned() &&
        d.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      shape.push_back(d.get<int64_t>());
    } else if (d.is_number_integer() && !d.is_number_unsigned()) {
      Fail(what, bad + " has the negative dimension " + d.dump() +
                     "; dimensions must be >= 0");
    } else {
      Fail(what, bad + " has the dimension " + d.dump() +
                     "; dimensions must be integers in [0, 2^63)");
    }
  }
  return shape;
}

std::pair<uint64_t, uint64_t> ParseOffsets(const std::string& name, const json& v,
                                           const std::string& what) {
  const std::string bad = "tensor " + Quote(name) + " data_offsets " + v.dump();
  if (!v.is_array() || v.size() != 2 || !v[0].is_number_unsigned() ||
      !v[1].is_number_unsigned())
    Fail(what, bad + " must be two non-negative integers [begin, end]");
  uint64_t begin = v[0].get<uint64_t>(), end = v[1].get<uint64_t>();
  if (begin > end) Fail(what, bad + " end before they begin");
  return {begin, end};
}

// One tensor entry, checked on its own: fields present and typed, range inside
// the data section, byte length matching shape and dtype.
TensorInfo ParseTensor(const std::string& name, const json& entry, uint64_t data_size,
                       const std::string& what) {
  if (!entry.is_object())
    Fail(what, "tensor " + Quote(name) +
                   " must be an object with dtype, shape and data_offsets, got " +
                   entry.type_name());
  TensorInfo t;
  t.name = name;
  t.dtype = ParseDType(name, Field(name, entry, "dtype", what), what);
  t.shape = ParseShape(name, Field(name, entry, "shape", what), what);
  std::tie(t.begin, t.end) = ParseOffsets(name, Field(name, entry, "data_offsets", what), what);
  const std::string prefix = "tensor " + Quote(name) + " data_offsets " +
                             RangeString(t.begin, t.end);
  if (t.end > data_size)
    Fail(what, prefix + " run past the end of the data section, which holds " +
                   std::to_string(data_size) + " bytes; the file is truncated or corrupt");
  auto need = ByteCount(t.shape, t.dtype);
  const std::string of = "shape " + ShapeString(t.shape) + " of " +
                         std::string(DTypeName(t.dtype));
  if (!need) Fail(what, "tensor " + Quote(name) + " " + of + " overflows a 64-bit byte count");
  if (t.nbytes() != *need)
    Fail(what, prefix + " hold " + std::to_string(t.nbytes()) + " bytes but " + of +
                   " needs " + std::to_string(*need));
  return t;
}

std::map<std::string, std::string> ParseMetadata(const json& v, const std::string& what) {
  const std::string bad = "\"__metadata__\" must be an object of string values";
  if (!v.is_object()) Fail(what, bad + ", got " + std::string(v.type_name()));
  std::map<std::string, std::string> m;
  for (const auto& [k, val] : v.items()) {
    if (!val.is_string()) Fail(what, bad + ", but key " + Quote(k) + " holds " + val.dump());
    m.emplace(k, val.get<std::string>());
  }
  return m;
}

// The reference reader requires the sorted ranges to tile the data section:
// each begins where the previous ended, and the last ends at the end of file.
void CheckTiling(const std::vector<TensorInfo>& tensors, uint64_t data_size,
                 const std::string& what) {
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin < expected)
      Fail(what, "tensors " + Quote(prev->name) + " " + RangeString(prev->begin, prev->end) +
                     " and " + Quote(t.name) + " " + RangeString(t.begin, t.end) +
                     " overlap in the data section");
    if (t.begin > expected)
      Fail(what, "data bytes [" + std::to_string(expected) + ", " + std::to_string(t.begin) +
                     ") belong to no tensor (gap before tensor " + Quote(t.name) +
                     "); tensors must cover the data section contiguously");
    expected = t.end;
    prev = &t;
  }
  if (expected != data_size)
    Fail(what, "data section holds " + std::to_string(data_size) +
                   " bytes but the tensors cover only the first " +
                   std::to_string(expected) + "; the trailing bytes belong to no tensor");
}

}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

SafetensorsHeader ParseSafetensors(const uint8_t* data, uint64_t size,
                                   const std::string& what) {
  if (size < 8)
    Fail(what, "file is " + std::to_string(size) +
                   " bytes, too short for the 8-byte header length of a safetensors file");
  const uint64_t n = ReadLE64(data);
  if (n > kMaxSafetensorsHeader)
    Fail(what, "safetensors header length " + std::to_string(n) + " exceeds the limit of " +
                   std::to_string(kMaxSafetensorsHeader) +
                   " bytes; the file is corrupt or not safetensors");
  if (n > size - 8)
    Fail(what, "safetensors header length " + std::to_string(n) +
                   " runs past the end of the file (only " + std::to_string(size - 8) +
                   " bytes follow the length); the file is truncated or not safetensors");
  const json j = ParseHeaderJson(data + 8, n, what);
  if (!j.is_object())
    Fail(what, "safetensors header is not a JSON object (got " + std::string(j.type_name()) +
                   ")");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      h.metadata = ParseMetadata(value, what);
    } else {
      h.tensors.push_back(ParseTensor(key, value, data_size, what));
    }
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  CheckTiling(h.tensors, data_size, what);
  return h;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(path), header_(ParseSafetensors(file_.data(), file_.size(), path)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i)
    by_name_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

namespace {

// serde_json's string escaping: '"', '\\' and control characters only, the
// latter as \b \t \n \f \r or \u00xx in lowercase hex, UTF-8 passed through.
// nlohmann's dump with ensure_ascii=false escapes exactly the same way.
std::string JsonString(const std::string& s, const std::string& role) {
  try {
    return json(s).dump();
  } catch (const json::type_error&) {
    throw Error("safetensors " + role + " " + Quote(s) +
                " is not valid UTF-8; the format stores names as JSON strings");
  }
}

std::string TensorJson(const TensorInfo& t) {
  std::string s = JsonString(t.name, "tensor name") + ":{\"dtype\":\"" +
                  std::string(DTypeName(t.dtype)) + "\",\"shape\":[";
  for (size_t i = 0; i < t.shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(t.shape[i]);
  }
  return s + "],\"data_offsets\":[" + std::to_string(t.begin) + "," + std::to_string(t.end) +
         "]}";
}

// Rejects what save_file() could never have written: duplicate or reserved
// names, negative dimensions, sizes past 64 bits.
void CheckSpecs(const std::vector<TensorSpec>& specs) {
  std::set<std::string_view> seen;
  for (const TensorSpec& s : specs) {
    if (s.name == "__metadata__")
      throw Error("safetensors tensor name \"__metadata__\" is reserved for file metadata");
    if (!seen.insert(s.name).second)
      throw Error("safetensors layout has two tensors named " + Quote(s.name) +
                  "; names must be unique within a file");
    for (int64_t d : s.shape)
      if (d < 0)
        throw Error("safetensors tensor " + Quote(s.name) + " has shape " +
                    ShapeString(s.shape) + " with a negative dimension");
  }
}

}  // namespace

SafetensorsLayout LayoutSafetensors(std::vector<TensorSpec> specs,
                                    const std::map<std::string, std::string>& metadata) {
  CheckSpecs(specs);
  // The reference sorts by dtype, larger enum value first, then by name in
  // byte order (std::string compares chars as unsigned, like Rust's str).
  std::sort(specs.begin(), specs.end(), [](const TensorSpec& a, const TensorSpec& b) {
    int ra = SafetensorsDTypeRank(a.dtype), rb = SafetensorsDTypeRank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });

  SafetensorsLayout layout;
  std::string j = "{";
  if (!metadata.empty()) {
    j += "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      if (it != metadata.begin()) j += ',';
      j += JsonString(it->first, "metadata key") + ":" +
           JsonString(it->second, "metadata value");
    }
    j += '}';
  }
  uint64_t offset = 0;
  for (TensorSpec& s : specs) {
    auto n = ByteCount(s.shape, s.dtype);
    if (!n || __builtin_add_overflow(offset, *n, &offset))
      throw Error("safetensors tensor " + Quote(s.name) + " shape " + ShapeString(s.shape) +
                  " overflows a 64-bit file size");
    TensorInfo t{std::move(s.name), s.dtype, std::move(s.shape), offset - *n, offset};
    if (j.size() > 1) j += ',';
    j += TensorJson(t);
    layout.tensors.push_back(std::move(t));
  }
  j += '}';
  // Pad with spaces so the data section starts 8-byte aligned.
  j.resize((j.size() + 7) / 8 * 8, ' ');
  layout.header = LE64(j.size()) + j;
  layout.file_size = layout.header.size() + offset;
  return layout;
}

SafetensorsWriter::SafetensorsWriter(WritableFile* out, std::vector<TensorSpec> specs,
                                     const std::map<std::string, std::string>& metadata)
    : out_(out), layout_(LayoutSafetensors(std::move(specs), metadata)) {
  out_->Append(layout_.header);
}

// Checked before the bytes reach the file, so an over-long stream never
// leaves more on disk than the header promises.
void SafetensorsWriter::Advance(uint64_t n) {
  const uint64_t total = layout_.file_size - layout_.header.size();
  if (n > total - written_)
    throw Error(out_->path() + ": appending " + std::to_string(n) +
                " bytes would write past the safetensors data section (" +
                std::to_string(written_) + " of " + std::to_string(total) +
                " bytes already written); the tensor bytes do not match the layout");
  written_ += n;
}

void SafetensorsWriter::Append(const void* data, size_t n) {
  Advance(n);
  out_->Append(data, n);
}

void SafetensorsWriter::AppendZeros(size_t n) {
  Advance(n);
  out_->AppendZeros(n);
}

void SafetensorsWriter::AppendFrom(int fd, uint64_t offset, uint64_t n) {
  Advance(n);
  out_->AppendFrom(fd, offset, n);
}

void SafetensorsWriter::Finish() {
  const uint64_t total = layout_.file_size - layout_.header.size();
  if (written_ == total) return;
  std::string missing;
  for (const TensorInfo& t : layout_.tensors)
    if (t.end > written_) {
      missing = "; tensor " + Quote(t.name) + " " + RangeString(t.begin, t.end) +
                " is incomplete";
      break;
    }
  throw Error(out_->path() + ": safetensors data section is short: wrote " +
              std::to_string(written_) + " of " + std::to_string(total) + " bytes" + missing);
}

}  // namespace strata
