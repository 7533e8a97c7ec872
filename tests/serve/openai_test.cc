// ParseRequest against the OpenAI API's documented meaning of each field (types,
// ranges, defaults, prompt and message forms, refused fields) and the shape of
// ApiError::Body(). Expected strings and numbers are written out literally.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "strata/serve/openai.h"

namespace strata::serve {
namespace {

using ::testing::HasSubstr;

// A minimal valid body of each kind, plus `extra` fields ("k":v,...).
std::string Comp(const std::string& extra = "") {
  return R"({"model":"m","prompt":"hi")" + (extra.empty() ? "" : "," + extra) + "}";
}
std::string Chat(const std::string& extra = "") {
  return R"({"model":"m","messages":[{"role":"user","content":"hi"}])" + (extra.empty() ? "" : "," + extra) + "}";
}

// The error ParseRequest throws; a failure (and an empty error) when it accepts.
ApiError ErrorOf(const std::string& body, ApiKind kind) {
  try {
    ParseRequest(body, kind);
  } catch (const ApiError& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-ApiError for " << body << ": " << e.what();
    return ApiError(0, "");
  }
  ADD_FAILURE() << "accepted " << body;
  return ApiError(0, "");
}

// Expects a 400 naming `param` with `what` in its message.
void ExpectBad(const std::string& body, ApiKind kind, const std::string& param, const std::string& what) {
  SCOPED_TRACE(body);
  const ApiError e = ErrorOf(body, kind);
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, param);
  EXPECT_THAT(e.message, HasSubstr(what));
  EXPECT_THAT(e.message, HasSubstr(param));
}

ParsedRequest Ok(const std::string& body, ApiKind kind) {
  try {
    return ParseRequest(body, kind);
  } catch (const ApiError& e) {
    ADD_FAILURE() << "refused " << body << ": " << e.message << " (param " << e.param << ")";
    return {};
  }
}

struct TypeCase {
  ApiKind kind;
  std::string body, param, what;
};

TEST(ParseRequest, WrongTypesNameTheFieldAndSayExpectedAndGot) {
  const ApiKind C = ApiKind::kCompletions, H = ApiKind::kChat;
  const TypeCase cases[] = {
      {C, R"({"model":5,"prompt":"hi"})", "model", "expected a string, got an integer"},
      {H, R"({"model":["m"],"messages":[{"role":"user","content":"hi"}]})", "model", "expected a string, got an array"},
      {C, Comp(R"("temperature":"hot")"), "temperature", "expected a number, got a string"},
      {H, Chat(R"("top_p":true)"), "top_p", "expected a number, got a boolean"},
      {C, Comp(R"("max_tokens":1.5)"), "max_tokens", "expected an integer, got a number"},
      {C, Comp(R"("max_tokens":"10")"), "max_tokens", "expected an integer, got a string"},
      {H, Chat(R"("max_completion_tokens":[])"), "max_completion_tokens", "expected an integer, got an array"},
      {C, Comp(R"("n":{})"), "n", "expected an integer, got an object"},
      {C, Comp(R"("seed":"1")"), "seed", "expected an integer, got a string"},
      {C, Comp(R"("seed":0.5)"), "seed", "expected an integer, got a number"},
      {C, Comp(R"("top_k":2.5)"), "top_k", "expected an integer, got a number"},
      {C, Comp(R"("repetition_penalty":"x")"), "repetition_penalty", "expected a number, got a string"},
      {H, Chat(R"("stream":"true")"), "stream", "expected a boolean, got a string"},
      {H, Chat(R"("stream":true,"stream_options":1)"), "stream_options", "expected an object, got an integer"},
      {H, Chat(R"("stream":true,"stream_options":{"include_usage":1})"), "stream_options.include_usage",
       "expected a boolean, got an integer"},
      {C, Comp(R"("stop":5)"), "stop", "expected a string or a list of strings, got an integer"},
      {C, Comp(R"("stop":["a",null])"), "stop", "expected a string or a list of strings, got null"},
      {C, Comp(R"("stop":{"a":1})"), "stop", "expected a string or a list of strings, got an object"},
      {H, Chat(R"("logprobs":1)"), "logprobs", "expected a boolean, got an integer"},
      {C, Comp(R"("logprobs":true)"), "logprobs", "expected an integer, got a boolean"},
      {H, Chat(R"("logprobs":true,"top_logprobs":"3")"), "top_logprobs", "expected an integer, got a string"},
      {C, Comp(R"("presence_penalty":"0")"), "presence_penalty", "expected a number, got a string"},
      {C, Comp(R"("frequency_penalty":[0])"), "frequency_penalty", "expected a number, got an array"},
      {C, Comp(R"("logit_bias":[])"), "logit_bias", "expected an object, got an array"},
      {C, Comp(R"("echo":"yes")"), "echo", "expected a boolean, got a string"},
      {C, Comp(R"("ignore_eos":1)"), "ignore_eos", "expected a boolean, got an integer"},
      {H, Chat(R"("response_format":"text")"), "response_format", "expected an object, got a string"},
      {H, Chat(R"("tools":{"type":"function"})"), "tools", "expected an array, got an object"},
      {H, R"({"model":"m","messages":"hi"})", "messages", "expected an array of messages, got a string"},
      {H, R"({"model":"m","messages":[5]})", "messages[0]", "expected an object, got an integer"},
      {H, R"({"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":5}]})",
       "messages[1].content", "expected a string, null or a list of content parts, got an integer"},
      {H, R"({"model":"m","messages":[{"role":"user","content":[true]}]})", "messages[0].content[0]",
       "expected a content part object, got a boolean"},
      {C, R"({"model":"m","prompt":5})", "prompt", "expected a string, a list of strings, or token ids, got an integer"},
      {C, R"({"model":"m","prompt":{"text":"hi"}})", "prompt", "got an object"},
      {C, R"({"model":"m","prompt":["a",5]})", "prompt[1]", "expected a string or a list of token ids, got an integer"},
      {C, R"({"model":"m","prompt":[1,1.5]})", "prompt", "expected a token id (integer), got a number"},
      {C, R"({"model":"m","prompt":[[1],[2,"x"]]})", "prompt[1]", "expected a token id (integer), got a string"},
  };
  for (const TypeCase& c : cases) ExpectBad(c.body, c.kind, c.param, c.what);
}

TEST(ParseRequest, RequiredFields) {
  ExpectBad(R"({"prompt":"hi"})", ApiKind::kCompletions, "model", "is required");
  ExpectBad(R"({"model":null,"prompt":"hi"})", ApiKind::kCompletions, "model", "is required");
  ExpectBad(R"({"model":"m"})", ApiKind::kCompletions, "prompt", "is required");
  ExpectBad(R"({"model":"m","prompt":null})", ApiKind::kCompletions, "prompt", "is required");
  ExpectBad(R"({"model":"m"})", ApiKind::kChat, "messages", "is required");
  // A chat body's prompt is not its messages, nor a completions body's messages its prompt.
  ExpectBad(R"({"model":"m","prompt":"hi"})", ApiKind::kChat, "messages", "is required");
  ExpectBad(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})", ApiKind::kCompletions, "prompt", "is required");
}

