// Text <-> token ids: HF tokenizer.json (SentencePiece-style BPE with byte
// fallback; byte-level BPE with the GPT-2 / Llama 3 / Qwen2 pre-tokenizers) and
// GGUF vocabularies (llama: SentencePiece scores; gpt2: BPE merges).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

class GgufFile;
class Store;
struct Hash;

// What tokenizer_config.json says about special tokens and chat.
struct TokenizerConfig {
  std::optional<bool> add_bos, add_eos;
  std::string bos_token, eos_token;  // contents; empty when not set
  std::string chat_template;         // the "default" one when there are several
};
// Throws Error naming `what` when the text is not a JSON object.
TokenizerConfig ParseTokenizerConfig(std::string_view json_text, const std::string& what);

class Tokenizer {
 public:
  // Builds from tokenizer.json. BOS/EOS and add_bos come from `config` where
  // it says, else from the post-processor template, else (SentencePiece-style
  // vocabularies: Llama 2, Mistral) BOS is added. Throws Error naming `what`
  // and the field for malformed JSON or an unsupported model, normalizer,
  // pre-tokenizer or decoder.
  static Tokenizer FromHfJson(std::string_view tokenizer_json, const TokenizerConfig& config, const std::string& what);
  // Builds from a GGUF vocabulary: "llama" (SentencePiece merges by score,
  // byte fallback) or "gpt2" (BPE merges). Throws Error naming the key.
  static Tokenizer FromGguf(const GgufFile& f);

  // Token ids of `text`, without BOS/EOS. Added tokens are matched before
  // anything else, longest first; special ones only when `parse_special`.
  // Invalid UTF-8 is not an error: its bytes become byte tokens (byte
  // fallback) or byte-level characters, so decoding gives the bytes back.
  std::vector<int> Encode(std::string_view text, bool parse_special = true) const;
  // Encode() with BOS before when add_bos() and EOS after when add_eos().
  std::vector<int> EncodePrompt(std::string_view text) const;
  // Ids outside the vocabulary decode to nothing, as in HF.
  std::string Decode(const std::vector<int>& ids, bool skip_special = true) const;

  int vocab_size() const;
  int bos_id() const;  // -1 when there is none
  int eos_id() const;
  bool add_bos() const;
  bool add_eos() const;
  bool IsSpecial(int id) const;
  // The id of a vocabulary entry or added token, by its text ("<|im_end|>").
  std::optional<int> TokenId(std::string_view token) const;
  // The text of token `id` as the vocabulary spells it; empty when out of range.
  std::string_view TokenText(int id) const;
  // The bytes token `id` decodes to anywhere but first in a text (its leading
  // space kept; a byte-fallback token's one byte, possibly part of a UTF-8
  // character); empty when out of range. For per-token reports (logprobs).
  std::string_view TokenBytes(int id) const;
  // A short description for messages: "byte-level BPE (GPT-2 split)", ...
  const std::string& description() const;

  struct Impl;  // opaque: runtime/src/tokenizer_impl.h

 private:
  friend class StreamDecoder;
  std::shared_ptr<const Impl> impl_;
};

// Turns generated ids into text as they arrive. Push() returns only whole
// UTF-8 characters: a character whose bytes are spread over several tokens
// (byte fallback, byte-level BPE) is held back until it is complete. Bytes
// that can never form a character come out as U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& t, bool skip_special = true) : tok_(t), skip_special_(skip_special) {}
  std::string Push(int id);
  // What is still held (an incomplete character) as U+FFFD; resets.
  std::string Finish();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

// The tokenizer that comes with variant `variant` of `store`: its
// tokenizer.json (with tokenizer_config.json), else a GGUF vocabulary among its
// files. nullopt when it has neither; throws Error when one is malformed.
struct VariantTokenizer {
  Tokenizer tokenizer;
  TokenizerConfig config;
  std::string source;  // the file it was read from
};
std::optional<VariantTokenizer> LoadVariantTokenizer(const Store& store, const Hash& variant);

}  // namespace strata
