// Shared by gguf_fuzz.cc and tokenizer_fuzz.cc: runs a tokenizer that loaded
// over fixed texts (added/special tokens, byte fallback, invalid UTF-8), and
// traps when an id comes out that the vocabulary does not have.
#pragma once

#include <string_view>
#include <vector>

#include "strata/runtime/tokenizer.h"

namespace strata::fuzz {

inline void ExerciseTokenizer(const Tokenizer& tok) {
  static constexpr std::string_view kTexts[] = {
      "Hello, w\xc3\xb6rld! 12 345  x\n\n\ty",
      "<s>[INST] hi [/INST]</s><|im_end|> \xe2\x96\x81" "a\xe2\x96\x81\xe2\x96\x81 b",
      "\xff\xc3(\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e) \xf0\x9f\x98\x80 I'm 's\r\n",
      " ",
  };
  const int n = tok.vocab_size();
  (void)tok.description();
  for (std::string_view text : kTexts) {
    for (bool special : {true, false}) {
      const std::vector<int> ids = tok.Encode(text, special);
      for (int id : ids)
        if (id < 0 || id >= n) __builtin_trap();
      (void)tok.Decode(ids, true);
      (void)tok.Decode(ids, false);
      StreamDecoder d(tok, !special);
      for (int id : ids) (void)d.Push(id);
      (void)d.Finish();
    }
    const std::vector<int> prompt = tok.EncodePrompt(text);
    for (int id : prompt)
      if (id < 0 || id >= n) __builtin_trap();
  }
  // Out-of-range ids decode to nothing.
  (void)tok.Decode({-1, n, n + 1, 0x7fffffff});
  for (int id : {tok.bos_id(), tok.eos_id(), 0, n - 1}) {
    (void)tok.IsSpecial(id);
    (void)tok.TokenText(id);
  }
  (void)tok.TokenId("<s>");
  (void)tok.TokenId("");
}

}  // namespace strata::fuzz