TEST(ParseRequest, Defaults) {
  for (const std::string& body : {Comp(), Chat()}) {
    SCOPED_TRACE(body);
    const ApiKind kind = body == Comp() ? ApiKind::kCompletions : ApiKind::kChat;
    const ParsedRequest r = Ok(body, kind);
    EXPECT_EQ(r.kind, kind);
    EXPECT_EQ(r.model, "m");
    EXPECT_EQ(r.sampler.temperature, 1.0);  // OpenAI's default, not greedy
    EXPECT_EQ(r.sampler.top_p, 1.0);
    EXPECT_EQ(r.sampler.top_k, 0);
    EXPECT_EQ(r.sampler.repetition_penalty, 1.0);
    EXPECT_EQ(r.logprobs, -1);
    EXPECT_FALSE(r.max_tokens.has_value());
    EXPECT_FALSE(r.seed_given);
    EXPECT_TRUE(r.stop.empty());
    EXPECT_FALSE(r.stream);
    EXPECT_FALSE(r.include_usage);
    EXPECT_FALSE(r.ignore_eos);
    EXPECT_FALSE(r.echo);
    EXPECT_EQ(r.prompts(), 1);
  }
  EXPECT_TRUE(Ok(Chat(), ApiKind::kChat).tools.is_null());
  // null is the same as absent.
  const ParsedRequest r = Ok(Comp(R"("temperature":null,"top_p":null,"max_tokens":null,"stop":null,"n":null)"),
                             ApiKind::kCompletions);
  EXPECT_EQ(r.sampler.temperature, 1.0);
  EXPECT_EQ(r.sampler.top_p, 1.0);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_TRUE(r.stop.empty());
}

