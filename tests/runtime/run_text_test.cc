// Text in, text out through the strata binary: synth attaches a tokenizer
// built from a shared GGUF vocabulary, and `strata run --prompt/--chat`
// encodes with it (BOS as tokenizer_config.json says) and prints text.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tokenizer_test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

struct Result {
  int rc;
  std::string out;  // stdout and stderr
};

Result Sh(const std::string& cmd) {
  Result r{-1, ""};
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) r.out.append(buf, n);
  int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class RunText : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(STRATA_BINARY)) GTEST_SKIP() << STRATA_BINARY << " is not built; skipping the command-line tests";
    STRATA_REQUIRE_VOCAB();
    std::string tmpl = (fs::path(::testing::TempDir()) / "strata_run_text.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    bin_ = std::string(STRATA_BINARY) + " ";
    store_ = " --store " + dir_ + "/store";
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  // A 2-layer model carrying the tokenizer built from ggml-vocab-NAME.gguf.
  std::string Synth(const std::string& kind, const std::string& vocab) {
    std::string out = dir_ + "/" + kind;
    Result r = Sh(bin_ + "synth --arch llama --layers 2 -q --tokenizer " + kind + " --vocab-gguf " +
                  testutil::VocabDir() + "/ggml-vocab-" + vocab + ".gguf --out " + out);
    EXPECT_EQ(r.rc, 0) << r.out;
    return out;
  }
  nlohmann::json RunJson(const std::string& args) {
    Result r = Sh(bin_ + "run " + args + store_ + " --json");
    EXPECT_EQ(r.rc, 0) << r.out;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
  std::string dir_, bin_, store_;
};

TEST_F(RunText, PromptWithLlamaTokenizerAddsBos) {
  std::string m = Synth("llama-spm", "llama-spm");
  nlohmann::json j = RunJson(m + " --prompt 'Hello world' -n 4");
  EXPECT_EQ(j["prompt_tokens"], nlohmann::json({1, 15043, 3186}));
  EXPECT_EQ(j["tokens"].size(), 4u);
  EXPECT_TRUE(j["text"].is_string());
  // Streaming output is the same text the JSON reports.
  Result r = Sh(bin_ + "run " + m + " --prompt 'Hello world' -n 4" + store_);
  EXPECT_EQ(r.out, j["text"].get<std::string>() + "\n");
}

TEST_F(RunText, PromptFileWithGpt2TokenizerAddsNoBos) {
  std::string m = Synth("gpt2", "gpt-2");
  { std::FILE* f = std::fopen((dir_ + "/p.txt").c_str(), "w"); std::fputs("Hello world", f); std::fclose(f); }
  nlohmann::json j = RunJson(m + " --prompt-file " + dir_ + "/p.txt -n 2");
  EXPECT_EQ(j["prompt_tokens"], nlohmann::json({15496, 995}));
}

TEST_F(RunText, ChatUsesTheTemplateFromTokenizerConfig) {
  std::string m = Synth("llama-spm", "llama-spm");
  nlohmann::json j = RunJson(m + " --chat --prompt Hi -n 2");
  // "<s>[INST] Hi [/INST]" with <s> as the BOS token.
  EXPECT_EQ(j["prompt_tokens"], nlohmann::json({1, 518, 25580, 29962, 6324, 518, 29914, 25580, 29962}));
  Result repl = Sh("printf 'Hello\\nAgain\\n' | " + bin_ + "run " + m + " --chat -n 3 -v" + store_);
  EXPECT_EQ(repl.rc, 0) << repl.out;
  // The second turn keeps the first's KV: only its new tokens are run.
  std::vector<std::pair<int, int>> turns;  // (tokens run, tokens kept)
  const std::string key = "[prefill ";
  for (size_t at = repl.out.find(key); at != std::string::npos; at = repl.out.find(key, at + 1)) {
    int run = 0, kept = 0;
    ASSERT_EQ(std::sscanf(repl.out.c_str() + at, "[prefill %d tokens (%d kept from before)", &run, &kept), 2)
        << repl.out;
    turns.emplace_back(run, kept);
  }
  ASSERT_EQ(turns.size(), 2u) << repl.out;
  EXPECT_EQ(turns[0].second, 0);
  EXPECT_GE(turns[1].second, 9) << "turn 2 re-ran the history: " << repl.out;  // at least turn 1's 9 prompt tokens
  EXPECT_GT(turns[1].first, 0);
}

TEST_F(RunText, ClearErrors) {
  std::string m = Synth("gpt2", "gpt-2");
  Result r = Sh(bin_ + "run " + m + " --chat --prompt hi" + store_);
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.out, HasSubstr("no chat template"));
  r = Sh(bin_ + "run " + m + " --prompt hi --tokens 1" + store_);
  EXPECT_EQ(r.rc, 2);
  r = Sh(bin_ + "synth --tokenizer llama-spm --vocab-gguf " + testutil::VocabDir() + "/ggml-vocab-gpt-2.gguf --out " +
         dir_ + "/bad");
  EXPECT_EQ(r.rc, 1);
  EXPECT_THAT(r.out, HasSubstr("holds a \"gpt2\" vocabulary"));
}

}  // namespace
}  // namespace strata
