// Fuzzes the OpenAI request parsing of `strata serve`: strata::serve::ParseRequest
// (serve/src/openai.cc) on every input, as a completions body and as a chat body.
// A thrown ApiError is a clean rejection when it is a 400 whose Body() is OpenAI's
// error shape in valid JSON; an accepted request must hold what the server relies on.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "strata/serve/openai.h"

namespace {

using strata::serve::ApiError;
using strata::serve::ApiKind;
using strata::serve::OJson;
using strata::serve::ParsedRequest;

void CheckError(const ApiError& e) {
  if (e.status != 400 || e.type != "invalid_request_error" || e.message.empty()) __builtin_trap();
  const nlohmann::json j = nlohmann::json::parse(e.Body(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.size() != 1 || !j.contains("error")) __builtin_trap();
  const nlohmann::json& err = j["error"];
  if (!err.is_object() || err.size() != 4 || !err["message"].is_string() || err["type"] != e.type) __builtin_trap();
  if (e.param.empty() ? !err["param"].is_null() : err["param"] != e.param) __builtin_trap();
  if (e.code.empty() ? !err["code"].is_null() : err["code"] != e.code) __builtin_trap();
}

void CheckMessages(const ParsedRequest& r) {
  if (!r.messages.is_array() || r.messages.empty() || r.prompts() != 1) __builtin_trap();
  for (const OJson& m : r.messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) __builtin_trap();
    // Content reaches the template as a string (parts flattened) or null.
    if (auto c = m.find("content"); c != m.end() && !c->is_string() && !c->is_null()) __builtin_trap();
  }
  if (!r.tools.is_null() && !r.tools.is_array()) __builtin_trap();
  // What a template's tojson does with them; throws on invalid UTF-8 (a finding).
  (void)r.messages.dump();
  (void)r.tools.dump();
}

void CheckPrompts(const ParsedRequest& r) {
  if (!r.prompt_texts.empty() && !r.prompt_ids.empty()) __builtin_trap();  // mixed forms are refused
  if (r.prompts() < 1 || r.prompts() > 64) __builtin_trap();
  for (const auto& ids : r.prompt_ids) {
    if (ids.empty()) __builtin_trap();
    for (int id : ids)
      if (id < 0) __builtin_trap();
  }
}

void Check(std::string_view body, ApiKind kind) {
  ParsedRequest r;
  try {
    r = strata::serve::ParseRequest(body, kind);
  } catch (const ApiError& e) {
    CheckError(e);
    return;
  }
  const auto& s = r.sampler;
  if (r.kind != kind || !(s.temperature >= 0 && s.temperature <= 2) || !(s.top_p > 0 && s.top_p <= 1) ||
      s.top_k < 0 || !(s.repetition_penalty > 0) || r.logprobs < -1 || r.logprobs > 20)
    __builtin_trap();
  if ((r.max_tokens && *r.max_tokens < 1) || (r.include_usage && !r.stream) || r.stop.size() > 16 || r.echo)
    __builtin_trap();
  for (const std::string& st : r.stop)
    if (st.empty() || st.size() > 1024) __builtin_trap();
  if (kind == ApiKind::kChat) CheckMessages(r);
  else CheckPrompts(r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  Check(body, ApiKind::kCompletions);
  Check(body, ApiKind::kChat);
  return 0;
}
