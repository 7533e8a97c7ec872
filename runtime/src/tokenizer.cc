// Encoding (added tokens, normalizer, pre-tokenizer, model) and decoding
// (per-token bytes, streamed as whole UTF-8 characters) for every tokenizer
// kind; the loaders live in tokenizer_hf.cc and tokenizer_gguf.cc.
#include <algorithm>
#include <cctype>

#include "strata/runtime/tokenizer_unicode.h"
#include "tokenizer_impl.h"

namespace strata {

namespace {

constexpr std::string_view kMeta = "\u2581";  // SentencePiece's visible space
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

bool IsWordByte(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}

// single_word added tokens match only between non-word characters.
bool AtWordBoundaries(std::string_view text, size_t b, size_t e) {
  return (b == 0 || !IsWordByte(text[b - 1])) && (e == text.size() || !IsWordByte(text[e]));
}

void AppendMeta(std::string_view text, bool spaces_to_meta, std::string& out) {
  if (!spaces_to_meta) {
    out.append(text);
    return;
  }
  for (char c : text) {
    if (c == ' ') out.append(kMeta);
    else out += c;
  }
}

// Metaspace's split: every "▁" starts a new word.
void SplitBeforeMeta(std::string_view text, std::vector<std::string_view>& out) {
  size_t start = 0;
  for (size_t pos = text.find(kMeta, 1); pos != std::string_view::npos; pos = text.find(kMeta, pos + 1)) {
    out.push_back(text.substr(start, pos - start));
    start = pos;
  }
  out.push_back(text.substr(start));
}

// Could the bytes [i, end) of `s` still become a valid UTF-8 character?
bool IsValidPrefix(std::string_view s, size_t i) {
  const auto lead = static_cast<uint8_t>(s[i]);
  for (size_t k = i + 1; k < s.size(); ++k) {
    const auto b = static_cast<uint8_t>(s[k]);
    uint8_t lo = 0x80, hi = 0xBF;
    if (k == i + 1) {  // the second byte excludes overlongs, surrogates and values past U+10FFFF
      if (lead == 0xE0) lo = 0xA0;
      if (lead == 0xED) hi = 0x9F;
      if (lead == 0xF0) lo = 0x90;
      if (lead == 0xF4) hi = 0x8F;
    }
    if (b < lo || b > hi) return false;
  }
  return true;
}

}  // namespace

void Tokenizer::Impl::IndexAddedTokens() {
  std::stable_sort(added.begin(), added.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  for (auto& bucket : added_by_first_byte) bucket.clear();
  for (size_t i = 0; i < added.size(); ++i)
    if (!added[i].content.empty()) added_by_first_byte[static_cast<uint8_t>(added[i].content[0])].push_back(static_cast<int>(i));
}

void Tokenizer::Impl::EnsureId(int id, const std::string& content) {
  if (id >= static_cast<int>(tokens.size())) tokens.resize(id + 1);
  if (tokens[id].empty()) tokens[id] = content;
}

void Tokenizer::Impl::EncodeFragment(std::string_view text, bool at_start, std::vector<int>& out) const {
  if (text.empty()) return;
  std::string normalized, pre, mapped;
  if (nfc) {
    normalized = NormalizeNfc(text);
    text = normalized;
  }
  if (prepend_meta || space_to_meta || metaspace) {
    pre.reserve(text.size() + text.size() / 4 + 3);
    if (prepend_meta) pre.append(kMeta);
    AppendMeta(text, space_to_meta || metaspace, pre);
    // Metaspace adds "▁" unless the text already starts with one; "first" only
    // at the very start of the input (not after an added token).
    bool prepend = metaspace_prepend == Prepend::kAlways || (metaspace_prepend == Prepend::kFirst && at_start);
    if (metaspace && prepend && pre.compare(0, kMeta.size(), kMeta) != 0) pre.insert(0, kMeta);
    text = pre;
  } else if (byte_level_prefix_space && text[0] != ' ') {
    pre.reserve(text.size() + 1);
    pre += ' ';
    pre.append(text);
    text = pre;
  }
  std::vector<std::string_view> words;
  if (metaspace && metaspace_split) SplitBeforeMeta(text, words);
  else if (regex) SplitByRegex(text, *regex, words);
  else if (split_words_at_meta) SplitBeforeWordMeta(text, words);
  else words.push_back(text);
  for (std::string_view w : words) {
    if (byte_level) {
      mapped.clear();
      ByteLevelEncode(w, mapped);
      w = mapped;
    }
    if (bpe) bpe->Encode(w, out);
    else spm->Encode(w, out);
  }
}

std::vector<int> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  const Impl& im = *impl_;
  std::vector<int> out;
  out.reserve(text.size() / 3 + 4);
  size_t frag = 0;  // start of the text not yet encoded
  for (size_t pos = 0; pos < text.size(); ++pos) {
    for (int ci : im.added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& a = im.added[ci];
      if ((a.special && !parse_special) || text.compare(pos, a.content.size(), a.content) != 0) continue;
      size_t b = pos, e = pos + a.content.size();
      if (a.single_word && !AtWordBoundaries(text, b, e)) continue;
      if (a.lstrip)
        while (b > frag && IsAsciiSpace(text[b - 1])) --b;
      if (a.rstrip)
        while (e < text.size() && IsAsciiSpace(text[e])) ++e;
      im.EncodeFragment(text.substr(frag, b - frag), frag == 0, out);
      out.push_back(a.id);
      frag = e;
      pos = e - 1;
      break;
    }
  }
  im.EncodeFragment(text.substr(frag), frag == 0, out);
  return out;
}

std::vector<int> Tokenizer::EncodePrompt(std::string_view text) const {
  std::vector<int> ids;
  if (add_bos() && bos_id() >= 0) ids.push_back(bos_id());
  std::vector<int> body = Encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos() && eos_id() >= 0) ids.push_back(eos_id());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids, bool skip_special) const {
  StreamDecoder d(*this, skip_special);
  std::string out;
  for (int id : ids) out += d.Push(id);
  return out + d.Finish();
}

