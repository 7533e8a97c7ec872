// Loading a Hugging Face tokenizer.json (and tokenizer_config.json) into the
// pipeline of tokenizer_impl.h; every unsupported component is an error that
// names it, never a silent approximation.
#include <nlohmann/json.hpp>

#include "strata/formats/error.h"
#include "tokenizer_impl.h"

namespace strata {

namespace {

using Json = nlohmann::json;
constexpr std::string_view kMeta = "\u2581";
// Token ids above this are refused: the largest real vocabularies hold about
// 256K tokens, and an id sizes the token table.
constexpr int64_t kMaxTokenId = (int64_t{1} << 21) - 1;

// A JSON value's member `key` if `j` is an object that has it, else null: the
// one way this file reads optional members, so no accessor throws
// nlohmann's type errors on hostile input.
const Json& Member(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

// A token id in [0, kMaxTokenId], or nullopt.
std::optional<int> TokenIdValue(const Json& v) {
  if (!v.is_number_integer()) return std::nullopt;
  if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(kMaxTokenId)
                             : v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTokenId)
    return std::nullopt;
  return static_cast<int>(v.get<int64_t>());
}

// Context for messages: "tokenizer.json of mistral: pre_tokenizer.type ..."
struct Ctx {
  const std::string& what;
  [[noreturn]] void Fail(const std::string& msg) const { throw Error(what + ": " + msg); }
  const Json& Field(const Json& j, const char* key, const std::string& path) const {
    if (!j.is_object() || !j.contains(key)) Fail("missing \"" + std::string(key) + "\" in " + path);
    return j[key];
  }
  std::string String(const Json& j, const char* key, const std::string& path) const {
    const Json& v = Field(j, key, path);
    if (!v.is_string()) Fail(path + "." + key + " must be a string");
    return v.get<std::string>();
  }
  // An optional string member: `def` when absent or null.
  std::string OptString(const Json& j, const char* key, const std::string& def, const std::string& path) const {
    const Json& v = Member(j, key);
    if (v.is_null()) return def;
    if (!v.is_string()) Fail(path + "." + key + " must be a string");
    return v.get<std::string>();
  }
  // An optional integer member in [lo, hi]: `def` when absent or null.
  int OptInt(const Json& j, const char* key, int def, int lo, int hi, const std::string& path) const {
    const Json& v = Member(j, key);
    if (v.is_null()) return def;
    if (!v.is_number_integer() || (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(hi)
                                                          : v.get<int64_t>() < lo || v.get<int64_t>() > hi))
      Fail(path + "." + key + " must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    return static_cast<int>(v.get<int64_t>());
  }
  bool Bool(const Json& j, const char* key, bool def, const std::string& path) const {
    const Json& v = Member(j, key);
    if (v.is_null()) return def;
    if (!v.is_boolean()) Fail(path + "." + key + " must be true or false");
    return v.get<bool>();
  }
  std::string Type(const Json& j, const std::string& path) const {
    if (!j.is_object()) Fail(path + " must be an object or null");
    return String(j, "type", path);
  }
  [[noreturn]] void Unsupported(const std::string& path, const std::string& type, const char* supported) const {
    Fail(path + " \"" + type + "\" is not supported (strata implements " + supported + ")");
  }
};

// A Replace/Split pattern given as {"String": s}.
std::optional<std::string> StringPattern(const Json& j) {
  if (j.contains("pattern") && j["pattern"].is_object() && j["pattern"].contains("String") && j["pattern"]["String"].is_string())
    return j["pattern"]["String"].get<std::string>();
  return std::nullopt;
}

void ParseNormalizer(const Ctx& c, const Json& j, const std::string& path, Tokenizer::Impl& im) {
  if (j.is_null()) return;
  const std::string type = c.Type(j, path);
  if (type == "Sequence") {
    const Json& list = c.Field(j, "normalizers", path);
    if (!list.is_array()) c.Fail(path + ".normalizers must be an array");
    for (size_t i = 0; i < list.size(); ++i) ParseNormalizer(c, list[i], path + ".normalizers[" + std::to_string(i) + "]", im);
  } else if (type == "Prepend" && c.String(j, "prepend", path) == kMeta) {
    im.prepend_meta = true;
  } else if (type == "Replace" && StringPattern(j) == " " && c.String(j, "content", path) == kMeta) {
    im.space_to_meta = true;
  } else if (type == "NFC") {
    im.nfc = true;
  } else {
    c.Unsupported(path, type, "Sequence, NFC, Prepend \"▁\" and Replace \" \" -> \"▁\"");
  }
}

Tokenizer::Impl::Prepend MetaspacePrepend(const Ctx& c, const Json& j, const std::string& path) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    std::string s = j["prepend_scheme"].get<std::string>();
    if (s == "always") return Tokenizer::Impl::Prepend::kAlways;
    if (s == "first") return Tokenizer::Impl::Prepend::kFirst;
    if (s == "never") return Tokenizer::Impl::Prepend::kNever;
    c.Fail(path + ".prepend_scheme \"" + s + "\" is not always, first or never");
  }
  return c.Bool(j, "add_prefix_space", true, path) ? Tokenizer::Impl::Prepend::kAlways : Tokenizer::Impl::Prepend::kNever;
}

void ParsePreTokenizer(const Ctx& c, const Json& j, const std::string& path, Tokenizer::Impl& im) {
  if (j.is_null()) return;
  const std::string type = c.Type(j, path);
  if (type == "Sequence") {
    const Json& list = c.Field(j, "pretokenizers", path);
    if (!list.is_array()) c.Fail(path + ".pretokenizers must be an array");
    for (size_t i = 0; i < list.size(); ++i) ParsePreTokenizer(c, list[i], path + ".pretokenizers[" + std::to_string(i) + "]", im);
  } else if (type == "Metaspace") {
    if (j.contains("replacement") && j["replacement"] != kMeta) c.Fail(path + ".replacement must be \"▁\"");
    im.metaspace = true;
    im.metaspace_prepend = MetaspacePrepend(c, j, path);
    im.metaspace_split = c.Bool(j, "split", true, path);
  } else if (type == "ByteLevel") {
    im.byte_level = true;
    im.byte_level_prefix_space = c.Bool(j, "add_prefix_space", false, path);
    if (c.Bool(j, "use_regex", true, path)) {
      if (im.regex) c.Fail(path + " splits with GPT-2's regex after another Split; strata supports one split");
      im.regex = SplitRegex::kGpt2;
    }
  } else if (type == "Split") {
    if (im.byte_level) c.Fail(path + ": a Split after ByteLevel is not supported");
    const Json& pat = c.Field(j, "pattern", path);
    std::string regex = pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string() ? pat["Regex"].get<std::string>() : "";
    if (c.OptString(j, "behavior", "Isolated", path) != "Isolated" || c.Bool(j, "invert", false, path))
      c.Fail(path + ": only Split with behavior \"Isolated\" and invert false is supported");
    im.regex = RecognizeSplitRegex(regex);
    if (!im.regex)
      c.Fail(path + ".pattern is not a regex strata implements (those of GPT-2, Llama 3 and Qwen2): " + pat.dump());
  } else {
    c.Unsupported(path, type, "Sequence, Metaspace, ByteLevel and Split with the GPT-2, Llama 3 or Qwen2 regex");
  }
}

struct DecoderSpec {
  bool byte_level = false, meta_to_space = false, byte_fallback = false;
  int strip = 0;
};

void ParseDecoder(const Ctx& c, const Json& j, const std::string& path, DecoderSpec& d) {
  if (j.is_null()) return;
  const std::string type = c.Type(j, path);
  if (type == "Sequence") {
    const Json& list = c.Field(j, "decoders", path);
    if (!list.is_array()) c.Fail(path + ".decoders must be an array");
    for (size_t i = 0; i < list.size(); ++i) ParseDecoder(c, list[i], path + ".decoders[" + std::to_string(i) + "]", d);
  } else if (type == "Replace" && StringPattern(j) == kMeta && c.String(j, "content", path) == " ") {
    d.meta_to_space = true;
  } else if (type == "ByteFallback") {
    d.byte_fallback = true;
  } else if (type == "Fuse") {
  } else if (type == "Strip") {
    if (c.String(j, "content", path) != " " || c.OptInt(j, "stop", 0, 0, 1 << 20, path) != 0)
      c.Fail(path + ": only Strip of leading spaces is supported");
    d.strip = c.OptInt(j, "start", 0, 0, 1 << 20, path);
  } else if (type == "Metaspace") {
    d.meta_to_space = true;
    if (MetaspacePrepend(c, j, path) != Tokenizer::Impl::Prepend::kNever) d.strip = 1;
  } else if (type == "ByteLevel") {
    d.byte_level = true;
  } else {
    c.Unsupported(path, type, "Sequence, Replace \"▁\" -> \" \", ByteFallback, Fuse, Strip, Metaspace and ByteLevel");
  }
}

std::string DecodeToken(const DecoderSpec& d, const std::string& t) {
  if (d.byte_fallback)
    if (auto b = ParseByteToken(t)) return std::string(1, static_cast<char>(*b));
  if (d.byte_level) return ByteLevelDecode(t).value_or(t);
  if (!d.meta_to_space) return t;
  std::string out;
  for (size_t i = 0; i < t.size();) {
    if (t.compare(i, kMeta.size(), kMeta) == 0) {
      out += ' ';
      i += kMeta.size();
    } else {
      out += t[i++];
    }
  }
  return out;
}

void ParseVocab(const Ctx& c, const Json& model, Tokenizer::Impl& im) {
  const Json& vocab = c.Field(model, "vocab", "model");
  if (!vocab.is_object()) c.Fail("model.vocab must be an object of token -> id");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    std::optional<int> id_or = TokenIdValue(it.value());
    if (!id_or)
      c.Fail("model.vocab[\"" + it.key() + "\"] is not a token id (0 to " + std::to_string(kMaxTokenId) + ")");
    int id = *id_or;
    im.vocab.emplace(it.key(), id);
    im.EnsureId(id, it.key());
  }
}

