// XXH3-128 content hashes.
#include "strata/formats/hash.h"

#include <cstdio>
#include <new>

namespace strata {
namespace {

Hash FromXXH(XXH128_hash_t h) { return Hash{h.high64, h.low64}; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

std::string Hash::Hex() const {
  char buf[33];
  snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(high),
           static_cast<unsigned long long>(low));
  return buf;
}

std::optional<Hash> Hash::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  Hash h;
  for (size_t i = 0; i < 32; ++i) {
    int v = HexValue(hex[i]);
    if (v < 0) return std::nullopt;
    uint64_t& part = i < 16 ? h.high : h.low;
    part = (part << 4) | static_cast<uint64_t>(v);
  }
  return h;
}

Hash HashBytes(const void* data, size_t n) { return FromXXH(XXH3_128bits(data, n)); }

Hasher::Hasher() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  XXH3_128bits_reset(state_);
}

Hasher::~Hasher() { XXH3_freeState(state_); }

void Hasher::Update(const void* data, size_t n) { XXH3_128bits_update(state_, data, n); }

Hash Hasher::Finish() const { return FromXXH(XXH3_128bits_digest(state_)); }

}  // namespace strata
