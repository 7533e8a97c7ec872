// Tokenizer behaviour on hand-made vocabularies (added and special tokens,
// byte fallback, unknown tokens, tokenizer_config.json), the hand-written
// pre-tokenizer regexes, NFC, streaming decode and malformed tokenizer.json.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "strata/runtime/tokenizer.h"
#include "strata/runtime/tokenizer_parts.h"
#include "strata/runtime/tokenizer_unicode.h"
#include "tokenizer_test_util.h"

namespace strata {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

// A Llama-2-style tokenizer.json: <unk> <s> </s>, the 256 byte tokens, a few
// pieces and merges, the Prepend/Replace normalizer and the matching decoder.
Json LlamaStyleJson() {
  Json vocab = Json::object();
  vocab["<unk>"] = 0, vocab["<s>"] = 1, vocab["</s>"] = 2;
  char name[8];
  for (int b = 0; b < 256; ++b) {
    snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  const std::vector<std::string> pieces = {"\u2581", "a", "b", "c", "ab", "\u2581a", "\u2581ab", "\u2581c", "\u2581\u2581"};
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = 259 + static_cast<int>(i);
  Json j;
  j["version"] = "1.0";
  j["added_tokens"] = Json::array();
  for (auto [id, content] : {std::pair{0, "<unk>"}, {1, "<s>"}, {2, "</s>"}})
    j["added_tokens"].push_back({{"id", id}, {"content", content}, {"special", true}, {"normalized", false}});
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}};
  j["pre_tokenizer"] = nullptr;
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  j["model"] = {{"type", "BPE"}, {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true},
                {"vocab", vocab},
                {"merges", {"\u2581 a", "\u2581a b", "a b", "\u2581 \u2581", "\u2581 c"}}};
  return j;
}

Tokenizer Load(const Json& j, const std::string& config = "{}") {
  return Tokenizer::FromHfJson(j.dump(), ParseTokenizerConfig(config, "tokenizer_config.json"), "tokenizer.json");
}

