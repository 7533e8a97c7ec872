// Loading a GGUF vocabulary: "llama" runs llama.cpp's SentencePiece merges by
// score with byte fallback, "gpt2" runs byte-level BPE with the pre-tokenizer
// tokenizer.ggml.pre names.
#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "tokenizer_impl.h"

namespace strata {

namespace {

constexpr std::string_view kMeta = "\u2581";

bool IsType(const std::vector<int>& types, size_t id, GgufTokenType t) { return types[id] == static_cast<int>(t); }

int TokenIdKey(const GgufFile& f, const char* key, size_t n) {
  auto v = f.FindInteger(key);
  if (!v) return -1;
  if (*v < 0 || *v >= static_cast<int64_t>(n))
    throw Error("GGUF " + f.what() + ": " + key + " is " + std::to_string(*v) + ", outside the vocabulary of " +
                std::to_string(n) + " tokens");
  return static_cast<int>(*v);
}

// Control and unknown tokens are special; user-defined ones are matched in
// text like any added token.
void AddGgufAddedTokens(Tokenizer::Impl& im, const std::vector<int>& types) {
  for (size_t i = 0; i < im.tokens.size(); ++i) {
    bool special = IsType(types, i, GgufTokenType::kControl) || IsType(types, i, GgufTokenType::kUnknown);
    if ((special || IsType(types, i, GgufTokenType::kUserDefined)) && !im.tokens[i].empty())
      im.added.push_back({im.tokens[i], static_cast<int>(i), special});
  }
  im.IndexAddedTokens();
}

std::string UnescapeMeta(const std::string& t) {
  std::string out;
  for (size_t i = 0; i < t.size();) {
    if (t.compare(i, kMeta.size(), kMeta) == 0) {
      out += ' ';
      i += kMeta.size();
    } else {
      out += t[i++];
    }
  }
  return out;
}

void SetUpSpm(const GgufFile& f, Tokenizer::Impl& im, const std::vector<int>& types) {
  const auto& scores_d = f.GetNumberArray("tokenizer.ggml.scores");
  if (scores_d.size() != im.tokens.size())
    throw Error("GGUF " + f.what() + ": tokenizer.ggml.scores has " + std::to_string(scores_d.size()) +
                " entries but tokenizer.ggml.tokens has " + std::to_string(im.tokens.size()));
  std::vector<float> scores(scores_d.begin(), scores_d.end());
  std::vector<uint8_t> mergeable(im.tokens.size());
  for (size_t i = 0; i < mergeable.size(); ++i)
    mergeable[i] = IsType(types, i, GgufTokenType::kNormal) || IsType(types, i, GgufTokenType::kUserDefined);
  // Word-by-word encoding is exact when no mergeable piece has an inner "▁" (Llama's have none).
  im.split_words_at_meta = im.vocab.count(std::string(kMeta)) > 0;
  for (size_t i = 0; i < mergeable.size(); ++i)
    if (mergeable[i] && HasInnerMeta(im.tokens[i])) im.split_words_at_meta = false;
  const int unk = TokenIdKey(f, "tokenizer.ggml.unknown_token_id", im.tokens.size());
  im.spm = std::make_unique<SpmModel>(im.vocab, std::move(scores), std::move(mergeable), unk);
  // llama.cpp's add_space_prefix: " " before the text (and after each added token), spaces as "▁".
  const bool prefix = f.FindBool("tokenizer.ggml.add_space_prefix").value_or(true);
  im.prepend_meta = prefix;
  im.space_to_meta = true;
  im.strip_leading_spaces = prefix ? 1 : 0;
  im.BuildPieces([&](const std::string& t) {
    auto b = ParseByteToken(t);
    return b ? std::string(1, static_cast<char>(*b)) : UnescapeMeta(t);
  });
  for (size_t i = 0; i < im.tokens.size(); ++i)  // only BYTE tokens are bytes
    if (!IsType(types, i, GgufTokenType::kByte) && ParseByteToken(im.tokens[i])) im.pieces[i] = im.tokens[i];
  im.description = std::string("SentencePiece BPE by score") + (prefix ? ", space prefix" : "") + " (GGUF)";
}

void SetUpGpt2(const GgufFile& f, Tokenizer::Impl& im) {
  const std::string pre = f.FindString("tokenizer.ggml.pre").value_or("default");
  BpeModel::Options o;
  if (pre == "gpt-2" || pre == "default") {
    im.regex = SplitRegex::kGpt2;
  } else if (pre == "llama-bpe" || pre == "llama3") {
    im.regex = SplitRegex::kLlama3;
    o.ignore_merges = true;
  } else if (pre == "qwen2") {
    im.regex = SplitRegex::kQwen2;
    im.nfc = true;
  } else {
    throw Error("GGUF " + f.what() + ": tokenizer.ggml.pre \"" + pre + "\" is not supported (strata knows gpt-2, llama-bpe and qwen2)");
  }
  im.byte_level = true;
  const auto& merges = f.GetStringArray("tokenizer.ggml.merges");
  std::vector<std::array<int, 3>> ids;
  ids.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    size_t sp = m.find(' ');
    auto l = im.vocab.find(std::string_view(m).substr(0, sp == std::string::npos ? 0 : sp));
    auto r = im.vocab.find(std::string_view(m).substr(sp == std::string::npos ? 0 : sp + 1));
    auto merged = sp == std::string::npos ? im.vocab.end() : im.vocab.find(m.substr(0, sp) + m.substr(sp + 1));
    if (sp == std::string::npos || l == im.vocab.end() || r == im.vocab.end() || merged == im.vocab.end())
      throw Error("GGUF " + f.what() + ": tokenizer.ggml.merges[" + std::to_string(i) + "] \"" + m +
                  "\" is not two vocabulary tokens whose concatenation is one");
    ids.push_back({l->second, r->second, merged->second});
  }
  im.bpe = std::make_unique<BpeModel>(im.vocab, ids, o);
  im.BuildPieces([](const std::string& t) { return ByteLevelDecode(t).value_or(t); });
  im.description = "byte-level BPE, " + std::string(SplitRegexName(*im.regex)) + " split (GGUF)";
}

}  // namespace

