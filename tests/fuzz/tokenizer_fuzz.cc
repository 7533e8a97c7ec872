// Fuzzes tokenizer.json loading: strata::Tokenizer::FromHfJson (runtime/src/tokenizer_hf.cc)
// on the input (empty TokenizerConfig for even sizes, explicit <s>/</s> for odd),
// Encode/Decode of fixed texts when it loads; ParseTokenizerConfig on the input too.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "exercise_tokenizer.h"
#include "strata/formats/error.h"
#include "strata/runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  strata::TokenizerConfig config;
  if (size % 2 == 1) {
    config.add_bos = true;
    config.add_eos = true;
    config.bos_token = "<s>";
    config.eos_token = "</s>";
  }
  try {
    (void)strata::ParseTokenizerConfig(text, "fuzz tokenizer_config.json");
  } catch (const strata::Error&) {
  }
  try {
    const strata::Tokenizer tok = strata::Tokenizer::FromHfJson(text, config, "fuzz tokenizer.json");
    strata::fuzz::ExerciseTokenizer(tok);
  } catch (const strata::Error&) {
  }
  return 0;
}