TEST(ParseRequest, ValuesAreTakenAsSent) {
  const ParsedRequest r =
      Ok(Comp(R"("temperature":0,"top_p":0.5,"top_k":40,"repetition_penalty":1.1,"seed":42,"max_tokens":7,)"
              R"("logprobs":5,"stream":true,"stream_options":{"include_usage":true},"ignore_eos":true,"n":1,)"
              R"("presence_penalty":0,"frequency_penalty":0.0,"logit_bias":{},"echo":false,"user":"u","metadata":{"k":"v"})"),
         ApiKind::kCompletions);
  EXPECT_EQ(r.sampler.temperature, 0.0);
  EXPECT_EQ(r.sampler.top_p, 0.5);
  EXPECT_EQ(r.sampler.top_k, 40);
  EXPECT_EQ(r.sampler.repetition_penalty, 1.1);
  EXPECT_EQ(r.sampler.seed, 42u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.logprobs, 5);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.ignore_eos);
}

TEST(ParseRequest, SeedTakesTheWholeInt64Range) {
  EXPECT_EQ(Ok(Comp(R"("seed":-1)"), ApiKind::kCompletions).sampler.seed, 18446744073709551615u);
  EXPECT_EQ(Ok(Comp(R"("seed":9223372036854775807)"), ApiKind::kCompletions).sampler.seed, 9223372036854775807u);
  EXPECT_EQ(Ok(Comp(R"("seed":3.0)"), ApiKind::kCompletions).sampler.seed, 3u);
  ExpectBad(Comp(R"("seed":9223372036854775808)"), ApiKind::kCompletions, "seed", "out of range");
}

