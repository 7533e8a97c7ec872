// NumPy .npy files (format 1.0), float32, C order: what --logits-out writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace strata {

// The bytes of a .npy file holding `data` with `shape` (little-endian <f4).
// REQUIRES: product of shape == data.size().
std::string NpyFloat32(const std::vector<float>& data, const std::vector<int64_t>& shape);

}  // namespace strata