std::vector<std::array<int, 3>> ParseMerges(const Ctx& c, const Json& model, const Tokenizer::Impl& im) {
  const Json& merges = c.Field(model, "merges", "model");
  if (!merges.is_array()) c.Fail("model.merges must be an array");
  std::vector<std::array<int, 3>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    std::string l, r;
    if (m.is_string()) {  // "left right"
      const std::string& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        c.Fail("model.merges[" + std::to_string(i) + "] \"" + s + "\" is not two tokens separated by one space");
      l = s.substr(0, sp), r = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["left", "right"]
      l = m[0].get<std::string>(), r = m[1].get<std::string>();
    } else {
      c.Fail("model.merges[" + std::to_string(i) + "] is neither \"left right\" nor [\"left\", \"right\"]");
    }
    auto lid = im.vocab.find(l), rid = im.vocab.find(r), mid = im.vocab.find(l + r);
    if (lid == im.vocab.end() || rid == im.vocab.end() || mid == im.vocab.end())
      c.Fail("model.merges[" + std::to_string(i) + "] (\"" + l + "\", \"" + r + "\") uses or makes a token outside model.vocab");
    out.push_back({lid->second, rid->second, mid->second});
  }
  return out;
}

// True when no merge can join a word to the "▁" starting the next one: no
// merge makes a token with an inner "▁" or consumes a byte-fallback token.
bool MergesKeepWords(const Tokenizer::Impl& im, const std::vector<std::array<int, 3>>& merges) {
  if (!im.vocab.count(std::string("\u2581"))) return false;  // unknown "▁"s could fuse with their neighbours
  for (const auto& m : merges)
    if (HasInnerMeta(im.tokens[m[2]]) || ParseByteToken(im.tokens[m[0]]) || ParseByteToken(im.tokens[m[1]])) return false;
  return true;
}