std::string LoadError(const std::string& text) {
  try {
    Tokenizer::FromHfJson(text, {}, "tokenizer.json of test");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::string> Split(std::string_view text, SplitRegex r) {
  std::vector<std::string_view> parts;
  SplitByRegex(text, r, parts);
  return {parts.begin(), parts.end()};
}

using Strings = std::vector<std::string>;

TEST(TokenizerSplit, Gpt2Pattern) {
  EXPECT_EQ(Split("Hello world", SplitRegex::kGpt2), (Strings{"Hello", " world"}));
  EXPECT_EQ(Split("I'm  fine\n\n", SplitRegex::kGpt2), (Strings{"I", "'m", " ", " fine", "\n\n"}));
  EXPECT_EQ(Split("x   12abc!!? ", SplitRegex::kGpt2), (Strings{"x", "  ", " 12", "abc", "!!?", " "}));
  EXPECT_EQ(Split("WE'RE", SplitRegex::kGpt2), (Strings{"WE", "'", "RE"}));  // case-sensitive contractions
  EXPECT_EQ(Split("ied 4 \u00bd months", SplitRegex::kGpt2), (Strings{"ied", " 4", " \u00bd", " months"}));  // ½ is \p{N}
  EXPECT_EQ(Split("\t\tfoo", SplitRegex::kGpt2), (Strings{"\t", "\t", "foo"}));
}

TEST(TokenizerSplit, Llama3Pattern) {
  EXPECT_EQ(Split("Hello, WORLD'S 12345 ...\n\n  x", SplitRegex::kLlama3),
            (Strings{"Hello", ",", " WORLD", "'S", " ", "123", "45", " ...\n\n", " ", " x"}));
  EXPECT_EQ(Split("\t\tfoo", SplitRegex::kLlama3), (Strings{"\t", "\tfoo"}));
  EXPECT_EQ(Split("a\n\n b", SplitRegex::kLlama3), (Strings{"a", "\n\n", " b"}));
  EXPECT_EQ(Split("x \n y", SplitRegex::kLlama3), (Strings{"x", " \n", " y"}));
  EXPECT_EQ(Split("(\u4f60\u597d)", SplitRegex::kLlama3), (Strings{"(\u4f60\u597d", ")"}));
}

TEST(TokenizerSplit, Qwen2SplitsDigitsOneByOne) {
  EXPECT_EQ(Split("abc 2024!", SplitRegex::kQwen2), (Strings{"abc", " ", "2", "0", "2", "4", "!"}));
}

TEST(TokenizerSplit, RecognisesTheTokenizerJsonPatterns) {
  EXPECT_EQ(RecognizeSplitRegex(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"),
            SplitRegex::kGpt2);
  EXPECT_EQ(RecognizeSplitRegex("\\s+"), std::nullopt);
}

TEST(TokenizerSplit, InvalidUtf8IsKeptAsBytes) {
  std::string text = "ab\xFF\xC3 cd";
  auto parts = Split(text, SplitRegex::kLlama3);
  std::string joined;
  for (const auto& p : parts) joined += p;
  EXPECT_EQ(joined, text);
}

TEST(TokenizerUnicode, Classes) {
  EXPECT_TRUE(IsLetter('a'));
  EXPECT_TRUE(IsLetter(0x4F60));   // 你
  EXPECT_TRUE(IsLetter(0x20000));  // CJK extension B, beyond the BMP table
  EXPECT_TRUE(IsNumber(0xBD));     // ½
  EXPECT_TRUE(IsNumber(0x0663));   // Arabic-Indic three
  EXPECT_TRUE(IsSpace(0x3000));
  EXPECT_FALSE(IsLetter('!'));
  EXPECT_FALSE(IsLetter(0x1F600));  // emoji: So
}

TEST(TokenizerUnicode, Utf8DecodingRejectsMalformedSequences) {
  EXPECT_EQ(DecodeUtf8("\xC3\xA9", 0).cp, 0xE9u);
  EXPECT_EQ(DecodeUtf8("\xF0\x9F\x98\x80", 0).len, 4);
  for (std::string bad : {"\xC0\x80", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82", "\x80"}) {
    DecodedChar c = DecodeUtf8(bad, 0);
    EXPECT_EQ(c.cp, kInvalidCodepoint) << bad;
    EXPECT_EQ(c.len, 1);
  }
}

TEST(TokenizerUnicode, NfcMatchesPython) {
  // Expected values from Python's unicodedata.normalize("NFC", ...).
  EXPECT_EQ(NormalizeNfc("e\u0301"), "\u00e9");
  EXPECT_EQ(NormalizeNfc("\u1100\u1161\u11a8"), "\uac01");  // Hangul L V T
  EXPECT_EQ(NormalizeNfc("a\u0302\u0323"), "\u1ead");       // marks reordered, then composed
  EXPECT_EQ(NormalizeNfc("A\u030a\u0301x"), "\u01fax");
  EXPECT_EQ(NormalizeNfc("\u212b"), "\u00c5");               // singleton
  EXPECT_EQ(NormalizeNfc("\u0344"), "\u0308\u0301");         // excluded from composition
  EXPECT_EQ(NormalizeNfc("q\u0307\u0323"), "q\u0323\u0307");
  EXPECT_EQ(NormalizeNfc("\u0301a"), "\u0301a");
  EXPECT_EQ(NormalizeNfc("plain ascii"), "plain ascii");
  EXPECT_EQ(NormalizeNfc("e\xFF\u0301"), "e\xFF\u0301");  // a raw byte blocks composition, survives
}

TEST(TokenizerByteLevel, MappingRoundTrips) {
  EXPECT_EQ(ByteLevelChars()[' '], "\u0120");   // Ġ
  EXPECT_EQ(ByteLevelChars()['\n'], "\u010a");  // Ċ
  EXPECT_EQ(ByteLevelChars()['A'], "A");
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  std::string mapped;
  ByteLevelEncode(all, mapped);
  EXPECT_EQ(ByteLevelDecode(mapped), all);
  EXPECT_EQ(ByteLevelDecode("<|endoftext|>"), "<|endoftext|>");
  EXPECT_EQ(ByteLevelDecode("\u4f60"), std::nullopt);  // not a stand-in
}

TEST(TokenizerHf, SpecialTokensMatchedBeforeBpe) {
  Tokenizer t = Load(LlamaStyleJson());
  // "<s>" is special: one token; the text after it gets its own "▁" (the Prepend normalizer per fragment).
  EXPECT_EQ(t.Encode("<s>ab"), (std::vector<int>{1, 265}));
  EXPECT_EQ(t.Encode("ab</s>"), (std::vector<int>{265, 2}));
  EXPECT_EQ(t.Encode("ab c"), (std::vector<int>{265, 266}));
  // Not parsed: the characters go through BPE and byte fallback.
  std::vector<int> raw = t.Encode("<s>", /*parse_special=*/false);
  EXPECT_EQ(raw, (std::vector<int>{259, 3 + '<', 3 + 's', 3 + '>'}));
}

TEST(TokenizerHf, DecodeSkipsSpecialTokensOnlyWhenAsked) {
  Tokenizer t = Load(LlamaStyleJson());
  EXPECT_EQ(t.Decode({1, 265, 266, 2}), "ab c");
  EXPECT_EQ(t.Decode({1, 265, 266, 2}, /*skip_special=*/false), "<s> ab c</s>");
  EXPECT_TRUE(t.IsSpecial(1));
  EXPECT_FALSE(t.IsSpecial(265));
}

TEST(TokenizerHf, AddedTokensLongestFirstAndNonSpecialDecoded) {
  Json j = LlamaStyleJson();
  j["added_tokens"].push_back({{"id", 300}, {"content", "<t>"}, {"special", false}});
  j["added_tokens"].push_back({{"id", 301}, {"content", "<t>x"}, {"special", false}});
  j["added_tokens"].push_back({{"id", 302}, {"content", "[M]"}, {"special", true}, {"lstrip", true}, {"rstrip", true}});
  Tokenizer t = Load(j);
  EXPECT_EQ(t.vocab_size(), 303);  // added ids beyond the model's vocabulary count
  EXPECT_EQ(t.Encode("<t>x"), (std::vector<int>{301}));
  EXPECT_EQ(t.Encode("<t>y"), (std::vector<int>{300, 259, 3 + 'y'}));
  EXPECT_EQ(t.Decode({300, 301}), "<t><t>x");  // not special: kept by skip_special
  // lstrip/rstrip take the spaces around the token with them.
  EXPECT_EQ(t.Encode("ab [M] c"), (std::vector<int>{265, 302, 266}));
  EXPECT_EQ(t.TokenId("<t>x"), 301);
}

TEST(TokenizerHf, ByteFallbackForCharactersOutsideTheVocabulary) {
  Tokenizer t = Load(LlamaStyleJson());
  // "é" is not a piece: its two UTF-8 bytes become <0xC3> <0xA9>.
  EXPECT_EQ(t.Encode("\u00e9"), (std::vector<int>{259, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.Decode(t.Encode("a\u00e9 \U0001F600b")), "a\u00e9 \U0001F600b");
}

TEST(TokenizerHf, UnknownTokenWithoutByteFallback) {
  Json j = LlamaStyleJson();
  j["model"]["byte_fallback"] = false;
  Tokenizer t = Load(j);
  // Consecutive unknown characters fuse into one <unk> (fuse_unk).
  EXPECT_EQ(t.Encode("a\u00e9\u00e8"), (std::vector<int>{264, 0}));
}

TEST(TokenizerHf, InvalidUtf8PromptFallsBackToBytes) {
  Tokenizer t = Load(LlamaStyleJson());
  EXPECT_EQ(t.Encode("a\xFF"), (std::vector<int>{264, 3 + 0xFF}));
  // The reference decodes bytes that form no character as U+FFFD.
  EXPECT_EQ(t.Decode(t.Encode("a\xFF")), "a\uFFFD");
}

TEST(TokenizerHf, BosFromConfigAndDefaults) {
  Tokenizer t = Load(LlamaStyleJson());
  EXPECT_TRUE(t.add_bos());  // SentencePiece-style: Llama 2 / Mistral add <s>
  EXPECT_EQ(t.EncodePrompt("ab"), (std::vector<int>{1, 265}));
  Tokenizer off = Load(LlamaStyleJson(), R"({"add_bos_token": false, "eos_token": {"content": "</s>"}})");
  EXPECT_FALSE(off.add_bos());
  EXPECT_EQ(off.eos_id(), 2);
  EXPECT_EQ(off.EncodePrompt("ab"), (std::vector<int>{265}));
}

TEST(TokenizerHf, PostProcessorTemplateGivesBos) {
  Json j = LlamaStyleJson();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                         {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  Tokenizer t = Load(j);
  EXPECT_TRUE(t.add_bos());
  EXPECT_EQ(t.bos_id(), 1);
}

TEST(TokenizerHf, MetaspacePreTokenizer) {
  Json j = LlamaStyleJson();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", false}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}};
  Tokenizer t = Load(j);
  EXPECT_EQ(t.Encode("ab c"), (std::vector<int>{265, 266}));
  // "first": no "▁" after an added token, only at the start of the input.
  EXPECT_EQ(t.Encode("<s>ab"), (std::vector<int>{1, 263}));
  EXPECT_EQ(t.Decode({265, 266}), "ab c");
  EXPECT_EQ(t.Encode(" c"), (std::vector<int>{266}));  // already starts with "▁": no second one
  // split: every "▁" starts a word, so "▁▁" can no longer merge.
  EXPECT_EQ(t.Encode("  c"), (std::vector<int>{267, 262}));
  j["pre_tokenizer"]["split"] = true;
  EXPECT_EQ(Load(j).Encode("  c"), (std::vector<int>{259, 266}));
}

TEST(TokenizerHf, WordByWordOnlyWhenNoMergeCrossesWords) {
  Json j = LlamaStyleJson();
  j["model"]["vocab"]["b\u2581"] = 268;
  j["model"]["merges"].insert(j["model"]["merges"].begin(), "b \u2581");
  // "▁b▁c": the top merge joins "b" to the next word's "▁", so the text cannot be cut before "▁c".
  EXPECT_EQ(Load(j).Encode("b c"), (std::vector<int>{259, 268, 262}));
  EXPECT_EQ(Load(LlamaStyleJson()).Encode("b c"), (std::vector<int>{259, 261, 266}));
}

TEST(TokenizerHf, MergesInPairForm) {
  Json j = LlamaStyleJson();
  j["model"]["merges"] = Json::array({Json::array({"\u2581", "a"}), Json::array({"\u2581a", "b"})});
  EXPECT_EQ(Load(j).Encode("ab"), (std::vector<int>{265}));
}

TEST(TokenizerHf, MalformedFilesGiveClearErrors) {
  std::string good = LlamaStyleJson().dump();
  EXPECT_THAT(LoadError(good.substr(0, good.size() / 2)), HasSubstr("not valid JSON"));
  EXPECT_THAT(LoadError("[1, 2]"), HasSubstr("not a JSON object"));
  Json j = LlamaStyleJson();
  j.erase("model");
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("missing \"model\""));
  j = LlamaStyleJson();
  j["model"]["type"] = "WordPiece";
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("model.type \"WordPiece\" is not supported"));
  j = LlamaStyleJson();
  j["model"]["merges"].push_back("a zz");
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("outside model.vocab"));
  j = LlamaStyleJson();
  j["model"]["merges"].push_back("abc");
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("not two tokens"));
  j = LlamaStyleJson();
  j["model"]["vocab"]["zz"] = "seven";
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("model.vocab[\"zz\"] is not a token id"));
  j = LlamaStyleJson();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}};
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("not a regex strata implements"));
  j = LlamaStyleJson();
  j["normalizer"] = {{"type", "NFKD"}};
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("normalizer \"NFKD\" is not supported"));
  j = LlamaStyleJson();
  j["added_tokens"].push_back({{"id", -4}, {"content", "x"}});
  EXPECT_THAT(LoadError(j.dump()), HasSubstr("added_tokens[3].id is not a token id"));
  EXPECT_THROW(ParseTokenizerConfig("{\"add_bos_token\": tru", "tokenizer_config.json"), Error);
}

