// The GPT-2, Llama 3 and Qwen2 pre-tokenizer regexes as hand-written matchers
// over code points, and GPT-2's byte-level character mapping.
#include <algorithm>

#include "strata/runtime/tokenizer_parts.h"
#include "strata/runtime/tokenizer_unicode.h"

namespace strata {

namespace {

// The regexes as tokenizer.json spells them (GPT-2's is implied by ByteLevel's use_regex).
constexpr std::string_view kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The text decoded once: code point, class and byte offset per character.
struct Chars {
  std::vector<uint32_t> cp;
  std::vector<CharClass> cls;
  std::vector<size_t> off;  // off[n] == text size
  size_t n = 0;

  explicit Chars(std::string_view s) {
    cp.reserve(s.size());
    cls.reserve(s.size());
    off.reserve(s.size() + 1);
    for (size_t i = 0; i < s.size();) {
      DecodedChar c = DecodeUtf8(s, i);
      cp.push_back(c.cp);
      cls.push_back(c.cp == kInvalidCodepoint ? CharClass::kOther : ClassOf(c.cp));
      off.push_back(i);
      i += c.len;
    }
    n = cp.size();
    off.push_back(s.size());
  }
  bool Is(size_t i, CharClass c) const { return i < n && cls[i] == c; }
  bool IsNewline(size_t i) const { return i < n && (cp[i] == '\r' || cp[i] == '\n'); }
  size_t RunOf(size_t i, CharClass c) const {
    while (i < n && cls[i] == c) ++i;
    return i;
  }
};

// (?i:'s|'t|'re|'ve|'m|'ll|'d) or its case-sensitive form: the end, or 0.
size_t MatchContraction(const Chars& t, size_t i, bool ignore_case) {
  if (t.cp[i] != '\'' || i + 1 >= t.n) return 0;
  auto lower = [&](size_t k) -> uint32_t {
    if (k >= t.n) return 0;
    uint32_t c = t.cp[k];
    if (!ignore_case) return c;
    if (c == 0x17F) return 's';  // LATIN SMALL LETTER LONG S folds to s
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
  };
  uint32_t a = lower(i + 1), b = lower(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  return 0;
}

// \s+(?!\S) then \s+, from a whitespace character at i: the whole run when it
// ends the text, else all but its last character (which then leads the next
// piece), else the single character.
size_t MatchSpaces(const Chars& t, size_t i) {
  size_t e = t.RunOf(i, CharClass::kSpace);
  if (e == t.n || e - i == 1) return e;
  return e - 1;
}

size_t NextGpt2(const Chars& t, size_t i) {
  if (size_t e = MatchContraction(t, i, false)) return e;
  size_t j = t.cp[i] == ' ' ? i + 1 : i;  // the optional leading space of the next three
  if (t.Is(j, CharClass::kLetter)) return t.RunOf(j, CharClass::kLetter);
  if (t.Is(j, CharClass::kNumber)) return t.RunOf(j, CharClass::kNumber);
  if (t.Is(j, CharClass::kOther)) return t.RunOf(j, CharClass::kOther);
  return MatchSpaces(t, i);
}

size_t NextLlama3(const Chars& t, size_t i, size_t max_digits) {
  if (size_t e = MatchContraction(t, i, true)) return e;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (t.Is(i, CharClass::kLetter)) return t.RunOf(i, CharClass::kLetter);
  if (!t.IsNewline(i) && !t.Is(i, CharClass::kNumber) && t.Is(i + 1, CharClass::kLetter))
    return t.RunOf(i + 1, CharClass::kLetter);
  // \p{N}{1,3} (Llama 3) or \p{N} (Qwen2)
  if (t.Is(i, CharClass::kNumber)) return std::min(t.RunOf(i, CharClass::kNumber), i + max_digits);
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  size_t j = t.cp[i] == ' ' ? i + 1 : i;
  if (t.Is(j, CharClass::kOther)) {
    j = t.RunOf(j, CharClass::kOther);
    while (t.IsNewline(j)) ++j;
    return j;
  }
  // \s*[\r\n]+ : through the last line break of the whitespace run
  size_t e = t.RunOf(i, CharClass::kSpace);
  for (size_t k = e; k > i; --k)
    if (t.IsNewline(k - 1)) return k;
  return MatchSpaces(t, i);
}

}  // namespace

std::optional<SplitRegex> RecognizeSplitRegex(std::string_view pattern) {
  if (pattern == kGpt2Pattern) return SplitRegex::kGpt2;
  if (pattern == kLlama3Pattern) return SplitRegex::kLlama3;
  if (pattern == kQwen2Pattern) return SplitRegex::kQwen2;
  return std::nullopt;
}

std::string_view SplitRegexName(SplitRegex r) {
  switch (r) {
    case SplitRegex::kGpt2: return "GPT-2";
    case SplitRegex::kLlama3: return "Llama 3";
    case SplitRegex::kQwen2: return "Qwen2";
  }
  return "?";
}

void SplitByRegex(std::string_view text, SplitRegex r, std::vector<std::string_view>& out) {
  Chars t(text);
  for (size_t i = 0; i < t.n;) {
    size_t e = r == SplitRegex::kGpt2 ? NextGpt2(t, i) : NextLlama3(t, i, r == SplitRegex::kLlama3 ? 3 : 1);
    out.push_back(text.substr(t.off[i], t.off[e] - t.off[i]));
    i = e;
  }
}

const std::array<std::string, 256>& ByteLevelChars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      // Printable Latin-1 stands for itself; the rest shifts past U+00FF in byte order.
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      AppendUtf8(t[b], printable ? static_cast<uint32_t>(b) : extra++);
    }
    return t;
  }();
  return table;
}

void ByteLevelEncode(std::string_view bytes, std::string& out) {
  const auto& chars = ByteLevelChars();
  for (unsigned char b : bytes) out += chars[b];
}

std::optional<std::string> ByteLevelDecode(std::string_view token) {
  static const std::unordered_map<uint32_t, uint8_t> reverse = [] {
    std::unordered_map<uint32_t, uint8_t> m;
    const auto& chars = ByteLevelChars();
    for (int b = 0; b < 256; ++b) m[DecodeUtf8(chars[b], 0).cp] = static_cast<uint8_t>(b);
    return m;
  }();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    DecodedChar c = DecodeUtf8(token, i);
    auto it = reverse.find(c.cp);
    if (it == reverse.end()) return std::nullopt;
    out += static_cast<char>(it->second);
    i += c.len;
  }
  return out;
}

namespace {
constexpr std::string_view kMeta = "\u2581";
bool MetaAt(std::string_view s, size_t pos) { return s.compare(pos, kMeta.size(), kMeta) == 0; }
}  // namespace

bool HasInnerMeta(std::string_view t) {
  for (size_t pos = t.find(kMeta, 1); pos != std::string_view::npos; pos = t.find(kMeta, pos + 1))
    if (pos < kMeta.size() || !MetaAt(t, pos - kMeta.size())) return true;
  return false;
}

void SplitBeforeWordMeta(std::string_view text, std::vector<std::string_view>& out) {
  size_t start = 0;
  for (size_t pos = text.find(kMeta, 1); pos != std::string_view::npos; pos = text.find(kMeta, pos + 1)) {
    if (pos >= kMeta.size() && MetaAt(text, pos - kMeta.size())) continue;  // inside a run of "▁"
    out.push_back(text.substr(start, pos - start));
    start = pos;
  }
  out.push_back(text.substr(start));
}

std::optional<uint8_t> ParseByteToken(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

}  // namespace strata