int Tokenizer::vocab_size() const { return static_cast<int>(impl_->tokens.size()); }
int Tokenizer::bos_id() const { return impl_->bos; }
int Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }
const std::string& Tokenizer::description() const { return impl_->description; }

bool Tokenizer::IsSpecial(int id) const {
  return id >= 0 && id < static_cast<int>(impl_->special.size()) && impl_->special[id];
}

std::optional<int> Tokenizer::TokenId(std::string_view token) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == token) return a.id;
  auto it = impl_->vocab.find(token);
  if (it != impl_->vocab.end()) return it->second;
  return std::nullopt;
}

std::string_view Tokenizer::TokenText(int id) const {
  return id >= 0 && id < static_cast<int>(impl_->tokens.size()) ? std::string_view(impl_->tokens[id]) : std::string_view();
}

std::string_view Tokenizer::TokenBytes(int id) const {
  return id >= 0 && id < static_cast<int>(impl_->pieces.size()) ? std::string_view(impl_->pieces[id]) : std::string_view();
}

std::string StreamDecoder::Push(int id) {
  const Tokenizer::Impl& im = *tok_.impl_;
  if (id < 0 || id >= static_cast<int>(im.pieces.size())) return {};
  if (skip_special_ && im.special[id]) return {};
  std::string_view p = im.pieces[id];
  if (first_ && !p.empty()) {
    // The decoder's Strip (Llama) / Metaspace rule: the space the encoder put
    // before the text is not part of it.
    first_ = false;
    for (int n = im.strip_leading_spaces; n > 0 && !p.empty() && p[0] == ' '; --n) p.remove_prefix(1);
  }
  pending_.append(p);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const auto b = static_cast<uint8_t>(pending_[i]);
    if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    const int n = Utf8SequenceLength(b);
    if (n > 0 && i + n > pending_.size() && IsValidPrefix(pending_, i)) break;  // wait for the rest
    DecodedChar c = n > 0 && i + n <= pending_.size() ? DecodeUtf8(pending_, i) : DecodedChar{kInvalidCodepoint, 1};
    if (c.cp == kInvalidCodepoint) out.append(kReplacement);
    else out.append(pending_, i, c.len);
    i += c.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::Finish() {
  std::string out = pending_.empty() ? "" : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace strata
