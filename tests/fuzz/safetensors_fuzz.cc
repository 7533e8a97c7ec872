// Fuzzes strata::ParseSafetensors (formats/src/safetensors.cc): the input is a
// whole safetensors file (8-byte little-endian header length, JSON header, data).
// A strata::Error is a clean rejection; an accepted header must keep its promises.
#include <cstddef>
#include <cstdint>

#include "strata/formats/dtype.h"
#include "strata/formats/error.h"
#include "strata/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  strata::SafetensorsHeader h;
  try {
    h = strata::ParseSafetensors(data, size, "fuzz.safetensors");
  } catch (const strata::Error&) {
    return 0;
  }
  // Accepted: sorted ranges tiling the data section exactly, each holding
  // numel x dtype size bytes.
  if (h.data_start < 8 || h.data_start > size) __builtin_trap();
  uint64_t expected = 0;
  for (const strata::TensorInfo& t : h.tensors) {
    if (t.begin != expected || t.end < t.begin) __builtin_trap();
    if (t.nbytes() != t.numel() * strata::DTypeSize(t.dtype)) __builtin_trap();
    expected = t.end;
  }
  if (h.data_start + expected != size) __builtin_trap();
  return 0;
}
