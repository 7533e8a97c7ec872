// Element types of checkpoint tensors, their names in safetensors and mergekit
// plans, and the float conversions that reproduce PyTorch's rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "strata/formats/dtype_convert.h"

namespace strata {

enum class DType : uint8_t {
  kBool, kU8, kI8, kF8_E5M2, kF8_E4M3, kI16, kU16, kF16, kBF16,
  kI32, kU32, kF32, kF64, kI64, kU64,
};

// Bytes per element.
size_t DTypeSize(DType t);
// The safetensors spelling ("BF16", "F32", "F8_E4M3", ...).
std::string_view DTypeName(DType t);
// Parses a safetensors spelling. Returns nullopt for an unknown name.
std::optional<DType> ParseDTypeName(std::string_view name);
// Parses a torch/mergekit spelling ("bfloat16", "torch.float16", "float32").
// Returns nullopt for a name mergekit does not accept.
std::optional<DType> ParseTorchDType(std::string_view name);
// The torch spelling used in config.json's torch_dtype ("bfloat16").
std::string_view TorchDTypeName(DType t);
// True for the float kinds strata can compute with (F16, BF16, F32, F64).
bool IsComputeFloat(DType t);
// safetensors orders a file's tensors by this rank, largest first, then by name.
int SafetensorsDTypeRank(DType t);

// BF16ToFloat, FloatToBF16, F16ToFloat and FloatToF16 (PyTorch's rounding,
// shared with the CUDA kernels) are in dtype_convert.h, included above.

// Converts `n` elements at `src` (type `from`) into `dst` (type `to`), going
// through float like torch's Tensor.to() does for F16/BF16/F32 (F64 goes
// through double). REQUIRES: IsComputeFloat(from) && IsComputeFloat(to).
void ConvertElements(DType from, const void* src, DType to, void* dst, size_t n);
// dst[i] = src[i] * factor computed as torch's `tensor * python_float` does on
// the CPU: in float for F16/BF16/F32 (factor first rounded to float), in double
// for F64, then rounded to the tensor's type. Keeps -0.0 and NaN as torch does.
// REQUIRES: IsComputeFloat(t). `src` and `dst` may alias.
void ScaleElements(DType t, const void* src, void* dst, size_t n, double factor);

}  // namespace strata
