// Element types, and element-wise conversion and scaling through float that
// match PyTorch bit for bit (the scalar conversions are in dtype_convert.h).
#include "strata/formats/dtype.h"

#include <cstring>

namespace strata {
namespace {

struct Info {
  DType type;
  const char* name;
  size_t size;
};

// Declared in safetensors' own Dtype order, which is its sort rank.
constexpr Info kInfos[] = {
    {DType::kBool, "BOOL", 1},       {DType::kU8, "U8", 1},
    {DType::kI8, "I8", 1},           {DType::kF8_E5M2, "F8_E5M2", 1},
    {DType::kF8_E4M3, "F8_E4M3", 1}, {DType::kI16, "I16", 2},
    {DType::kU16, "U16", 2},         {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},       {DType::kI32, "I32", 4},
    {DType::kU32, "U32", 4},         {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},         {DType::kI64, "I64", 8},
    {DType::kU64, "U64", 8},
};

const Info& InfoOf(DType t) { return kInfos[static_cast<size_t>(t)]; }

}  // namespace

size_t DTypeSize(DType t) { return InfoOf(t).size; }
std::string_view DTypeName(DType t) { return InfoOf(t).name; }

std::optional<DType> ParseDTypeName(std::string_view name) {
  for (const Info& i : kInfos)
    if (name == i.name) return i.type;
  return std::nullopt;
}

std::optional<DType> ParseTorchDType(std::string_view name) {
  if (name.starts_with("torch.")) name.remove_prefix(6);
  if (name == "bfloat16") return DType::kBF16;
  if (name == "float16") return DType::kF16;
  if (name == "float32") return DType::kF32;
  if (name == "int64") return DType::kI64;
  return std::nullopt;
}

std::string_view TorchDTypeName(DType t) {
  switch (t) {
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
    case DType::kF32: return "float32";
    case DType::kF64: return "float64";
    case DType::kI64: return "int64";
    case DType::kI32: return "int32";
    case DType::kI16: return "int16";
    case DType::kI8: return "int8";
    case DType::kU8: return "uint8";
    case DType::kBool: return "bool";
    default: return DTypeName(t);
  }
}

bool IsComputeFloat(DType t) {
  return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32 ||
         t == DType::kF64;
}

int SafetensorsDTypeRank(DType t) { return static_cast<int>(t); }

namespace {

template <typename F>
void ForEachAsFloat(DType from, const void* src, size_t n, F&& sink) {
  switch (from) {
    case DType::kBF16: {
      auto* p = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) sink(i, BF16ToFloat(p[i]));
      break;
    }
    case DType::kF16: {
      auto* p = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) sink(i, F16ToFloat(p[i]));
      break;
    }
    case DType::kF32: {
      auto* p = static_cast<const float*>(src);
      for (size_t i = 0; i < n; ++i) sink(i, p[i]);
      break;
    }
    default:
      break;
  }
}

void StoreFloat(DType to, void* dst, size_t i, float v) {
  switch (to) {
    case DType::kBF16: static_cast<uint16_t*>(dst)[i] = FloatToBF16(v); break;
    case DType::kF16: static_cast<uint16_t*>(dst)[i] = FloatToF16(v); break;
    case DType::kF32: static_cast<float*>(dst)[i] = v; break;
    case DType::kF64: static_cast<double*>(dst)[i] = v; break;
    default: break;
  }
}

}  // namespace

namespace {

// The common conversions as plain loops over bits, which the compiler
// vectorizes (a switch per element does not: ~7 ns an element).
bool ConvertFast(DType from, const void* src, DType to, void* dst, size_t n) {
  if (from == DType::kBF16 && to == DType::kF32) {
    const auto* p = static_cast<const uint16_t*>(src);
    auto* q = static_cast<uint32_t*>(dst);
    for (size_t i = 0; i < n; ++i) q[i] = static_cast<uint32_t>(p[i]) << 16;
    return true;
  }
  if (from == DType::kF32 && to == DType::kBF16) {  // FloatToBF16, branch-free
    const auto* p = static_cast<const uint32_t*>(src);
    auto* q = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t u = p[i];
      const uint32_t r = (u + (((u >> 16) & 1u) + 0x7FFFu)) >> 16;
      q[i] = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : r);
    }
    return true;
  }
  if (from == DType::kF16 && to == DType::kF32) {
    const auto* p = static_cast<const uint16_t*>(src);
    auto* q = static_cast<float*>(dst);
    for (size_t i = 0; i < n; ++i) q[i] = F16ToFloat(p[i]);
    return true;
  }
  if (from == DType::kF32 && to == DType::kF16) {
    const auto* p = static_cast<const float*>(src);
    auto* q = static_cast<uint16_t*>(dst);
    for (size_t i = 0; i < n; ++i) q[i] = FloatToF16(p[i]);
    return true;
  }
  return false;
}

}  // namespace

void ConvertElements(DType from, const void* src, DType to, void* dst, size_t n) {
  if (from == to) {
    std::memmove(dst, src, n * DTypeSize(from));
    return;
  }
  // (Widening in place is only safe backwards: the general path below.)
  if (!(src == dst && DTypeSize(to) > DTypeSize(from)) && ConvertFast(from, src, to, dst, n)) return;
  if (from == DType::kF64) {
    auto* p = static_cast<const double*>(src);
    // torch converts double to half/bfloat16 through float.
    for (size_t i = 0; i < n; ++i) StoreFloat(to, dst, i, static_cast<float>(p[i]));
    return;
  }
  if (DTypeSize(to) > DTypeSize(from) && src == dst) {
    // Widening in place: walk backwards so no input is overwritten early.
    for (size_t k = n; k-- > 0;) {
      float v = 0;
      ForEachAsFloat(from, static_cast<const char*>(src) + k * DTypeSize(from), 1,
                     [&](size_t, float f) { v = f; });
      StoreFloat(to, dst, k, v);
    }
    return;
  }
  ForEachAsFloat(from, src, n, [&](size_t i, float v) { StoreFloat(to, dst, i, v); });
}

void ScaleElements(DType t, const void* src, void* dst, size_t n, double factor) {
  if (t == DType::kF64) {
    auto* s = static_cast<const double*>(src);
    auto* d = static_cast<double*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = s[i] * factor;
    return;
  }
  const float f = static_cast<float>(factor);
  ForEachAsFloat(t, src, n, [&](size_t i, float v) { StoreFloat(t, dst, i, v * f); });
}

}  // namespace strata
