// The parts a Tokenizer is assembled from: the regex pre-tokenizers written out
// by hand, GPT-2's byte <-> character mapping, and the two merge engines (BPE
// by merge rank, SentencePiece by piece score). Internal; public for tests.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace strata {

// The pre-tokenizer regexes strata implements (leftmost-first alternation, as
// the Oniguruma engine of HF tokenizers matches them).
enum class SplitRegex { kGpt2, kLlama3, kQwen2 };
// Which of them `pattern` (a tokenizer.json Split/ByteLevel regex) is.
std::optional<SplitRegex> RecognizeSplitRegex(std::string_view pattern);
std::string_view SplitRegexName(SplitRegex r);
// Appends the pieces `text` splits into (their concatenation is `text`).
void SplitByRegex(std::string_view text, SplitRegex r, std::vector<std::string_view>& out);

// GPT-2's bytes_to_unicode: each byte as the UTF-8 of its printable stand-in.
const std::array<std::string, 256>& ByteLevelChars();
// Appends the byte-level form of `bytes` to `out`.
void ByteLevelEncode(std::string_view bytes, std::string& out);
// The bytes behind a byte-level token; nullopt when a character of it is not
// one of the 256 stand-ins (HF then keeps the token's own bytes).
std::optional<std::string> ByteLevelDecode(std::string_view token);

// True when "▁" occurs in `token` after a character other than "▁": a merge
// producing it could join a word to the "▁" that starts the next one.
bool HasInnerMeta(std::string_view token);
// Splits before every "▁" that follows another character than "▁" (before
// each word of SentencePiece-style text, its leading "▁"s included).
void SplitBeforeWordMeta(std::string_view text, std::vector<std::string_view>& out);

// "<0xAB>" -> 0xAB (either case of hex digits); nullopt for anything else.
std::optional<uint8_t> ParseByteToken(std::string_view token);

// A string -> id map searchable by string_view without copying.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIdMap = std::unordered_map<std::string, int, StringHash, std::equal_to<>>;

// Bounded memo of word -> ids: natural text repeats its words, so most of a
// long input is answered from here. Thread-safe.
class WordCache {
 public:
  bool Find(std::string_view word, std::vector<int>& out) const;
  void Insert(std::string_view word, const std::vector<int>& ids, size_t begin) const;
  static constexpr size_t kMaxWordBytes = 256, kMaxEntries = 200000;

 private:
  mutable std::mutex mu_;
  mutable std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> map_;
};

// Hugging Face's BPE model: symbols start as the word's characters (unknown
// ones become byte tokens <0xXX> with byte fallback, else unk), then the
// lowest-ranked adjacent pair is merged, leftmost first, until none applies.
class BpeModel {
 public:
  struct Options {
    bool byte_fallback = false;
    int unk = -1;            // -1: no unknown token (characters not in the vocabulary are dropped)
    bool fuse_unk = false;   // consecutive unknown characters become one unk
    bool ignore_merges = false;  // a word that is itself a token is that token (Llama 3)
  };
  // `vocab` must outlive the model. merges: (left id, right id, merged id), in rank order.
  BpeModel(const TokenIdMap& vocab, const std::vector<std::array<int, 3>>& merges, Options o);
  void Encode(std::string_view word, std::vector<int>& out) const;

 private:
  void Merge(std::string_view word, std::vector<int>& out) const;
  const TokenIdMap& vocab_;
  std::unordered_map<uint64_t, std::pair<int, int>> merges_;  // (left << 32 | right) -> (rank, merged)
  Options o_;
  std::array<int, 256> byte_ids_;
  WordCache cache_;
};

// llama.cpp's SentencePiece BPE: symbols are UTF-8 characters; the adjacent
// pair whose concatenation is the highest-scoring mergeable piece is merged,
// leftmost on ties; characters left unknown become byte tokens <0xXX>.
class SpmModel {
 public:
  // `vocab` must outlive the model. mergeable[id]: the piece may result from a
  // merge (normal and user-defined pieces; not control or byte tokens).
  SpmModel(const TokenIdMap& vocab, std::vector<float> scores, std::vector<uint8_t> mergeable, int unk);
  void Encode(std::string_view text, std::vector<int>& out) const;

 private:
  void Merge(std::string_view text, std::vector<int>& out) const;
  const TokenIdMap& vocab_;
  std::vector<float> scores_;
  std::vector<uint8_t> mergeable_;
  int unk_;
  std::array<int, 256> byte_ids_;
  WordCache cache_;
};

}  // namespace strata