// Returns MergesKeepWords().
bool ParseModel(const Ctx& c, const Json& j, Tokenizer::Impl& im) {
  const Json& model = c.Field(j, "model", "tokenizer.json");
  const std::string type = model.is_object() && model.contains("type") ? c.String(model, "type", "model") : "BPE";
  if (type != "BPE") c.Unsupported("model.type", type, "BPE (Llama, Mistral, GPT-2, Llama 3, Qwen2)");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(affix) && !model[affix].is_null() && model[affix] != "")
      c.Fail(std::string("model.") + affix + " is set; strata's BPE does not support subword affixes");
  ParseVocab(c, model, im);
  BpeModel::Options o;
  o.byte_fallback = c.Bool(model, "byte_fallback", false, "model");
  o.fuse_unk = c.Bool(model, "fuse_unk", false, "model");
  o.ignore_merges = c.Bool(model, "ignore_merges", false, "model");
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = im.vocab.find(model["unk_token"].get<std::string>());
    if (it == im.vocab.end()) c.Fail("model.unk_token \"" + model["unk_token"].get<std::string>() + "\" is not in model.vocab");
    o.unk = it->second;
  }
  std::vector<std::array<int, 3>> merges = ParseMerges(c, model, im);
  im.bpe = std::make_unique<BpeModel>(im.vocab, merges, o);
  return MergesKeepWords(im, merges);
}

