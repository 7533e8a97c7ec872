// Shared by the tokenizer tests: the vocabulary test vectors of ../shared/vocab
// (inputs and the ids the reference tokenizers produce) and a GGUF writer for
// hand-made vocabularies and broken files.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "strata/formats/file.h"

namespace strata::testutil {

inline std::string VocabDir() { return std::string(STRATA_SOURCE_DIR) + "/../shared/vocab"; }

// Skips the calling test when the shared vocabularies are not there.
#define STRATA_REQUIRE_VOCAB()                                                                              \
  do {                                                                                                       \
    if (!std::filesystem::is_directory(::strata::testutil::VocabDir()))                                      \
      GTEST_SKIP() << "tokenizer test vectors not found at " << ::strata::testutil::VocabDir()              \
                   << " (the shared/vocab directory beside the checkout); skipping";                        \
  } while (0)

struct VocabCase {
  std::string text;
  std::vector<int> ids;
};

// Reads NAME.gguf.inp / NAME.gguf.out: inputs separated by a separator line,
// one line of space-separated ids per input.
inline std::vector<VocabCase> LoadVocabCases(const std::string& name) {
  const std::string base = VocabDir() + "/" + name + ".gguf";
  const std::string inp = ReadFile(base + ".inp"), out = ReadFile(base + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<VocabCase> cases;
  for (size_t pos = 0; pos < inp.size();) {
    size_t end = inp.find(sep, pos);
    if (end == std::string::npos) break;
    cases.push_back({inp.substr(pos, end - pos), {}});
    pos = end + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  for (size_t i = 0; std::getline(lines, line); ++i) {
    if (i >= cases.size()) {
      ADD_FAILURE() << base << ".out has more lines than inputs";
      break;
    }
    std::istringstream ids(line);
    for (int id; ids >> id;) cases[i].ids.push_back(id);
  }
  return cases;
}

// A GGUF writer for tests: header, then key/value pairs added in order.
class GgufBuilder {
 public:
  explicit GgufBuilder(uint32_t version = 3, uint64_t tensors = 0) {
    bytes_ = "GGUF";
    Put(version);
    Put(tensors);
    count_at_ = bytes_.size();
    Put(uint64_t{0});
  }
  template <class T>
  void Put(T v) {
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void PutString(const std::string& s) {
    Put(static_cast<uint64_t>(s.size()));
    bytes_ += s;
  }
  void Key(const std::string& k, uint32_t type) {
    PutString(k);
    Put(type);
    ++count_;
    std::memcpy(&bytes_[count_at_], &count_, sizeof(count_));
  }
  GgufBuilder& String(const std::string& k, const std::string& v) {
    Key(k, 8);
    PutString(v);
    return *this;
  }
  GgufBuilder& U32(const std::string& k, uint32_t v) {
    Key(k, 4);
    Put(v);
    return *this;
  }
  GgufBuilder& Bool(const std::string& k, bool v) {
    Key(k, 7);
    Put(static_cast<uint8_t>(v));
    return *this;
  }
  GgufBuilder& Strings(const std::string& k, const std::vector<std::string>& v) {
    Key(k, 9);
    Put(uint32_t{8});
    Put(static_cast<uint64_t>(v.size()));
    for (const auto& s : v) PutString(s);
    return *this;
  }
  GgufBuilder& F32s(const std::string& k, const std::vector<float>& v) {
    Key(k, 9);
    Put(uint32_t{6});
    Put(static_cast<uint64_t>(v.size()));
    for (float f : v) Put(f);
    return *this;
  }
  GgufBuilder& I32s(const std::string& k, const std::vector<int32_t>& v) {
    Key(k, 9);
    Put(uint32_t{5});
    Put(static_cast<uint64_t>(v.size()));
    for (int32_t x : v) Put(x);
    return *this;
  }
  const std::string& bytes() const { return bytes_; }
  std::string& mutable_bytes() { return bytes_; }

 private:
  std::string bytes_;
  size_t count_at_ = 0;
  uint64_t count_ = 0;
};

}  // namespace strata::testutil