TEST(TokenizerConfigJson, ChatTemplateListPicksDefault) {
  TokenizerConfig c = ParseTokenizerConfig(
      R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})", "x");
  EXPECT_EQ(c.chat_template, "D");
}

// Collects Push() output per token and checks no chunk ends inside a character.
std::string StreamAll(const Tokenizer& t, const std::vector<int>& ids, std::vector<std::string>* chunks = nullptr) {
  StreamDecoder d(t);
  std::string out;
  for (int id : ids) {
    std::string c = d.Push(id);
    for (size_t i = 0; i < c.size(); i += DecodeUtf8(c, i).len) EXPECT_NE(DecodeUtf8(c, i).cp, kInvalidCodepoint);
    if (chunks) chunks->push_back(c);
    out += c;
  }
  return out + d.Finish();
}

TEST(StreamDecoder, HoldsBackSplitCharacters) {
  Tokenizer t = Load(LlamaStyleJson());
  // 😀 = F0 9F 98 80, one byte token each.
  std::vector<int> ids = {264, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80, 264};
  std::vector<std::string> chunks;
  EXPECT_EQ(StreamAll(t, ids, &chunks), "a\U0001F600 a");
  EXPECT_EQ(chunks, (Strings{"a", "", "", "", "\U0001F600", " a"}));
}