Tokenizer Tokenizer::FromGguf(const GgufFile& f) {
  auto im = std::make_shared<Impl>();
  const std::string model = f.GetString("tokenizer.ggml.model");
  if (model != "llama" && model != "gpt2")
    throw Error("GGUF " + f.what() + ": tokenizer.ggml.model \"" + model +
                "\" is not supported (strata reads \"llama\" and \"gpt2\" vocabularies)");
  im->tokens = f.GetStringArray("tokenizer.ggml.tokens");
  if (im->tokens.empty()) throw Error("GGUF " + f.what() + ": tokenizer.ggml.tokens is empty");
  for (size_t i = 0; i < im->tokens.size(); ++i) im->vocab[im->tokens[i]] = static_cast<int>(i);  // last wins, as in llama.cpp
  const std::vector<int> types = GgufTokenTypes(f, im->tokens.size());
  AddGgufAddedTokens(*im, types);
  if (model == "llama") SetUpSpm(f, *im, types);
  else SetUpGpt2(f, *im);
  im->bos = TokenIdKey(f, "tokenizer.ggml.bos_token_id", im->tokens.size());
  im->eos = TokenIdKey(f, "tokenizer.ggml.eos_token_id", im->tokens.size());
  const bool bos_default = model == "llama" || im->regex == SplitRegex::kLlama3;
  im->add_bos = f.FindBool("tokenizer.ggml.add_bos_token").value_or(bos_default) && im->bos >= 0;
  im->add_eos = f.FindBool("tokenizer.ggml.add_eos_token").value_or(false) && im->eos >= 0;
  Tokenizer tok;
  tok.impl_ = im;
  return tok;
}

}  // namespace strata