TEST(ParseRequest, Ranges) {
  const ApiKind C = ApiKind::kCompletions, H = ApiKind::kChat;
  EXPECT_EQ(Ok(Comp(R"("temperature":2)"), C).sampler.temperature, 2.0);
  EXPECT_EQ(Ok(Comp(R"("temperature":0.0)"), C).sampler.temperature, 0.0);
  ExpectBad(Comp(R"("temperature":2.01)"), C, "temperature", "between 0 and 2");
  ExpectBad(Comp(R"("temperature":-0.5)"), C, "temperature", "between 0 and 2");
  EXPECT_EQ(ErrorOf(Comp(R"("temperature":1e400)"), C).status, 400);  // nlohmann: number overflow

  EXPECT_EQ(Ok(Comp(R"("top_p":1)"), C).sampler.top_p, 1.0);
  EXPECT_EQ(Ok(Comp(R"("top_p":0.001)"), C).sampler.top_p, 0.001);
  ExpectBad(Comp(R"("top_p":0)"), C, "top_p", "(0, 1]");
  ExpectBad(Comp(R"("top_p":1.0001)"), C, "top_p", "(0, 1]");
  ExpectBad(Comp(R"("top_p":-1)"), C, "top_p", "(0, 1]");

  EXPECT_EQ(Ok(Chat(R"("logprobs":true,"top_logprobs":20)"), H).logprobs, 20);
  EXPECT_EQ(Ok(Chat(R"("logprobs":true,"top_logprobs":0)"), H).logprobs, 0);
  EXPECT_EQ(Ok(Chat(R"("logprobs":true)"), H).logprobs, 0);
  EXPECT_EQ(Ok(Chat(R"("logprobs":false)"), H).logprobs, -1);
  ExpectBad(Chat(R"("logprobs":true,"top_logprobs":21)"), H, "top_logprobs", "between 0 and 20, got 21");
  ExpectBad(Chat(R"("logprobs":true,"top_logprobs":-1)"), H, "top_logprobs", "between 0 and 20, got -1");
  ExpectBad(Chat(R"("top_logprobs":2)"), H, "top_logprobs", "logprobs");
  EXPECT_EQ(Ok(Comp(R"("logprobs":0)"), C).logprobs, 0);
  EXPECT_EQ(Ok(Comp(R"("logprobs":20)"), C).logprobs, 20);
  ExpectBad(Comp(R"("logprobs":21)"), C, "logprobs", "between 0 and 20, got 21");

  EXPECT_EQ(Ok(Comp(R"("max_tokens":1)"), C).max_tokens, 1);
  EXPECT_EQ(Ok(Comp(R"("max_tokens":16.0)"), C).max_tokens, 16);
  ExpectBad(Comp(R"("max_tokens":0)"), C, "max_tokens", "got 0");
  ExpectBad(Comp(R"("max_tokens":-3)"), C, "max_tokens", "got -3");
  ExpectBad(Comp(R"("max_tokens":18446744073709551615)"), C, "max_tokens", "out of range");
  ExpectBad(Chat(R"("max_completion_tokens":0)"), H, "max_completion_tokens", "got 0");

  ExpectBad(Comp(R"("top_k":-1)"), C, "top_k", "got -1");
  ExpectBad(Comp(R"("repetition_penalty":0)"), C, "repetition_penalty", "greater than 0");
}

TEST(ParseRequest, OnlyOneChoice) {
  EXPECT_EQ(Ok(Comp(R"("n":1)"), ApiKind::kCompletions).prompts(), 1);
  ExpectBad(Comp(R"("n":2)"), ApiKind::kCompletions, "n", "only n = 1");
  ExpectBad(Chat(R"("n":4)"), ApiKind::kChat, "n", "only n = 1");
  ExpectBad(Chat(R"("n":0)"), ApiKind::kChat, "n", "got 0");
  ExpectBad(Comp(R"("best_of":3)"), ApiKind::kCompletions, "best_of", "best_of = 1");
}

TEST(ParseRequest, MaxTokensAndMaxCompletionTokens) {
  EXPECT_EQ(Ok(Chat(R"("max_tokens":10,"max_completion_tokens":10)"), ApiKind::kChat).max_tokens, 10);
  EXPECT_EQ(Ok(Chat(R"("max_completion_tokens":7)"), ApiKind::kChat).max_tokens, 7);
  EXPECT_EQ(Ok(Chat(R"("max_tokens":9)"), ApiKind::kChat).max_tokens, 9);
  ExpectBad(Chat(R"("max_tokens":10,"max_completion_tokens":11)"), ApiKind::kChat, "max_completion_tokens", "differs");
}