TEST(StreamDecoder, BadBytesBecomeReplacementCharacters) {
  Tokenizer t = Load(LlamaStyleJson());
  StreamDecoder d(t);
  EXPECT_EQ(d.Push(3 + 0xFF), "\uFFFD");           // can never start a character
  EXPECT_EQ(d.Push(3 + 0xE2), "");                 // might
  EXPECT_EQ(d.Push(260), "\uFFFDa");               // ...but did not
  EXPECT_EQ(d.Push(3 + 0xE2), "");
  EXPECT_EQ(d.Push(3 + 0x82), "");
  EXPECT_EQ(d.Finish(), "\uFFFD");                 // the stream ended inside a character
  EXPECT_EQ(d.Push(3 + 0xED), "");
  EXPECT_EQ(d.Push(3 + 0xA0), "\uFFFD\uFFFD");     // a surrogate can never complete
}

TEST(StreamDecoder, LeadingSpaceOfTheFirstPieceOnly) {
  Tokenizer t = Load(LlamaStyleJson());
  StreamDecoder d(t);
  EXPECT_EQ(d.Push(1), "");  // <s>, skipped
  EXPECT_EQ(d.Push(265), "ab");
  EXPECT_EQ(d.Push(266), " c");
}

TEST(StreamDecoder, RealVocabulariesStreamMultiByteText) {
  STRATA_REQUIRE_VOCAB();
  const std::string text = "Привет 😀 你好 🦙.cpp ½ ៀ";
  for (const char* name : {"ggml-vocab-llama-spm", "ggml-vocab-gpt-2"}) {
    Tokenizer t = Tokenizer::FromGguf(GgufFile::Read(testutil::VocabDir() + "/" + name + ".gguf"));
    std::vector<int> ids = t.Encode(text);
    std::vector<std::string> chunks;
    EXPECT_EQ(StreamAll(t, ids, &chunks), text) << name;
    // Some characters really are split across tokens here (byte fallback / byte-level).
    EXPECT_GT(std::count(chunks.begin(), chunks.end(), ""), 0) << name;
  }
}

