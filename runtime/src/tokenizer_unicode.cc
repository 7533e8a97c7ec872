// UTF-8 decoding, character classes and NFC over the generated tables
// (tokenizer_unicode_tables.cc).
#include "strata/runtime/tokenizer_unicode.h"

#include <algorithm>
#include <array>
#include <memory>

namespace strata {

namespace {

using namespace unicode_tables;

// Hangul syllables compose and decompose by arithmetic, not by table.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

// Raw invalid bytes travel through NFC as code points past kInvalidCodepoint.
constexpr uint32_t kRawByteBase = kInvalidCodepoint;

const CodepointRange* FindRange(const CodepointRange* table, int n, uint32_t cp) {
  const CodepointRange* end = table + n;
  const CodepointRange* it = std::upper_bound(table, end, cp, [](uint32_t c, const CodepointRange& r) { return c < r.first; });
  if (it == table) return nullptr;
  --it;
  return cp <= it->last ? it : nullptr;
}

CharClass ClassFromTables(uint32_t cp) {
  switch (cp) {  // White_Space, which is what \s means to the tokenizers' regex engines
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return CharClass::kSpace;
    default:
      if (cp >= 0x2000 && cp <= 0x200A) return CharClass::kSpace;
  }
  const CodepointRange* r = FindRange(kCategoryRanges, kCategoryRangeCount, cp);
  return r ? static_cast<CharClass>(r->value) : CharClass::kOther;
}

// The Basic Multilingual Plane in a 64 KiB table: the pre-tokenizers ask for
// every character of the input, and almost all text lives there.
const std::array<uint8_t, 0x10000>& BmpClasses() {
  static const std::unique_ptr<std::array<uint8_t, 0x10000>> table = [] {
    auto t = std::make_unique<std::array<uint8_t, 0x10000>>();
    for (uint32_t cp = 0; cp < 0x10000; ++cp) (*t)[cp] = static_cast<uint8_t>(ClassFromTables(cp));
    return t;
  }();
  return *table;
}

const uint32_t* FindDecomposition(uint32_t cp, uint32_t* len) {
  const Decomposition* end = kDecompositions + kDecompositionCount;
  const Decomposition* it =
      std::lower_bound(kDecompositions, end, cp, [](const Decomposition& d, uint32_t c) { return d.cp < c; });
  if (it == end || it->cp != cp) return nullptr;
  *len = it->length;
  return kDecompositionData + it->offset;
}

// The primary composite of (a, b), or 0.
uint32_t Compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const Composition* end = kCompositions + kCompositionCount;
  const Composition* it = std::lower_bound(kCompositions, end, std::make_pair(a, b), [](const Composition& c, auto key) {
    return std::make_pair(c.first, c.second) < key;
  });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

void Decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  uint32_t len = 0;
  const uint32_t* d = FindDecomposition(cp, &len);
  if (d) out.insert(out.end(), d, d + len);
  else out.push_back(cp);
}

int ClassForOrdering(uint32_t cp) { return cp >= kRawByteBase ? 0 : CombiningClass(cp); }

// Canonical ordering: stable sort of each run of non-starters by class.
void ReorderMarks(std::vector<uint32_t>& cps) {
  for (size_t i = 0; i < cps.size();) {
    if (ClassForOrdering(cps[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < cps.size() && ClassForOrdering(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](uint32_t a, uint32_t b) { return ClassForOrdering(a) < ClassForOrdering(b); });
    i = j;
  }
}

// Canonical composition (the algorithm of UAX #15's reference code).
void ComposeInPlace(std::vector<uint32_t>& cps) {
  if (cps.empty()) return;
  size_t starter = 0, out = 1;
  int last_class = ClassForOrdering(cps[0]);
  if (last_class != 0) last_class = 256;  // a leading mark blocks everything after it
  for (size_t i = 1; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    int cls = ClassForOrdering(c);
    uint32_t composite = cps[starter] < kRawByteBase && c < kRawByteBase ? Compose(cps[starter], c) : 0;
    if (composite && (last_class < cls || last_class == 0)) {
      cps[starter] = composite;
      continue;
    }
    if (cls == 0) starter = out;
    last_class = cls;
    cps[out++] = c;
  }
  cps.resize(out);
}

}  // namespace

int Utf8SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

DecodedChar DecodeUtf8(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
  const size_t left = s.size() - pos;
  if (p[0] < 0x80) return {p[0], 1};
  const int n = Utf8SequenceLength(p[0]);
  if (n == 0 || static_cast<size_t>(n) > left) return {kInvalidCodepoint, 1};
  uint32_t cp = p[0] & (0x7F >> n);
  for (int i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return {kInvalidCodepoint, 1};
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  // Overlong 3- and 4-byte forms, surrogates and values past U+10FFFF (the
  // 2-byte overlongs are excluded by the lead byte range).
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return {kInvalidCodepoint, 1};
  return {cp, n};
}

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

CharClass ClassOf(uint32_t cp) {
  if (cp < 0x10000) return static_cast<CharClass>(BmpClasses()[cp]);
  return ClassFromTables(cp);
}

int CombiningClass(uint32_t cp) {
  const CodepointRange* r = FindRange(kCombiningRanges, kCombiningRangeCount, cp);
  return r ? static_cast<int>(r->value) : 0;
}

std::string NormalizeNfc(std::string_view s) {
  // Nothing below U+0300 changes under NFC: plain text takes no work.
  bool simple = true;
  for (size_t i = 0; i < s.size() && simple; ++i)
    simple = static_cast<uint8_t>(s[i]) < 0xCC;  // lead bytes of U+0000..U+02FF are < 0xCC
  if (simple) return std::string(s);
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    DecodedChar c = DecodeUtf8(s, i);
    if (c.cp == kInvalidCodepoint) cps.push_back(kRawByteBase + static_cast<uint8_t>(s[i]));
    else Decompose(c.cp, cps);
    i += c.len;
  }
  ReorderMarks(cps);
  ComposeInPlace(cps);
  std::string out;
  out.reserve(s.size());
  for (uint32_t cp : cps) {
    if (cp >= kRawByteBase) out += static_cast<char>(cp - kRawByteBase);
    else AppendUtf8(out, cp);
  }
  return out;
}

}  // namespace strata