TEST(ParseRequest, Stop) {
  const ApiKind C = ApiKind::kCompletions;
  EXPECT_EQ(Ok(Comp(R"("stop":"END")"), C).stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(Ok(Comp(R"("stop":["a","\n\n"])"), C).stop, (std::vector<std::string>{"a", "\n\n"}));
  EXPECT_TRUE(Ok(Comp(R"("stop":[])"), C).stop.empty());
  ExpectBad(Comp(R"("stop":"")"), C, "stop", "empty stop sequence");
  ExpectBad(Comp(R"("stop":["a",""])"), C, "stop", "empty stop sequence");
  ExpectBad(Comp(R"("stop":")" + std::string(1025, 'x') + "\""), C, "stop", "longer than 1024");
  EXPECT_EQ(Ok(Comp(R"("stop":")" + std::string(1024, 'x') + "\""), C).stop.size(), 1u);
  std::string many = "[";
  for (int i = 0; i < 17; ++i) many += std::string(i ? "," : "") + "\"s" + std::to_string(i) + "\"";
  ExpectBad(Comp("\"stop\":" + many + "]"), C, "stop", "at most 16");
}

TEST(ParseRequest, StreamOptionsNeedStream) {
  const ApiKind H = ApiKind::kChat;
  ExpectBad(Chat(R"("stream_options":{"include_usage":true})"), H, "stream_options", "\"stream\": true");
  ExpectBad(Chat(R"("stream":false,"stream_options":{"include_usage":true})"), H, "stream_options", "\"stream\": true");
  EXPECT_TRUE(Ok(Chat(R"("stream":true,"stream_options":{"include_usage":true})"), H).include_usage);
  EXPECT_FALSE(Ok(Chat(R"("stream":true,"stream_options":{})"), H).include_usage);
  EXPECT_FALSE(Ok(Chat(R"("stream_options":null)"), H).include_usage);
}

TEST(ParseRequest, PromptForms) {
  const ApiKind C = ApiKind::kCompletions;
  ParsedRequest r = Ok(R"({"model":"m","prompt":"Once upon"})", C);
  EXPECT_EQ(r.prompt_texts, (std::vector<std::string>{"Once upon"}));
  EXPECT_TRUE(r.prompt_ids.empty());

  r = Ok(R"({"model":"m","prompt":["a","b","c"]})", C);
  EXPECT_EQ(r.prompt_texts, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(r.prompts(), 3);

  r = Ok(R"({"model":"m","prompt":[1,2,2147483647]})", C);
  EXPECT_TRUE(r.prompt_texts.empty());
  EXPECT_EQ(r.prompt_ids, (std::vector<std::vector<int>>{{1, 2, 2147483647}}));
  EXPECT_EQ(r.prompts(), 1);

  r = Ok(R"({"model":"m","prompt":[[5,6],[7]]})", C);
  EXPECT_EQ(r.prompt_ids, (std::vector<std::vector<int>>{{5, 6}, {7}}));
  EXPECT_EQ(r.prompts(), 2);

  ExpectBad(R"({"model":"m","prompt":["a",[1]]})", C, "prompt[1]", "mixes strings and token lists");
  ExpectBad(R"({"model":"m","prompt":[[1],"a"]})", C, "prompt[1]", "mixes strings and token lists");
  ExpectBad(R"({"model":"m","prompt":[1,"a"]})", C, "prompt", "got a string");
  ExpectBad(R"({"model":"m","prompt":[]})", C, "prompt", "empty list");
  ExpectBad(R"({"model":"m","prompt":[[]]})", C, "prompt[0]", "empty list of token ids");
  ExpectBad(R"({"model":"m","prompt":[[1],[]]})", C, "prompt[1]", "empty list of token ids");
  ExpectBad(R"({"model":"m","prompt":[-1]})", C, "prompt", "token id -1 is out of range");
  ExpectBad(R"({"model":"m","prompt":[2147483648]})", C, "prompt", "out of range");
  ExpectBad(R"({"model":"m","prompt":[[18446744073709551615]]})", C, "prompt[0]", "out of range");
  std::string many = "[";
  for (int i = 0; i < 65; ++i) many += std::string(i ? "," : "") + "\"p\"";
  ExpectBad(R"({"model":"m","prompt":)" + many + "]}", C, "prompt", "at most 64");
}

TEST(ParseRequest, ChatMessages) {
  const ApiKind H = ApiKind::kChat;
  ExpectBad(R"({"model":"m","messages":[]})", H, "messages", "at least one message");
  ExpectBad(R"({"model":"m","messages":[{"content":"hi"}]})", H, "messages[0].role", "is required");
  ExpectBad(R"({"model":"m","messages":[{"role":"user","content":"a"},{"role":7,"content":"b"}]})", H,
            "messages[1].role", "must be a string");
  ExpectBad(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},)"
            R"({"type":"image_url","image_url":{"url":"http://x/y.png"}}]}]})",
            H, "messages[0].content[1].type", "only text content parts");
  ExpectBad(R"({"model":"m","messages":[{"role":"user","content":[{"text":"a"}]}]})", H, "messages[0].content[0].type",
            "only text content parts");
  ExpectBad(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]})", H,
            "messages[0].content[0].text", "is required");
  ExpectBad(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":3}]}]})", H,
            "messages[0].content[0].text", "must be a string");

  // Text parts become one string, in place (the key keeps its position).
  ParsedRequest r = Ok(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Hello, "},)"
                       R"({"type":"text","text":"world"}],"name":"ann"}]})",
                       H);
  EXPECT_EQ(r.messages.dump(), R"([{"role":"user","content":"Hello, world","name":"ann"}])");

  // null content (an assistant turn with tool_calls) and a missing content pass as sent.
  r = Ok(R"({"model":"m","messages":[{"role":"user","content":"q"},{"role":"assistant","content":null,)"
         R"("tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},)"
         R"({"role":"tool","tool_call_id":"c1","content":"42"},{"role":"assistant"}]})",
         H);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_TRUE(r.messages[1]["content"].is_null());
  EXPECT_EQ(r.messages[1]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_FALSE(r.messages[3].contains("content"));
}

