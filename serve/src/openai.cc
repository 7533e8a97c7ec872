// Request parsing and error bodies of the OpenAI API (openai.h).
#include "strata/serve/openai.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace strata::serve {

std::string ApiError::Body() const {
  OJson e = {{"message", message}, {"type", type}, {"param", param.empty() ? OJson() : OJson(param)},
             {"code", code.empty() ? OJson() : OJson(code)}};
  return OJson{{"error", e}}.dump(-1, ' ', false, OJson::error_handler_t::replace);
}

namespace {

[[noreturn]] void Bad(const std::string& param, const std::string& what) {
  throw ApiError(400, "'" + param + "': " + what, "invalid_request_error", param);
}

const char* TypeName(const OJson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

[[noreturn]] void WrongType(const std::string& param, const OJson& v, const char* want) {
  Bad(param, std::string("expected ") + want + ", got " + TypeName(v));
}

// `param` names the field in errors when it is nested (stream_options.include_usage).
bool Bool(const OJson& body, const char* k, bool dflt, const char* param = nullptr) {
  auto it = body.find(k);
  if (it == body.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) WrongType(param ? param : k, *it, "a boolean");
  return it->get<bool>();
}

std::optional<double> Number(const OJson& body, const char* k) {
  auto it = body.find(k);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) WrongType(k, *it, "a number");
  const double d = it->get<double>();
  if (!std::isfinite(d)) Bad(k, "must be finite");
  return d;
}

// An integer; a float with an integral value (1.0) is accepted as JSON allows.
std::optional<int64_t> Int(const OJson& body, const char* k, int64_t lo, int64_t hi) {
  auto it = body.find(k);
  if (it == body.end() || it->is_null()) return std::nullopt;
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) Bad(k, "is out of range");
    v = static_cast<int64_t>(u);
  } else if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else if (it->is_number_float()) {
    const double d = it->get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) WrongType(k, *it, "an integer");
    v = static_cast<int64_t>(d);
  } else {
    WrongType(k, *it, "an integer");
  }
  if (v < lo || v > hi) Bad(k, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " + std::to_string(v));
  return v;
}

// Ids of a token list: non-negative integers that fit an int.
std::vector<int> TokenList(const OJson& a, const std::string& param) {
  std::vector<int> ids;
  for (const OJson& t : a) {
    if (!t.is_number_integer() && !t.is_number_unsigned()) WrongType(param, t, "a token id (integer)");
    const int64_t v = t.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(t.get<uint64_t>(), INT32_MAX + 1ull))
                                             : t.get<int64_t>();
    if (v < 0 || v > INT32_MAX) Bad(param, "token id " + std::to_string(v) + " is out of range");
    ids.push_back(static_cast<int>(v));
  }
  if (ids.empty()) Bad(param, "an empty list of token ids");
  return ids;
}

void ParsePrompt(const OJson& body, ParsedRequest& r) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) Bad("prompt", "is required");
  const OJson& p = *it;
  if (p.is_string()) {
    r.prompt_texts.push_back(p.get<std::string>());
    return;
  }
  if (!p.is_array()) WrongType("prompt", p, "a string, a list of strings, or token ids");
  if (p.empty()) Bad("prompt", "an empty list");
  if (p[0].is_number()) {
    r.prompt_ids.push_back(TokenList(p, "prompt"));
    return;
  }
  if (p.size() > 64) Bad("prompt", "at most 64 prompts per request");
  for (size_t i = 0; i < p.size(); ++i) {
    const OJson& e = p[i];
    const std::string param = "prompt[" + std::to_string(i) + "]";
    if (e.is_string()) {
      if (!r.prompt_ids.empty()) Bad(param, "mixes strings and token lists");
      r.prompt_texts.push_back(e.get<std::string>());
    } else if (e.is_array()) {
      if (!r.prompt_texts.empty()) Bad(param, "mixes strings and token lists");
      r.prompt_ids.push_back(TokenList(e, param));
    } else {
      WrongType(param, e, "a string or a list of token ids");
    }
  }
}

// Content parts ([{"type":"text","text":...}]) become one string, as the
// templates expect content to be; other part types are refused.
void ParseMessages(const OJson& body, ParsedRequest& r) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) Bad("messages", "is required");
  if (!it->is_array()) WrongType("messages", *it, "an array of messages");
  if (it->empty()) Bad("messages", "must contain at least one message");
  if (it->size() > 4096) Bad("messages", "at most 4096 messages");
  r.messages = OJson::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const OJson& m = (*it)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) WrongType(at, m, "an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) Bad(at + ".role", "is required and must be a string");
    OJson out = m;
    auto c = m.find("content");
    if (c != m.end() && c->is_array()) {
      std::string text;
      for (size_t j = 0; j < c->size(); ++j) {
        const OJson& part = (*c)[j];
        const std::string pat = at + ".content[" + std::to_string(j) + "]";
        if (!part.is_object()) WrongType(pat, part, "a content part object");
        auto type = part.find("type");
        if (type == part.end() || !type->is_string() || type->get<std::string>() != "text")
          Bad(pat + ".type", "only text content parts are supported");
        auto t = part.find("text");
        if (t == part.end() || !t->is_string()) Bad(pat + ".text", "is required and must be a string");
        text += t->get<std::string>();
      }
      out["content"] = text;
    } else if (c != m.end() && !c->is_string() && !c->is_null()) {
      WrongType(at + ".content", *c, "a string, null or a list of content parts");
    }
    r.messages.push_back(std::move(out));
  }
  if (auto t = body.find("tools"); t != body.end() && !t->is_null()) {
    if (!t->is_array()) WrongType("tools", *t, "an array");
    r.tools = *t;
  }
}

