// The GGUF metadata reader: the shared vocabularies parse, and every kind of
// damage (bad magic, future version, truncation anywhere, lengths and counts
// past the end, unknown types) is a clear Error, never a crash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "strata/runtime/tokenizer.h"
#include "tokenizer_test_util.h"

namespace strata {
namespace {

using ::testing::HasSubstr;
using testutil::GgufBuilder;

std::string ParseError(const std::string& bytes) {
  try {
    GgufFile::Parse(bytes, "test.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A small SentencePiece-style vocabulary: <unk> <s> </s>, two byte tokens, pieces.
GgufBuilder SmallSpm() {
  GgufBuilder b;
  b.String("general.architecture", "llama")
      .String("tokenizer.ggml.model", "llama")
      .Strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "<0x41>", "<0xC3>", "\u2581", "b", "\u2581b"})
      .F32s("tokenizer.ggml.scores", {0, 0, 0, 0, 0, -1, -2, -3})
      .I32s("tokenizer.ggml.token_type", {2, 3, 3, 6, 6, 1, 1, 1})
      .U32("tokenizer.ggml.bos_token_id", 1)
      .U32("tokenizer.ggml.eos_token_id", 2)
      .U32("tokenizer.ggml.unknown_token_id", 0);
  return b;
}

TEST(Gguf, ReadsTheSharedVocabularies) {
  STRATA_REQUIRE_VOCAB();
  GgufFile f = GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensor_count(), 0u);
  EXPECT_EQ(f.GetString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.tokens").size(), 32000u);
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.tokens")[1], "<s>");
  EXPECT_EQ(f.GetNumberArray("tokenizer.ggml.scores").size(), 32000u);
  EXPECT_EQ(f.GetInteger("tokenizer.ggml.bos_token_id"), 1);
  EXPECT_TRUE(f.GetBool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.FindString("no.such.key"), std::nullopt);
}

TEST(Gguf, SmallVocabularyEncodes) {
  Tokenizer t = Tokenizer::FromGguf(GgufFile::Parse(SmallSpm().bytes(), "small"));
  // "b A" -> "▁b▁A": ▁b, then ▁ and A (byte fallback, <0x41>).
  EXPECT_EQ(t.Encode("b A"), (std::vector<int>{7, 5, 3}));
  EXPECT_EQ(t.Decode({1, 7, 5, 3}), "b A");
  // No <0xA9> token: the second byte of "é" has nothing to fall back to but <unk>.
  EXPECT_EQ(t.Encode("\u00e9"), (std::vector<int>{5, 4, 0}));
}

TEST(Gguf, BadMagic) {
  std::string b = SmallSpm().bytes();
  b[0] = 'X';
  EXPECT_THAT(ParseError(b), HasSubstr("not a GGUF file (magic \"XGUF\""));
  EXPECT_THAT(ParseError("GG"), HasSubstr("not a GGUF file (only 2 bytes"));
}

TEST(Gguf, FutureAndPastVersions) {
  EXPECT_THAT(ParseError(GgufBuilder(4).bytes()), HasSubstr("version 4 is newer than strata reads"));
  EXPECT_THAT(ParseError(GgufBuilder(1).bytes()), HasSubstr("version 1 is too old"));
  EXPECT_EQ(ParseError(GgufBuilder(2).bytes()), "(no error)");
}

TEST(Gguf, TruncatedAnywhereIsAnError) {
  const std::string b = SmallSpm().bytes();
  ASSERT_EQ(ParseError(b), "(no error)");
  for (size_t n = 0; n < b.size(); ++n) {
    std::string msg = ParseError(b.substr(0, n));
    EXPECT_THAT(msg, ::testing::AnyOf(HasSubstr("truncated"), HasSubstr("not a GGUF file"))) << "cut at " << n;
  }
}

TEST(Gguf, StringLengthPastTheEnd) {
  GgufBuilder b;
  b.Key("general.name", 8);
  b.Put(uint64_t{1000});  // a 1000-byte string in a file that ends here
  b.mutable_bytes() += "abc";
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("value of \"general.name\" at offset 48 has length 1000, past the end"));
  GgufBuilder k;
  k.Put(uint64_t{1} << 62);  // a key length (in place of the first key)
  std::string bytes = k.bytes() + std::string(32, 'x');
  bytes[16] = 1;  // kv count 1
  EXPECT_THAT(ParseError(bytes), HasSubstr("past the end"));
}

TEST(Gguf, CountsThatCannotFit) {
  GgufBuilder b;
  std::string bytes = b.bytes();
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(&bytes[16], &huge, 8);  // key/value count
  EXPECT_THAT(ParseError(bytes), HasSubstr("key/value count 1099511627776 is more than"));
  GgufBuilder a;
  a.Key("tokenizer.ggml.tokens", 9);
  a.Put(uint32_t{8});
  a.Put(uint64_t{1} << 50);
  EXPECT_THAT(ParseError(a.bytes()), HasSubstr("claims 1125899906842624 elements of type string"));
  GgufBuilder t(3, uint64_t{1} << 40);
  EXPECT_THAT(ParseError(t.bytes()), HasSubstr("tensor count"));
}

TEST(Gguf, BadTypesAndValues) {
  GgufBuilder b;
  b.Key("x", 13);
  b.mutable_bytes().append(16, '\0');
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("type of \"x\" at offset 33 is 13, not a GGUF value type"));
  GgufBuilder c;
  c.Key("flag", 7);
  c.Put(uint8_t{2});
  c.mutable_bytes().append(16, '\0');
  EXPECT_THAT(ParseError(c.bytes()), HasSubstr("bool with value 2"));
  GgufBuilder d;
  d.String("k", "a").String("k", "b");
  EXPECT_THAT(ParseError(d.bytes()), HasSubstr("key \"k\" appears twice"));
}

TEST(Gguf, WrongTypeOnAccess) {
  GgufFile f = GgufFile::Parse(SmallSpm().bytes(), "small.gguf");
  try {
    f.GetString("tokenizer.ggml.tokens");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("key \"tokenizer.ggml.tokens\" is array of string, expected a string"));
  }
  EXPECT_THROW(f.GetInteger("tokenizer.ggml.model"), Error);
  EXPECT_THROW(f.GetBool("missing"), Error);
}

