// The reference test vectors of ../shared/vocab: every input encodes to exactly
// the ids the Hugging Face tokenizers produce and decodes back to itself,
// through the GGUF vocabulary and through tokenizer.json files built from it.
#include <gtest/gtest.h>

#include <random>

#include "strata/formats/gguf.h"
#include "strata/formats/gguf_writer.h"
#include "strata/runtime/tokenizer.h"
#include "tokenizer_test_util.h"

namespace strata {
namespace {

using testutil::LoadVocabCases;
using testutil::VocabDir;

std::string Ids(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

void ExpectAllCases(const Tokenizer& tok, const std::string& name) {
  auto cases = LoadVocabCases(name);
  ASSERT_EQ(cases.size(), 46u) << name;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    std::vector<int> got = tok.Encode(c.text);
    EXPECT_EQ(Ids(got), Ids(c.ids)) << name << " case " << i << ": \"" << c.text << "\"";
    EXPECT_EQ(tok.Decode(c.ids), c.text) << name << " case " << i << " does not decode back";
  }
}

Tokenizer FromGgufAsHf(const std::string& name) {
  GgufFile f = GgufFile::Read(VocabDir() + "/" + name + ".gguf");
  HfTokenizerFiles files = GgufVocabToHf(f);
  return Tokenizer::FromHfJson(files.tokenizer_json, ParseTokenizerConfig(files.tokenizer_config_json, name), name);
}

TEST(TokenizerVocab, LlamaSpmFromGguf) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer t = Tokenizer::FromGguf(GgufFile::Read(VocabDir() + "/ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_TRUE(t.add_bos());
  ExpectAllCases(t, "ggml-vocab-llama-spm");
}

TEST(TokenizerVocab, Gpt2FromGguf) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer t = Tokenizer::FromGguf(GgufFile::Read(VocabDir() + "/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_FALSE(t.add_bos());
  ExpectAllCases(t, "ggml-vocab-gpt-2");
}

TEST(TokenizerVocab, LlamaSpmFromTokenizerJson) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer t = FromGgufAsHf("ggml-vocab-llama-spm");
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_TRUE(t.add_bos());
  ExpectAllCases(t, "ggml-vocab-llama-spm");
}

TEST(TokenizerVocab, Gpt2FromTokenizerJson) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer t = FromGgufAsHf("ggml-vocab-gpt-2");
  EXPECT_FALSE(t.add_bos());
  EXPECT_EQ(t.eos_id(), 50256);
  ExpectAllCases(t, "ggml-vocab-gpt-2");
}

// HF files -> the GGUF keys strata's export writes (HfToGgufVocab through
// GgufWriter): the GGUF file's bytes (no tensors).
std::string ExportedGguf(const std::string& name, GgufVocabKeys* keys_out = nullptr) {
  GgufFile f = GgufFile::Read(VocabDir() + "/" + name + ".gguf");
  HfTokenizerFiles files = GgufVocabToHf(f);
  GgufVocabKeys k = HfToGgufVocab(files.tokenizer_json, files.tokenizer_config_json, files.vocab_size, name);
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("tokenizer.ggml.model", k.model);
  w.AddString("tokenizer.ggml.pre", k.pre);
  w.AddStrings("tokenizer.ggml.tokens", k.tokens);
  if (k.model == "llama") w.AddF32s("tokenizer.ggml.scores", k.scores);
  w.AddI32s("tokenizer.ggml.token_type", k.types);
  if (k.model == "gpt2") w.AddStrings("tokenizer.ggml.merges", k.merges);
  if (k.bos >= 0) w.AddU32("tokenizer.ggml.bos_token_id", k.bos);
  if (k.eos >= 0) w.AddU32("tokenizer.ggml.eos_token_id", k.eos);
  if (k.unk >= 0) w.AddU32("tokenizer.ggml.unknown_token_id", k.unk);
  if (k.add_bos) w.AddBool("tokenizer.ggml.add_bos_token", *k.add_bos);
  if (keys_out) *keys_out = k;
  return w.Header();
}

// ... and a tokenizer read from that GGUF: the reference ids again.
Tokenizer ThroughExportedGguf(const std::string& name, GgufVocabKeys* keys_out = nullptr) {
  return Tokenizer::FromGguf(GgufFile::Parse(ExportedGguf(name, keys_out), name + " (exported)"));
}

TEST(TokenizerVocab, LlamaSpmThroughExportedGguf) {
  STRATA_REQUIRE_VOCAB();
  GgufVocabKeys k;
  Tokenizer t = ThroughExportedGguf("ggml-vocab-llama-spm", &k);
  EXPECT_EQ(k.model, "llama");
  EXPECT_EQ(k.tokens.size(), 32000u);
  // The original's token types survive: 3 control/unknown, 256 byte tokens.
  GgufFile f = GgufFile::Read(VocabDir() + "/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(std::vector<int>(k.types.begin(), k.types.end()), GgufTokenTypes(f, 32000));
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_TRUE(t.add_bos());
  ExpectAllCases(t, "ggml-vocab-llama-spm");
}

TEST(TokenizerVocab, Gpt2ThroughExportedGguf) {
  STRATA_REQUIRE_VOCAB();
  GgufVocabKeys k;
  Tokenizer t = ThroughExportedGguf("ggml-vocab-gpt-2", &k);
  EXPECT_EQ(k.model, "gpt2");
  EXPECT_EQ(k.pre, "gpt-2");
  GgufFile f = GgufFile::Read(VocabDir() + "/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(k.merges, f.GetStringArray("tokenizer.ggml.merges"));
  EXPECT_EQ(k.tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  ExpectAllCases(t, "ggml-vocab-gpt-2");
}

// HF -> GGUF -> strata, as `strata compile FILE.gguf` brings a GGUF's
// vocabulary in (GgufVocabToHf of the exported file, read as HF files).
TEST(TokenizerVocab, HfThroughExportedGgufAndBack) {
  STRATA_REQUIRE_VOCAB();
  for (const std::string name : {"ggml-vocab-llama-spm", "ggml-vocab-gpt-2"}) {
    const GgufFile f = GgufFile::Parse(ExportedGguf(name), name + " (exported)");
    const HfTokenizerFiles files = GgufVocabToHf(f);
    Tokenizer t = Tokenizer::FromHfJson(files.tokenizer_json, ParseTokenizerConfig(files.tokenizer_config_json, name), name);
    ExpectAllCases(t, name);
  }
}

// Random text from a pool of tricky pieces (runs of spaces and line breaks,
// contractions, digits, multi-byte scripts, emoji with joiners).
std::vector<std::string> RandomTexts(int n) {
  const std::vector<std::string> pool = {" ", "  ", "\n", "\n\n", "\t", "a", "Hello", "world", "'s", "'LL", "123",
                                         "4567", "!", "...", "\u00bd", "\u00e9", "e\u0301", "\u043f\u0440\u0438",
                                         "\u4f60\u597d", "\U0001F600", "\U0001F468\u200D\U0001F469", "\u17c0", "\u00a0", "_"};
  std::mt19937 rng(7);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string s;
    for (int k = rng() % 12; k > 0; --k) s += pool[rng() % pool.size()];
    out.push_back(s);
  }
  return out;
}

// Two independent engines over one vocabulary (llama.cpp's score-ordered SPM
// from GGUF, HF's rank-ordered BPE from the converted tokenizer.json) agree,
// and every text decodes back to itself.
TEST(TokenizerVocab, RandomTextAgreesAcrossLoadersAndRoundTrips) {
  STRATA_REQUIRE_VOCAB();
  for (const std::string name : {"ggml-vocab-llama-spm", "ggml-vocab-gpt-2"}) {
    Tokenizer gguf = Tokenizer::FromGguf(GgufFile::Read(VocabDir() + "/" + name + ".gguf"));
    Tokenizer hf = FromGgufAsHf(name);
    for (const std::string& text : RandomTexts(400)) {
      std::vector<int> ids = gguf.Encode(text);
      EXPECT_EQ(Ids(ids), Ids(hf.Encode(text))) << name << ": \"" << text << "\"";
      EXPECT_EQ(gguf.Decode(ids), text) << name;
    }
  }
}

}  // namespace
}  // namespace strata