void ParseAddedTokens(const Ctx& c, const Json& j, Tokenizer::Impl& im) {
  if (!j.contains("added_tokens") || j["added_tokens"].is_null()) return;
  const Json& list = j["added_tokens"];
  if (!list.is_array()) c.Fail("added_tokens must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    const Json& t = list[i];
    const Json& id = c.Field(t, "id", path);
    std::optional<int> id_or = TokenIdValue(id);
    if (!id_or) c.Fail(path + ".id is not a token id (0 to " + std::to_string(kMaxTokenId) + ")");
    AddedToken a;
    a.id = *id_or;
    a.content = c.String(t, "content", path);
    if (a.content.empty()) c.Fail(path + ".content is empty");
    a.special = c.Bool(t, "special", false, path);
    a.lstrip = c.Bool(t, "lstrip", false, path);
    a.rstrip = c.Bool(t, "rstrip", false, path);
    a.single_word = c.Bool(t, "single_word", false, path);
    im.EnsureId(a.id, a.content);
    im.added.push_back(std::move(a));
  }
  im.IndexAddedTokens();
}

// The special tokens the post-processor puts around a single sequence.
struct Template {
  int first = -1, last = -1;
};

Template PostProcessorTemplate(const Json& pp) {
  Template t;
  if (!pp.is_object()) return t;
  const Json& type = Member(pp, "type");
  if (type == "Sequence" && Member(pp, "processors").is_array()) {
    for (const Json& p : pp["processors"]) {
      Template inner = PostProcessorTemplate(p);
      if (inner.first >= 0) t.first = inner.first;
      if (inner.last >= 0) t.last = inner.last;
    }
    return t;
  }
  if (type != "TemplateProcessing" || !Member(pp, "single").is_array()) return t;
  const Json& single = pp["single"];
  auto special_id = [&](const Json& item) -> int {
    const Json& name = Member(Member(item, "SpecialToken"), "id");
    if (!name.is_string()) return -1;
    const Json& ids = Member(Member(Member(pp, "special_tokens"), name.get<std::string>().c_str()), "ids");
    return ids.is_array() && ids.size() == 1 ? TokenIdValue(ids[0]).value_or(-1) : -1;
  };
  if (!single.empty()) {
    t.first = special_id(single.front());
    if (single.size() > 1) t.last = special_id(single.back());
  }
  return t;
}

