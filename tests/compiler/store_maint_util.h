// A fixture for the verify and gc tests: tiny synthetic models in a private HF
// cache, a store, plans that share a base, and helpers that damage objects and
// walk a variant's files by reading node JSON directly (not through strata).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include "strata/compiler/compile.h"
#include "strata/compiler/synth.h"
#include "test_util.h"

namespace strata::testutil {

// All of org/m plus a copy of its last layer with o_proj and down_proj zeroed:
// block expansion (scale nodes over org/m's blobs).
inline const char* kExpandPlan =
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
    "merge_method: passthrough\n"
    "dtype: bfloat16\n";

class StoreMaintTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = tmp_ / "hf";
    std::filesystem::create_directories(cache_);
    env_ = std::make_unique<ScopedEnv>("HF_HUB_CACHE", cache_);
    store_ = std::make_unique<Store>(tmp_ / "store");
  }

  void Synth(const std::string& id, int layers = 4, uint64_t seed = 0) {
    SynthSpec s;
    s.preset = "tiny";
    s.layers = layers;
    s.seed = seed;
    SynthToHfCache(s, cache_, id);
  }

  Plan PlanFile(const std::string& name, const std::string& text) {
    std::filesystem::create_directories(tmp_ / "plans");
    std::string path = tmp_ / ("plans/" + name + ".yml");
    WriteText(path, text);
    return LoadPlan(path);
  }

  Hash Compile(const std::string& name, const std::string& text) {
    CompileOptions o;
    o.name = name;
    return strata::Compile(*store_, PlanFile(name, text), o).variant;
  }

  std::string Root() const { return store_->root(); }
  std::string P(const std::string& rel) const { return store_->root() + "/" + rel; }

  ScopedTempDir tmp_;
  std::string cache_;
  std::unique_ptr<ScopedEnv> env_;
  std::unique_ptr<Store> store_;
};

// Store objects are read-only; make one writable to damage it.
inline void MakeWritable(const std::string& path) {
  std::filesystem::permissions(path, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
}

inline void FlipByteAt(const std::string& path, size_t offset) {
  MakeWritable(path);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x01));
  ASSERT_TRUE(f.good()) << path;
}

inline std::string ObjPath(const std::string& dir, const std::string& hex) {
  return dir + "/" + hex.substr(0, 2) + "/" + hex;
}

// Every blob and node file (relative paths) that variant node `hex` reaches,
// found by reading node JSON with nlohmann directly.
inline std::set<std::string> Reach(const std::string& root, const std::string& hex) {
  std::set<std::string> out;
  std::vector<std::string> stack = {hex};
  auto blob = [&](const nlohmann::json& v) { out.insert(ObjPath("blobs", v.get<std::string>())); };
  while (!stack.empty()) {
    std::string h = stack.back();
    stack.pop_back();
    std::string rel = ObjPath("nodes", h);
    if (!out.insert(rel).second) continue;
    nlohmann::json j = nlohmann::json::parse(ReadText(root + "/" + rel));
    std::string kind = j["kind"];
    if (kind == "variant") {
      blob(j["config"]);
      blob(j["plan"]);
      for (auto& [name, b] : j["files"].items()) blob(b);
      for (const char* k : {"pre", "post"})
        for (const auto& t : j[k]) stack.push_back(t["tensor"]);
      for (const auto& l : j["layers"]) stack.push_back(l["layer"]);
    } else if (kind == "layer") {
      for (auto& [role, t] : j["tensors"].items()) stack.push_back(t);
    } else if (j.contains("blob")) {
      blob(j["blob"]);
    } else if (j.contains("src")) {
      stack.push_back(j["src"]);
    }
  }
  return out;
}

}  // namespace strata::testutil