TEST(ParseRequest, KeyOrderOfMessagesAndToolsIsKept) {
  // A chat template's tojson prints these as the client sent them.
  const ParsedRequest r =
      Ok(R"({"model":"m","messages":[{"role":"system","content":"s","zeta":1,"alpha":{"y":2,"b":3}}],)"
         R"("tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",)"
         R"("properties":{"zip":{"type":"string"},"city":{"type":"string"}},"required":["city"]}}}]})",
         ApiKind::kChat);
  EXPECT_EQ(r.messages.dump(), R"([{"role":"system","content":"s","zeta":1,"alpha":{"y":2,"b":3}}])");
  EXPECT_EQ(r.tools.dump(),
            R"([{"type":"function","function":{"name":"get_weather","parameters":{"type":"object",)"
            R"("properties":{"zip":{"type":"string"},"city":{"type":"string"}},"required":["city"]}}}])");
}

TEST(ParseRequest, UnsupportedFieldsAreRefusedNotIgnored) {
  const ApiKind C = ApiKind::kCompletions, H = ApiKind::kChat;
  ExpectBad(Chat(R"("presence_penalty":0.5)"), H, "presence_penalty", "not supported");
  ExpectBad(Comp(R"("frequency_penalty":-1)"), C, "frequency_penalty", "not supported");
  ExpectBad(Comp(R"("logit_bias":{"50256":-100})"), C, "logit_bias", "not supported");
  ExpectBad(Comp(R"("echo":true)"), C, "echo", "not supported");
  ExpectBad(Comp(R"("suffix":"}")"), C, "suffix", "not supported");
  ExpectBad(Chat(R"("response_format":{"type":"json_object"})"), H, "response_format", "only");
  EXPECT_EQ(Ok(Chat(R"("response_format":{"type":"text"})"), H).model, "m");
  EXPECT_EQ(Ok(Comp(R"("suffix":null,"echo":false,"logit_bias":null)"), C).model, "m");
}

