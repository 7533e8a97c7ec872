// Tokenizer::Impl: the pipeline a tokenizer.json or GGUF vocabulary reduces
// to (added tokens, normalizer, pre-tokenizer, model, decoder), shared by the
// two loaders and the encoder/decoder.
#pragma once

#include <memory>

#include "strata/runtime/tokenizer.h"
#include "strata/runtime/tokenizer_parts.h"

namespace strata {

struct AddedToken {
  std::string content;
  int id = -1;
  bool special = false;
  bool lstrip = false, rstrip = false, single_word = false;
};

struct Tokenizer::Impl {
  // Vocabulary.
  std::vector<std::string> tokens;  // id -> text as in the vocabulary
  TokenIdMap vocab;                 // text -> id (the model's vocabulary)
  std::vector<std::string> pieces;  // id -> bytes it decodes to
  std::vector<uint8_t> special;     // id -> skipped by Decode(skip_special)
  std::vector<AddedToken> added;    // longest content first
  std::array<std::vector<int>, 256> added_by_first_byte;  // indexes into `added`

  // Normalizer.
  bool nfc = false;
  bool prepend_meta = false;   // "▁" before every fragment (Prepend normalizer, SPM dummy prefix)
  bool space_to_meta = false;  // ' ' -> "▁" (Replace normalizer)
  // Pre-tokenizer.
  enum class Prepend { kAlways, kFirst, kNever };
  bool metaspace = false;  // Metaspace pre-tokenizer
  Prepend metaspace_prepend = Prepend::kAlways;
  bool metaspace_split = false;
  std::optional<SplitRegex> regex;
  // SentencePiece-style text is one word to the model, but when no token a
  // merge can produce has an inner "▁" (see HasInnerMeta), no merge can cross
  // the start of a word: encoding word by word gives the same ids, and lets
  // the word cache work. Set by the loaders after checking the vocabulary.
  bool split_words_at_meta = false;
  bool byte_level = false;  // map bytes to GPT-2's characters before the model
  bool byte_level_prefix_space = false;
  // Model: exactly one.
  std::unique_ptr<BpeModel> bpe;
  std::unique_ptr<SpmModel> spm;
  // Decoder: leading spaces removed from the first decoded piece.
  int strip_leading_spaces = 0;

  int bos = -1, eos = -1;
  bool add_bos = false, add_eos = false;
  std::string description;

  // Fills added_by_first_byte and orders `added` longest first; marks specials.
  void IndexAddedTokens();
  // Sizes `special` and `pieces`; `decode_token` gives a vocabulary token's
  // bytes. Added tokens decode to their content.
  template <class F>
  void BuildPieces(F decode_token) {
    special.assign(tokens.size(), 0);
    pieces.resize(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) pieces[i] = decode_token(tokens[i]);
    for (const AddedToken& a : added) {
      special[a.id] = a.special;
      pieces[a.id] = a.special ? a.content : decode_token(a.content);
    }
  }
  // Adds a token id for `content` (added tokens may lie outside the model's vocabulary).
  void EnsureId(int id, const std::string& content);

  void EncodeFragment(std::string_view text, bool at_start, std::vector<int>& out) const;
};

}  // namespace strata