// Nesting is limited before parsing: copying a value (the messages, tools),
// dumping it (a template's tojson) and comparing it recurse once per level,
// and a body within --max-body could nest millions deep.
constexpr int kMaxNesting = 128;

// The deepest nesting of arrays and objects in JSON text; brackets inside
// strings do not count.
int Nesting(std::string_view t) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

}  // namespace

ParsedRequest ParseRequest(std::string_view text, ApiKind kind) {
  if (const int n = Nesting(text); n > kMaxNesting)
    throw ApiError(400, "the request body nests arrays and objects " + std::to_string(n) + " deep; at most " +
                            std::to_string(kMaxNesting) + " levels are allowed");
  OJson body;
  try {
    body = OJson::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, std::string("the request body must be a JSON object, got ") + TypeName(body));
  ParsedRequest r;
  r.kind = kind;
  auto model = body.find("model");
  if (model == body.end() || model->is_null()) Bad("model", "is required");
  if (!model->is_string()) WrongType("model", *model, "a string");
  r.model = model->get<std::string>();
  if (kind == ApiKind::kChat) ParseMessages(body, r);
  else ParsePrompt(body, r);

  const int64_t kMaxTokens = int64_t{1} << 30;
  std::optional<int64_t> mt = Int(body, "max_tokens", 1, kMaxTokens);
  if (auto mct = Int(body, "max_completion_tokens", 1, kMaxTokens)) {
    if (mt && *mt != *mct) Bad("max_completion_tokens", "differs from max_tokens; give one of them");
    mt = mct;
  }
  r.max_tokens = mt;
  if (auto n = Int(body, "n", 1, 128); n && *n != 1) Bad("n", "only n = 1 is supported (one choice per prompt)");
  if (auto b = Int(body, "best_of", 1, 128); b && *b != 1) Bad("best_of", "only best_of = 1 is supported");
  r.sampler.temperature = Number(body, "temperature").value_or(1.0);
  if (r.sampler.temperature < 0 || r.sampler.temperature > 2) Bad("temperature", "must be between 0 and 2");
  r.sampler.top_p = Number(body, "top_p").value_or(1.0);
  if (!(r.sampler.top_p > 0 && r.sampler.top_p <= 1)) Bad("top_p", "must be in (0, 1]");
  r.sampler.top_k = static_cast<int>(Int(body, "top_k", 0, 1 << 20).value_or(0));
  r.sampler.repetition_penalty = Number(body, "repetition_penalty").value_or(1.0);
  if (!(r.sampler.repetition_penalty > 0)) Bad("repetition_penalty", "must be greater than 0");
  if (auto s = Int(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    r.sampler.seed = static_cast<uint64_t>(*s);
    r.seed_given = true;
  }
  for (const char* k : {"presence_penalty", "frequency_penalty"})
    if (auto v = Number(body, k); v && *v != 0) Bad(k, "is not supported (only 0); use repetition_penalty");
  if (auto lb = body.find("logit_bias"); lb != body.end() && !lb->is_null()) {
    if (!lb->is_object()) WrongType("logit_bias", *lb, "an object");
    if (!lb->empty()) Bad("logit_bias", "is not supported");
  }
  if (auto rf = body.find("response_format"); rf != body.end() && !rf->is_null()) {
    if (!rf->is_object()) WrongType("response_format", *rf, "an object");
    auto t = rf->find("type");
    if (t == rf->end() || !t->is_string() || t->get<std::string>() != "text")
      Bad("response_format", "only {\"type\": \"text\"} is supported");
  }
  if (auto st = body.find("stop"); st != body.end() && !st->is_null()) {
    if (st->is_string()) {
      r.stop.push_back(st->get<std::string>());
    } else if (st->is_array()) {
      if (st->size() > 16) Bad("stop", "at most 16 stop sequences");
      for (const OJson& s : *st) {
        if (!s.is_string()) WrongType("stop", s, "a string or a list of strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      WrongType("stop", *st, "a string or a list of strings");
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) Bad("stop", "an empty stop sequence");
      if (s.size() > 1024) Bad("stop", "a stop sequence longer than 1024 bytes");
    }
  }
  r.stream = Bool(body, "stream", false);
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) WrongType("stream_options", *so, "an object");
    if (!r.stream) Bad("stream_options", "is only allowed with \"stream\": true");
    r.include_usage = Bool(*so, "include_usage", false, "stream_options.include_usage");
  }
  r.ignore_eos = Bool(body, "ignore_eos", false);
  if (kind == ApiKind::kChat) {
    const bool lp = Bool(body, "logprobs", false);
    auto top = Int(body, "top_logprobs", 0, 20);
    if (top && !lp) Bad("top_logprobs", "needs \"logprobs\": true");
    if (lp) r.logprobs = static_cast<int>(top.value_or(0));
  } else {
    if (auto lp = Int(body, "logprobs", 0, 20)) r.logprobs = static_cast<int>(*lp);
    if (Bool(body, "echo", false)) Bad("echo", "is not supported");
    if (auto sfx = body.find("suffix"); sfx != body.end() && !sfx->is_null()) Bad("suffix", "is not supported");
  }
  return r;
}

}  // namespace strata::serve