TEST(Gguf, TensorInfosAreValidated) {
  GgufBuilder b(3, 1);
  b.PutString("tok_embd.weight");
  b.Put(uint32_t{9});  // dimensions: GGML has at most 4
  b.mutable_bytes().append(64, '\0');
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("has 9 dimensions"));
  GgufBuilder c(3, 1);
  c.PutString("w");
  c.Put(uint32_t{1});
  c.Put(uint64_t{4});
  c.Put(uint32_t{0});
  c.Put(uint64_t{64});  // data at 64 past the aligned start, but the file ends here
  EXPECT_THAT(ParseError(c.bytes()), HasSubstr("past the end of the file"));
}

TEST(Gguf, VocabularyErrors) {
  auto load_error = [](const GgufBuilder& b) -> std::string {
    try {
      Tokenizer::FromGguf(GgufFile::Parse(b.bytes(), "v.gguf"));
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  GgufBuilder bert;
  bert.String("tokenizer.ggml.model", "bert").Strings("tokenizer.ggml.tokens", {"a"});
  EXPECT_THAT(load_error(bert), HasSubstr("tokenizer.ggml.model \"bert\" is not supported"));
  GgufBuilder no_tokens;
  no_tokens.String("tokenizer.ggml.model", "llama");
  EXPECT_THAT(load_error(no_tokens), HasSubstr("no key \"tokenizer.ggml.tokens\""));
  GgufBuilder short_scores;
  short_scores.String("tokenizer.ggml.model", "llama").Strings("tokenizer.ggml.tokens", {"a", "b"}).F32s("tokenizer.ggml.scores", {0});
  EXPECT_THAT(load_error(short_scores), HasSubstr("tokenizer.ggml.scores has 1 entries but tokenizer.ggml.tokens has 2"));
  GgufBuilder b2;
  b2.String("tokenizer.ggml.model", "gpt2").Strings("tokenizer.ggml.tokens", {"a", "b"}).Strings("tokenizer.ggml.merges", {"a c"});
  EXPECT_THAT(load_error(b2), HasSubstr("tokenizer.ggml.merges[0] \"a c\""));
  GgufBuilder b3;
  b3.String("tokenizer.ggml.model", "gpt2").String("tokenizer.ggml.pre", "deepseek-coder").Strings("tokenizer.ggml.tokens", {"a"});
  EXPECT_THAT(load_error(b3), HasSubstr("tokenizer.ggml.pre \"deepseek-coder\" is not supported"));
  GgufBuilder b4;
  b4.String("tokenizer.ggml.model", "gpt2").Strings("tokenizer.ggml.tokens", {"a"}).U32("tokenizer.ggml.bos_token_id", 7)
      .Strings("tokenizer.ggml.merges", {});
  EXPECT_THAT(load_error(b4), HasSubstr("tokenizer.ggml.bos_token_id is 7, outside the vocabulary of 1 tokens"));
}

TEST(Gguf, ConvertsToTokenizerJsonFiles) {
  HfTokenizerFiles h = GgufVocabToHf(GgufFile::Parse(SmallSpm().bytes(), "small.gguf"));
  EXPECT_EQ(h.vocab_size, 8);
  EXPECT_EQ(h.bos_id, 1);
  EXPECT_THAT(h.tokenizer_json, HasSubstr("\"byte_fallback\": true"));
  EXPECT_THAT(h.tokenizer_config_json, HasSubstr("\"add_bos_token\": true"));
  EXPECT_THAT(h.tokenizer_config_json, HasSubstr("<<SYS>>"));  // Llama 2's chat template, HF's default for these
  Tokenizer t = Tokenizer::FromHfJson(h.tokenizer_json, ParseTokenizerConfig(h.tokenizer_config_json, "c"), "t");
  EXPECT_EQ(t.Encode("b A"), (std::vector<int>{7, 5, 3}));
  EXPECT_EQ(t.EncodePrompt("b"), (std::vector<int>{1, 7}));
}

}  // namespace
}  // namespace strata
