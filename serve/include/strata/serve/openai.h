// The OpenAI API's request fields and error bodies (docs/serve.md): parsing is
// a pure function of the body, so it is fuzzed without a model.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "strata/runtime/sampler.h"

namespace strata::serve {

// Request bodies keep their keys' order: a chat template's tojson prints
// them as the client sent them, as Python's dicts do.
using OJson = nlohmann::ordered_json;

// An error answer: HTTP status and OpenAI's {"error":{message,type,param,code}}.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : std::runtime_error(message), status(status), message(std::move(message)), type(std::move(type)),
        param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string message, type, param, code;
  double retry_after_s = 0;  // 429: Retry-After
  std::string Body() const;  // the JSON error body
};

enum class ApiKind { kCompletions, kChat };

// What a /v1/completions or /v1/chat/completions body asks for, checked for
// types and ranges (ParseRequest throws ApiError 400 naming the field).
struct ParsedRequest {
  ApiKind kind = ApiKind::kCompletions;
  std::string model;
  // chat: the messages (role and content checked, content parts flattened
  // to text) and tools (null when absent), as sent.
  OJson messages, tools;
  // completions: one entry per prompt (a list of prompts gives one choice
  // each); text, or token ids when the client sent ids.
  std::vector<std::string> prompt_texts;
  std::vector<std::vector<int>> prompt_ids;
  std::optional<int64_t> max_tokens;
  SamplerOptions sampler;
  bool seed_given = false;
  std::vector<std::string> stop;
  int logprobs = -1;  // -1: none; else top alternatives per token (0..20)
  bool stream = false, include_usage = false, ignore_eos = false, echo = false;
  int prompts() const { return static_cast<int>(kind == ApiKind::kChat ? 1 : prompt_texts.size() + prompt_ids.size()); }
};

// Parses and checks a request body. Throws ApiError (400) for malformed
// JSON, a missing or mistyped field, a value out of range, n != 1, or a
// field strata does not implement.
ParsedRequest ParseRequest(std::string_view body, ApiKind kind);

}  // namespace strata::serve
