// The trained fixture (tests/fixtures/kjv, scripts/fixture/train_fixture.py):
// strata's tokenizer reads its tokenizer.json as the training script did, and
// gives the text back byte for byte.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "strata/formats/file.h"
#include "strata/runtime/eval.h"
#include "strata/runtime/tokenizer.h"

namespace fs = std::filesystem;

namespace strata {
namespace {

const std::string kFixture = std::string(STRATA_SOURCE_DIR) + "/tests/fixtures/kjv";

Tokenizer FixtureTokenizer() {
  return Tokenizer::FromHfJson(ReadFile(kFixture + "/tokenizer.json"),
                               ParseTokenizerConfig(ReadFile(kFixture + "/tokenizer_config.json"), "tokenizer_config.json"),
                               "tokenizer.json of the fixture");
}

std::vector<int> TrainingIds() {
  const std::string raw = ReadFile(kFixture + "/heldout.ids");  // little-endian uint16, BOS first
  std::vector<int> ids(raw.size() / 2);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<unsigned char>(raw[2 * i]) | (static_cast<unsigned char>(raw[2 * i + 1]) << 8);
  return ids;
}

TEST(Fixture, HeldOutIdsEqualTheTrainingScripts) {
  const Tokenizer t = FixtureTokenizer();
  EXPECT_EQ(t.vocab_size(), 4096);
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_TRUE(t.add_bos());
  const std::string text = ReadFile(kFixture + "/heldout.txt");
  const std::vector<int> want = TrainingIds();
  const std::vector<int> got = PerplexityTokens(t, text);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "token " << i;
  EXPECT_EQ(t.Decode(got), text);
}

// The whole corpus (both splits), from Debian's bible-kjv through the training
// script's `corpus` command: encoding then decoding gives every byte back.
TEST(Fixture, TokenizerRoundTripsTheCorpus) {
  char tmpl[] = "/tmp/strata-kjv-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string cmd = "/usr/bin/python3 " + std::string(STRATA_SOURCE_DIR) +
                          "/scripts/fixture/train_fixture.py corpus " + dir + " 2>" + dir + "/err";
  if (std::system(cmd.c_str()) != 0) {
    const std::string err = fs::exists(dir + "/err") ? ReadFile(dir + "/err") : "";
    fs::remove_all(dir);
    if (std::getenv("CI")) FAIL() << "cannot make the corpus (install bible-kjv): " << err;
    GTEST_SKIP() << "cannot make the corpus (install bible-kjv): " << err;
  }
  const Tokenizer t = FixtureTokenizer();
  size_t bytes = 0;
  for (const char* split : {"train.txt", "heldout.txt"}) {
    const std::string text = ReadFile(dir + "/" + split);
    const std::vector<int> ids = t.Encode(text);
    EXPECT_EQ(t.Decode(ids), text) << split;
    EXPECT_GT(text.size(), 3.5 * ids.size()) << split << ": fewer than 3.5 bytes per token";
    bytes += text.size();
  }
  EXPECT_EQ(ReadFile(dir + "/heldout.txt"), ReadFile(kFixture + "/heldout.txt"));
  EXPECT_GT(bytes, 4'000'000u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace strata