TEST(TokenizerGguf, InvalidUtf8LikeTheReference) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer spm = Tokenizer::FromGguf(GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-llama-spm.gguf"));
  // llama.cpp / HF byte fallback: the stray byte becomes <0xFF> (id 3 + 0xFF).
  EXPECT_EQ(spm.Encode("a\xFF"), (std::vector<int>{263, 3 + 0xFF}));
  EXPECT_EQ(spm.Decode(spm.Encode("a\xFF")), "a\uFFFD");
  Tokenizer gpt2 = Tokenizer::FromGguf(GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-gpt-2.gguf"));
  std::vector<int> ids = gpt2.Encode("a\xFF b");
  EXPECT_EQ(gpt2.Decode(ids), "a\uFFFD b");
}

TEST(TokenizerGguf, SpecialTokensInText) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer spm = Tokenizer::FromGguf(GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-llama-spm.gguf"));
  EXPECT_EQ(spm.Encode("<s>Hello</s>"), (std::vector<int>{1, 15043, 2}));
  EXPECT_EQ(spm.EncodePrompt("Hello"), (std::vector<int>{1, 15043}));
  Tokenizer gpt2 = Tokenizer::FromGguf(GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(gpt2.Encode("Hello<|endoftext|>"), (std::vector<int>{15496, 50256}));
  EXPECT_EQ(gpt2.Decode({15496, 50256}, /*skip_special=*/false), "Hello<|endoftext|>");
  EXPECT_EQ(gpt2.Decode({15496, 50256}), "Hello");
}

}  // namespace
}  // namespace strata