// BOS/EOS: tokenizer_config.json first, then the post-processor, then (for
// SentencePiece-style vocabularies, Llama 2 and Mistral) "<s>" added by default.
void ResolveSpecials(const Json& j, const TokenizerConfig& cfg, Tokenizer& tok, Tokenizer::Impl& im) {
  Template t = PostProcessorTemplate(Member(j, "post_processor"));
  // The post-processor may name ids the vocabulary does not have.
  const int n = static_cast<int>(im.tokens.size());
  if (t.first >= n) t.first = -1;
  if (t.last >= n) t.last = -1;
  const bool spm_style = im.prepend_meta || im.metaspace;
  if (!cfg.bos_token.empty()) im.bos = tok.TokenId(cfg.bos_token).value_or(-1);
  if (im.bos < 0) im.bos = t.first;
  if (im.bos < 0 && spm_style) im.bos = tok.TokenId("<s>").value_or(-1);
  if (!cfg.eos_token.empty()) im.eos = tok.TokenId(cfg.eos_token).value_or(-1);
  if (im.eos < 0 && t.last >= 0) im.eos = t.last;
  if (im.eos < 0 && spm_style) im.eos = tok.TokenId("</s>").value_or(-1);
  im.add_bos = cfg.add_bos.value_or(t.first >= 0 || spm_style) && im.bos >= 0;
  im.add_eos = cfg.add_eos.value_or(t.last >= 0) && im.eos >= 0;
}

std::string Describe(const Tokenizer::Impl& im) {
  std::string d = im.byte_level ? "byte-level BPE" : "BPE";
  if (im.regex) d += ", " + std::string(SplitRegexName(*im.regex)) + " split";
  if (im.prepend_meta || im.space_to_meta || im.metaspace) d += ", SentencePiece-style spaces";
  if (im.nfc) d += ", NFC";
  return d + " (tokenizer.json)";
}

std::string TokenContent(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

}  // namespace

TokenizerConfig ParseTokenizerConfig(std::string_view text, const std::string& what) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw Error(what + ": not a JSON object");
  TokenizerConfig cfg;
  if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) cfg.add_bos = j["add_bos_token"].get<bool>();
  if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) cfg.add_eos = j["add_eos_token"].get<bool>();
  if (j.contains("bos_token")) cfg.bos_token = TokenContent(j["bos_token"]);
  if (j.contains("eos_token")) cfg.eos_token = TokenContent(j["eos_token"]);
  if (j.contains("chat_template")) {
    const Json& ct = j["chat_template"];
    if (ct.is_string()) cfg.chat_template = ct.get<std::string>();
    // A list of named templates: the "default" one, else the first.
    if (ct.is_array())
      for (const Json& t : ct)
        if (t.is_object() && t.contains("template") && t["template"].is_string() &&
            (cfg.chat_template.empty() || Member(t, "name") == "default"))
          cfg.chat_template = t["template"].get<std::string>();
  }
  return cfg;
}

Tokenizer Tokenizer::FromHfJson(std::string_view text, const TokenizerConfig& config, const std::string& what) {
  // Every read above is type-checked; this backstop keeps a missed one an
  // Error (a clean refusal) rather than an abort.
  try {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(what + ": not valid JSON (truncated or corrupt?)");
  if (!j.is_object()) throw Error(what + ": not a JSON object");
  Ctx c{what};
  auto im = std::make_shared<Impl>();
  const bool keeps_words = ParseModel(c, j, *im);
  ParseAddedTokens(c, j, *im);
  ParseNormalizer(c, Member(j, "normalizer"), "normalizer", *im);
  ParsePreTokenizer(c, Member(j, "pre_tokenizer"), "pre_tokenizer", *im);
  im->split_words_at_meta = keeps_words && !im->regex && !im->byte_level &&
                            (im->prepend_meta || im->space_to_meta || (im->metaspace && !im->metaspace_split));
  DecoderSpec d;
  ParseDecoder(c, Member(j, "decoder"), "decoder", d);
  im->strip_leading_spaces = d.strip;
  im->BuildPieces([&](const std::string& t) { return DecodeToken(d, t); });
  im->description = Describe(*im);
  Tokenizer tok;
  tok.impl_ = im;
  ResolveSpecials(j, config, tok, *im);
  return tok;
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": malformed tokenizer.json (" + e.what() + ")");
  }
}

}  // namespace strata
