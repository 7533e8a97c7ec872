// GGUF v3 serialization: little-endian scalars, strings as u64 length + bytes.
#include "strata/formats/gguf_writer.h"

#include <cstring>

namespace strata {
namespace {

template <class T>
void Put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void PutString(std::string& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out += s;
}

}  // namespace

void GgufWriter::Key(const std::string& key, GgufType t) {
  PutString(kv_, key);
  Put<uint32_t>(kv_, static_cast<uint32_t>(t));
  ++kv_count_;
}

void GgufWriter::AddString(const std::string& key, const std::string& v) {
  Key(key, GgufType::kString);
  PutString(kv_, v);
}

void GgufWriter::AddU32(const std::string& key, uint32_t v) {
  Key(key, GgufType::kUint32);
  Put(kv_, v);
}

void GgufWriter::AddI32(const std::string& key, int32_t v) {
  Key(key, GgufType::kInt32);
  Put(kv_, v);
}

void GgufWriter::AddF32(const std::string& key, float v) {
  Key(key, GgufType::kFloat32);
  Put(kv_, v);
}

void GgufWriter::AddBool(const std::string& key, bool v) {
  Key(key, GgufType::kBool);
  Put<uint8_t>(kv_, v ? 1 : 0);
}

void GgufWriter::AddStrings(const std::string& key, const std::vector<std::string>& v) {
  Key(key, GgufType::kArray);
  Put<uint32_t>(kv_, static_cast<uint32_t>(GgufType::kString));
  Put<uint64_t>(kv_, v.size());
  for (const std::string& s : v) PutString(kv_, s);
}

void GgufWriter::AddF32s(const std::string& key, const std::vector<float>& v) {
  Key(key, GgufType::kArray);
  Put<uint32_t>(kv_, static_cast<uint32_t>(GgufType::kFloat32));
  Put<uint64_t>(kv_, v.size());
  for (float f : v) Put(kv_, f);
}

void GgufWriter::AddI32s(const std::string& key, const std::vector<int32_t>& v) {
  Key(key, GgufType::kArray);
  Put<uint32_t>(kv_, static_cast<uint32_t>(GgufType::kInt32));
  Put<uint64_t>(kv_, v.size());
  for (int32_t i : v) Put(kv_, i);
}

void GgufWriter::AddTensor(const std::string& name, uint32_t type, const std::vector<int64_t>& shape, uint64_t nbytes) {
  tensors_.push_back({name, type, shape, data_bytes_, nbytes});
  data_bytes_ += nbytes + Padding(nbytes);
}

std::string GgufWriter::Header() const {
  std::string out = "GGUF";
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, kv_count_);
  out += kv_;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.shape.size()));
    for (size_t d = t.shape.size(); d-- > 0;) Put<uint64_t>(out, static_cast<uint64_t>(t.shape[d]));
    Put<uint32_t>(out, t.type);
    Put<uint64_t>(out, t.offset);
  }
  out.append(Padding(out.size()), '\0');
  return out;
}

}  // namespace strata
