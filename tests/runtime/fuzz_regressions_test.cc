// Every input the fuzzers found a crash with (tests/fuzz/regressions/) fed to
// the same parser in the ordinary build: each must load or be refused with a
// strata::Error, never another exception or a crash. The fuzz CI run replays
// them under ASan and UBSan as well (tests/fuzz/run_fuzzers.sh).
#include <gtest/gtest.h>

#include <filesystem>

#include "../compiler/test_util.h"
#include "strata/compiler/plan.h"
#include "strata/formats/gguf.h"
#include "strata/formats/safetensors.h"
#include "strata/runtime/tokenizer.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// Runs `parse` on every file of tests/fuzz/regressions/<dir>; returns how many.
template <typename F>
int Replay(const std::string& dir, F&& parse) {
  const fs::path root = fs::path(STRATA_SOURCE_DIR) / "tests/fuzz/regressions" / dir;
  int n = 0;
  if (!fs::is_directory(root)) return 0;
  for (const auto& e : fs::directory_iterator(root)) {
    SCOPED_TRACE(e.path().string());
    const std::string bytes = testutil::ReadText(e.path().string());
    try {
      parse(bytes);
    } catch (const Error&) {
    } catch (const std::exception& ex) {
      ADD_FAILURE() << "not a strata::Error: " << ex.what();
    }
    ++n;
  }
  return n;
}

TEST(FuzzRegressions, TokenizerJson) {
  int n = Replay("tokenizer", [](const std::string& b) {
    Tokenizer t = Tokenizer::FromHfJson(b, TokenizerConfig{}, "regression");
    for (int id : t.Encode("Hello <s> w\xc3\xb6rld", true)) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
  });
  EXPECT_GT(n, 0);
}

TEST(FuzzRegressions, Gguf) {
  Replay("gguf", [](const std::string& b) { GgufVocabToHf(GgufFile::Parse(b, "regression")); });
  Replay("gguf", [](const std::string& b) { Tokenizer::FromGguf(GgufFile::Parse(b, "regression")); });
}

TEST(FuzzRegressions, Plan) {
  Replay("plan", [](const std::string& b) { ParsePlan(b, "regression.yml"); });
}

}  // namespace
}  // namespace strata
