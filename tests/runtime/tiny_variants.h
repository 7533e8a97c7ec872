// The store engine_test and scheduler_test run on: the tiny synthetic mistral
// (hidden 64, 4 heads, 2 kv heads, vocab 256, 4 layers) as org/m, compiled
// as "base", "dus" (testutil::kDusPlan) and "bexp" (kBlockExpansionPlan).
#pragma once

#include <filesystem>
#include <string>
#include <utility>

#include "../compiler/test_util.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/synth.h"

namespace strata::testutil {

// Fills `dir` (an HF cache and a store) and returns the store.
inline Store* MakeTinyVariantStore(const std::filesystem::path& dir) {
  const std::string cache = dir / "hf";
  std::filesystem::create_directories(cache);
  ScopedEnv env("HF_HUB_CACHE", cache);
  SynthSpec s;
  s.preset = "tiny";
  s.layers = 4;
  SynthToHfCache(s, cache, "org/m");
  auto* store = new Store(dir / "store");
  const std::pair<const char*, std::string> plans[] = {
      {"base", "models:\n  - model: org/m\nmerge_method: passthrough\ndtype: bfloat16\n"},
      {"dus", kDusPlan},
      {"bexp", kBlockExpansionPlan}};
  for (const auto& [name, plan] : plans) {
    CompileOptions o;
    o.name = name;
    Compile(*store, ParsePlan(plan, std::string(name) + ".yml"), o);
  }
  return store;
}

}  // namespace strata::testutil
