// Small helpers shared by the compiler tests: a self-removing temp directory,
// scoped environment and write-budget overrides, and plain file utilities.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "strata/formats/error.h"
#include "strata/formats/file.h"

namespace strata::testutil {

namespace fs = std::filesystem;

// Source layers 0-2 then 1-3 of org/m: SOLAR-style DUS.
inline const char* kDusPlan =
    "slices:\n"
    "  - sources:\n"
    "    - model: org/m\n"
    "      layer_range: [0, 3]\n"
    "  - sources:\n"
    "    - model: org/m\n"
    "      layer_range: [1, 4]\n"
    "merge_method: passthrough\n"
    "dtype: bfloat16\n";

// Layers 0-3 of org/m, then layer 3 twice more with o_proj and down_proj
// zeroed: block expansion to 6 layers (scale nodes over org/m's blobs).
inline const char* kBlockExpansionPlan =
    "slices:\n"
    "  - sources:\n"
    "    - model: org/m\n"
    "      layer_range: [0, 4]\n"
    "  - sources:\n"
    "    - model: org/m\n"
    "      layer_range: [3, 4]\n"
    "      parameters:\n"
    "        scale:\n"
    "          - filter: o_proj\n"
    "            value: 0.0\n"
    "          - filter: down_proj\n"
    "            value: 0.0\n"
    "          - value: 1.0\n"
    "  - sources:\n"
    "    - model: org/m\n"
    "      layer_range: [3, 4]\n"
    "      parameters:\n"
    "        scale:\n"
    "          - filter: o_proj\n"
    "            value: 0.0\n"
    "          - filter: down_proj\n"
    "            value: 0.0\n"
    "          - value: 1.0\n"
    "merge_method: passthrough\n"
    "dtype: bfloat16\n";


// A fresh directory under testing::TempDir(), removed with everything in it
// when the test ends (pass or fail).
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string tmpl = (fs::path(::testing::TempDir()) / "strata_compiler_test.XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* p = ::mkdtemp(buf.data());
    if (p == nullptr) ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    path_ = p ? std::string(p) : tmpl;
  }
  ~ScopedTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// Sets an environment variable for the scope and restores the previous value
// (or its absence) afterwards, so tests do not leak HF_HUB_CACHE.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    ::setenv(name_.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The write budget is process-global: always put it back to "unlimited" (-1),
// even when an assertion fails mid-test, or every later test would hit ENOSPC.
class ScopedWriteBudget {
 public:
  explicit ScopedWriteBudget(int64_t bytes) { SetWriteBudgetForTesting(bytes); }
  ~ScopedWriteBudget() { SetWriteBudgetForTesting(-1); }
  ScopedWriteBudget(const ScopedWriteBudget&) = delete;
  ScopedWriteBudget& operator=(const ScopedWriteBudget&) = delete;
};

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Regular files below `dir` (recursively), as paths relative to it, sorted.
inline std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

// Every entry (file, directory, anything) directly inside `dir`, sorted.
inline std::vector<std::string> EntriesIn(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Runs `f` and returns the message of the strata::Error it throws; records a
// failure when it throws nothing or another exception type (the API promises
// Error for every condition a user can act on).
template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected strata::Error, got another exception: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an exception, none was thrown";
  return "";
}

}  // namespace strata::testutil
