// Fuzzes the GGUF reader: strata::GgufFile::Parse (formats/src/gguf.cc) on the
// input as a GGUF file, then on success GgufVocabToHf (its tokenizer.json must be
// JSON) and Tokenizer::FromGguf (runtime/src/tokenizer_gguf.cc) with Encode/Decode.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "exercise_tokenizer.h"
#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "strata/runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  strata::GgufFile f;
  try {
    f = strata::GgufFile::Parse(bytes, "fuzz.gguf");
  } catch (const strata::Error&) {
    return 0;
  }
  for (const auto& [key, v] : f.entries()) {
    (void)strata::GgufTypeName(v.type);
    (void)strata::GgufTypeName(v.elem_type);
  }

  try {
    const strata::HfTokenizerFiles hf = strata::GgufVocabToHf(f);
    if (nlohmann::json::parse(hf.tokenizer_json, nullptr, false).is_discarded() ||
        nlohmann::json::parse(hf.tokenizer_config_json, nullptr, false).is_discarded())
      __builtin_trap();  // the converter wrote something that is not JSON
  } catch (const strata::Error&) {
  }

  try {
    const strata::Tokenizer tok = strata::Tokenizer::FromGguf(f);
    strata::fuzz::ExerciseTokenizer(tok);
  } catch (const strata::Error&) {
  }
  return 0;
}
