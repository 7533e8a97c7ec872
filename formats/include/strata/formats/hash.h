// XXH3-128 content hashes: the names of blobs and nodes in the store.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace strata {

struct Hash {
  uint64_t high = 0, low = 0;
  // 32 lowercase hex digits, canonical (big-endian) order.
  std::string Hex() const;
  // Returns nullopt unless `hex` is exactly 32 lowercase hex digits.
  static std::optional<Hash> FromHex(std::string_view hex);
  auto operator<=>(const Hash&) const = default;
};

Hash HashBytes(const void* data, size_t n);
inline Hash HashBytes(std::string_view s) { return HashBytes(s.data(), s.size()); }

// Streaming XXH3-128.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void Update(const void* data, size_t n);
  Hash Finish() const;

 private:
  XXH3_state_t* state_;
};

}  // namespace strata