TEST(ParseRequest, MalformedAndNonObjectBodies) {
  for (const char* body : {"", "{", R"({"model":"m",})", R"({"model":"m" "prompt":"x"})", "{'model':'m'}",
                           "{\"model\":\"\xff\"}", R"({"model":"m"} x)"}) {
    SCOPED_TRACE(body);
    const ApiError e = ErrorOf(body, ApiKind::kChat);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_THAT(e.message, HasSubstr("not valid JSON"));
    EXPECT_EQ(e.param, "");
    EXPECT_TRUE(OJson::accept(e.Body())) << e.Body();
  }
  const std::pair<const char*, const char*> kinds[] = {
      {"[1]", "got an array"}, {"\"s\"", "got a string"}, {"null", "got null"}, {"5", "got an integer"},
      {"true", "got a boolean"}, {"2.5", "got a number"}};
  for (const auto& [body, got] : kinds) {
    SCOPED_TRACE(body);
    const ApiError e = ErrorOf(body, ApiKind::kCompletions);
    EXPECT_EQ(e.status, 400);
    EXPECT_THAT(e.message, HasSubstr(std::string("must be a JSON object, ") + got));
  }
}

TEST(ParseRequest, DeepNestingIsRefusedNotACrash) {
  // Copying, dumping and destroying a value recurse once per level: a body
  // within --max-body may nest a million deep.
  const int depth = 1'000'000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  const ApiError e = ErrorOf(R"({"model":"m","messages":[{"role":"user","content":"x","extra":)" + deep + "}]}",
                             ApiKind::kChat);
  EXPECT_EQ(e.status, 400);
  EXPECT_THAT(e.message, HasSubstr("nest"));
  // Brackets inside strings are text, not nesting.
  const std::string text(5000, '[');
  EXPECT_EQ(Ok(R"({"model":"m","prompt":")" + text + "\"}", ApiKind::kCompletions).prompt_texts[0], text);
  // Moderate nesting (a tool's JSON schema) passes.
  const std::string ok = std::string(100, '[') + std::string(100, ']');
  EXPECT_EQ(Ok(R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[)" + ok + "]}", ApiKind::kChat)
                .tools.size(),
            1u);
}

TEST(ApiErrorBody, Shape) {
  EXPECT_EQ(ApiError(400, "'temperature': must be between 0 and 2", "invalid_request_error", "temperature").Body(),
            R"({"error":{"message":"'temperature': must be between 0 and 2","type":"invalid_request_error",)"
            R"("param":"temperature","code":null}})");
  EXPECT_EQ(ApiError(404, "no such model", "invalid_request_error", "model", "model_not_found").Body(),
            R"({"error":{"message":"no such model","type":"invalid_request_error","param":"model",)"
            R"("code":"model_not_found"}})");
  EXPECT_EQ(ApiError(503, "loading", "unavailable_error").Body(),
            R"({"error":{"message":"loading","type":"unavailable_error","param":null,"code":null}})");
  EXPECT_EQ(ApiError(500, "say \"hi\"\n").Body(),
            R"({"error":{"message":"say \"hi\"\n","type":"invalid_request_error","param":null,"code":null}})");
}

TEST(ApiErrorBody, InvalidUtf8InTheMessageStillGivesJson) {
  // Messages can quote what the client sent (a parse error's "last read").
  const std::string body = ApiError(400, "bad \xff\xfe byte").Body();
  const OJson j = OJson::parse(body);
  EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr("bad "));
  EXPECT_TRUE(j["error"]["param"].is_null());
}

TEST(ApiErrorBody, OfWhatParseRequestThrows) {
  const ApiError e = ErrorOf(Comp(R"("temperature":"hot")"), ApiKind::kCompletions);
  const OJson j = OJson::parse(e.Body());
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_EQ(j["error"]["message"], "'temperature': expected a number, got a string");
}

}  // namespace
}  // namespace strata::serve
