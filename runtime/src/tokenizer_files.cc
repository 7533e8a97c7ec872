// The tokenizer a variant carries: its files (stored as blobs at compile time)
// read back from the store.
#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "strata/formats/variant.h"
#include "strata/runtime/tokenizer.h"

namespace strata {

std::optional<VariantTokenizer> LoadVariantTokenizer(const Store& store, const Hash& variant) {
  Variant v = LoadVariant(store, variant);
  auto read = [&](const std::string& name) -> std::optional<std::string> {
    auto it = v.files.find(name);
    if (it == v.files.end()) return std::nullopt;
    return store.ReadBlob(it->second);
  };
  TokenizerConfig cfg;
  if (auto text = read("tokenizer_config.json")) cfg = ParseTokenizerConfig(*text, "tokenizer_config.json of the variant");
  if (auto text = read("tokenizer.json"))
    return VariantTokenizer{Tokenizer::FromHfJson(*text, cfg, "tokenizer.json of the variant"), cfg, "tokenizer.json"};
  // No tokenizer.json: a GGUF vocabulary among the files, if any.
  for (const auto& [name, hash] : v.files) {
    if (name.size() < 5 || name.compare(name.size() - 5, 5, ".gguf") != 0) continue;
    GgufFile f = GgufFile::Parse(store.ReadBlob(hash), name + " of the variant");
    if (cfg.chat_template.empty()) cfg.chat_template = f.FindString("tokenizer.chat_template").value_or("");
    return VariantTokenizer{Tokenizer::FromGguf(f), cfg, name};
  }
  return std::nullopt;
}

}  // namespace strata
