// Chat templates against what transformers' apply_chat_template renders for the
// real templates (expected strings generated with add_generation_prompt=True),
// the built-in templates, choosing one, stop tokens, and a chat session over a
// fake model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "strata/formats/error.h"
#include "strata/formats/gguf.h"
#include "strata/runtime/chat.h"
#include "strata/runtime/tokenizer.h"
#include "tokenizer_test_util.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

// The chat_template values of the models' tokenizer_config.json.
const char* kChatML =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const char* kMistralV01 =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";
const char* kMixtral =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";
const char* kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
const char* kQwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}";

std::vector<ChatMessage> Conversation(bool with_system) {
  std::vector<ChatMessage> m = {{"user", "Hello"},
                                {"assistant", "Hi there"},
                                {"user", "Who are you"},
                                {"assistant", "   I am an assistant   "},
                                {"user", "Another question"}};
  if (with_system) m.insert(m.begin(), {"system", "You are a helpful assistant"});
  return m;
}

std::string Render(const char* tmpl, bool with_system, const std::string& bos = "<s>", const std::string& eos = "</s>") {
  return FormatChat(ResolveChatTemplate("", tmpl, bos, eos), Conversation(with_system));
}

TEST(Chat, TheModelsTemplateIsUsedAsItIs) {
  ChatTemplate t = ResolveChatTemplate("", kChatML, "<s>", "</s>");
  EXPECT_EQ(t.name, "the model's chat_template");
  EXPECT_EQ(t.source, kChatML);
  // Any template the engine renders, not only the four of the old formats.
  ChatTemplate j = ResolveChatTemplate("", "{{ messages | tojson }}", "", "");
  EXPECT_EQ(FormatChat(j, {{"user", "Hi"}}), "[{\"role\": \"user\", \"content\": \"Hi\"}]");
}

TEST(Chat, ChatMLAsTransformersRendersIt) {
  EXPECT_EQ(Render(kChatML, true),
            "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n"
            "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(Chat, Qwen2AddsItsDefaultSystemTurn) {
  std::string out = FormatChat(ResolveChatTemplate("", kQwen2, "", "<|endoftext|>"), {{"user", "Hi"}});
  EXPECT_EQ(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                 "<|im_start|>assistant\n");
}

TEST(Chat, MistralAsTransformersRendersIt) {
  EXPECT_EQ(Render(kMistralV01, false),
            "<s>[INST] Hello [/INST]Hi there</s> [INST] Who are you [/INST]   I am an assistant   </s> [INST] "
            "Another question [/INST]");
  EXPECT_EQ(Render(kMixtral, false),
            "<s>[INST] Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another "
            "question [/INST]");
  // Mistral's template has no system role: it raises, as it does in transformers.
  try {
    Render(kMixtral, true);
    FAIL();
  } catch (const jinja::TemplateError& e) {
    EXPECT_STREQ(e.what(), "Conversation roles must alternate user/assistant/user/assistant/...");
  }
  // The built-in mistral template folds it into the first turn.
  EXPECT_THAT(FormatChat(ResolveChatTemplate("mistral", "", "<s>", "</s>"), Conversation(true)),
              HasSubstr("<s>[INST] You are a helpful assistant\n\nHello [/INST]"));
}

// The built-in templates render what the models' own templates render.
TEST(Chat, BuiltinsRenderAsTheReferenceTemplates) {
  auto builtin = [](const char* name, const char* model, bool sys, const std::string& bos = "<s>",
                    const std::string& eos = "</s>") {
    return FormatChat(ResolveChatTemplate(name, model, bos, eos), Conversation(sys));
  };
  EXPECT_EQ(builtin("chatml", "", true), Render(kChatML, true));
  EXPECT_EQ(builtin("chatml", kQwen2, false), Render(kQwen2, false));
  EXPECT_EQ(builtin("mistral", kMistralV01, false), Render(kMistralV01, false));
  EXPECT_EQ(builtin("mistral", kMixtral, false), Render(kMixtral, false));
  EXPECT_EQ(builtin("mistral", "", false), Render(kMixtral, false));
  EXPECT_EQ(builtin("llama2", "", true), Render(kLlama2, true));
  EXPECT_EQ(builtin("llama2", "", false), Render(kLlama2, false));
  EXPECT_EQ(builtin("llama3", "", true, "<|begin_of_text|>", "<|end_of_text|>"),
            Render(kLlama3, true, "<|begin_of_text|>", "<|end_of_text|>"));
  // Turns out of order raise with what to do.
  try {
    FormatChat(ResolveChatTemplate("llama3", "", "", ""), {{"user", "a"}, {"user", "b"}});
    FAIL();
  } catch (const jinja::TemplateError& e) {
    EXPECT_STREQ(e.what(), "the llama3 chat format needs one optional system message, then user and assistant turns "
                           "alternating from user; message 2 is \"user\"");
  }
}

TEST(Chat, RenderChatPassesToolsAndExtraVariables) {
  ChatTemplate t = ResolveChatTemplate(
      "", "{{ tools|tojson }}|{{ documents }}|{{ date }}|{{ add_generation_prompt }}|{{ bos_token }}{{ messages|length }}",
      "<s>", "</s>");
  nlohmann::ordered_json tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  nlohmann::ordered_json extra = {{"date", "today"}};
  EXPECT_EQ(RenderChat(t, nlohmann::ordered_json::array(), false, tools, extra),
            "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]|None|today|False|<s>0");
  // transformers passes tools=None when there are none.
  EXPECT_EQ(RenderChat(t, Json::array(), true, Json(), Json()), "null|None||True|<s>0");
  EXPECT_THROW(RenderChat(t, Json::array(), true, Json(), Json{{"messages", 1}}), Error);
  ChatTemplate raising = ResolveChatTemplate("", "{{ raise_exception('no tools here') }}", "", "");
  EXPECT_THROW(RenderChat(raising, Json::array(), true, Json(), Json()), jinja::TemplateError);
}

TEST(Chat, StopTokensAreEosAndTheTemplatesEndOfTurnTokens) {
  EXPECT_EQ(ChatStopTokens(ResolveChatTemplate("chatml", "", "", "<|endoftext|>")),
            (std::vector<std::string>{"<|endoftext|>", "<|im_end|>"}));
  EXPECT_EQ(ChatStopTokens(ResolveChatTemplate("llama3", "", "<|begin_of_text|>", "<|end_of_text|>")),
            (std::vector<std::string>{"<|end_of_text|>", "<|eot_id|>"}));
  EXPECT_EQ(ChatStopTokens(ResolveChatTemplate("llama2", "", "<s>", "</s>")), (std::vector<std::string>{"</s>"}));
  EXPECT_EQ(ChatStopTokens(ResolveChatTemplate("", "{{ '<start_of_turn>' }}x<end_of_turn>", "<bos>", "<eos>")),
            (std::vector<std::string>{"<eos>", "<end_of_turn>"}));
  EXPECT_EQ(ChatStopTokens(ResolveChatTemplate("", "<|im_end|>", "", "<|im_end|>")), (std::vector<std::string>{"<|im_end|>"}));
}

TEST(Chat, Llama2AsTransformersRendersIt) {
  EXPECT_EQ(Render(kLlama2, true),
            "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are "
            "you [/INST] I am an assistant </s><s>[INST] Another question [/INST]");
}

TEST(Chat, Llama3AsTheTemplateRendersIt) {
  EXPECT_EQ(Render(kLlama3, true, "<|begin_of_text|>", "<|end_of_text|>"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(Chat, ChoosingAndFailing) {
  EXPECT_EQ(ResolveChatTemplate("llama3", "", "", "").name, "llama3");
  EXPECT_EQ(ResolveChatTemplate("chatml", kLlama2, "", "").name, "chatml");  // the flag wins
  EXPECT_THAT(ResolveChatTemplate("chatml", kLlama2, "", "").source, HasSubstr("<|im_start|>"));
  try {
    ResolveChatTemplate("", "{% if %}", "", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("the chat template (the model's chat_template) cannot be used: line 1:"));
    EXPECT_THAT(e.what(), HasSubstr("--chat-template"));
  }
  try {
    ResolveChatTemplate("", "", "", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no chat template"));
    EXPECT_THAT(e.what(), HasSubstr("--chat-template (llama2, mistral, chatml, llama3 or FILE.jinja)"));
  }
  try {
    ResolveChatTemplate("vicuna", kLlama2, "", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("\"vicuna\" is neither a built-in chat template nor a file"));
  }
  EXPECT_THROW(ResolveChatTemplate("/nonexistent/t.jinja", "", "", ""), Error);
  ChatTemplate t = ResolveChatTemplate("llama2", "", "<s>", "</s>");
  EXPECT_THROW(FormatChat(t, {{"assistant", "hi"}}), Error);
  EXPECT_THROW(FormatChat(t, {{"user", "a"}, {"user", "b"}}), Error);
}

TEST(Chat, TemplateFromAFile) {
  std::string path = (std::filesystem::temp_directory_path() / "strata_chat_test_template.jinja").string();
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}", f);
    std::fclose(f);
  }
  ChatTemplate t = ResolveChatTemplate(path, kLlama2, "", "");
  std::filesystem::remove(path);
  EXPECT_EQ(t.name, path);
  EXPECT_EQ(FormatChat(t, {{"user", "Hi"}, {"assistant", "Yo"}}), "<user>Hi\n<assistant>Yo\n");
}

TEST(Chat, SessionStreamsAndStopsAtEndOfTurn) {
  STRATA_REQUIRE_VOCAB();
  HfTokenizerFiles h = GgufVocabToHf(GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-llama-spm.gguf"));
  TokenizerConfig cfg = ParseTokenizerConfig(h.tokenizer_config_json, "cfg");
  Tokenizer tok = Tokenizer::FromHfJson(h.tokenizer_json, cfg, "tok");
  ChatSession chat(tok, ResolveChatTemplate("", cfg.chat_template, "<s>", "</s>"), "Be brief");
  // "Hi there 👋" then </s> then tokens that must never be seen.
  std::vector<int> reply = tok.Encode("Hi there \U0001F44B");
  reply.push_back(2);
  reply.push_back(15043);
  std::vector<int> seen_prompt;
  auto fake_model = [&](const std::vector<int>& prompt, const std::function<bool(int)>& on_token) {
    seen_prompt = prompt;
    for (int id : reply)
      if (!on_token(id)) return;
  };
  std::string streamed;
  std::string text = chat.Turn("Hello", fake_model, [&](std::string_view s) { streamed += s; });
  EXPECT_EQ(text, "Hi there \U0001F44B");
  EXPECT_EQ(streamed, text);
  // The prompt is the template's text with <s> as the BOS token, not as characters.
  EXPECT_EQ(seen_prompt, tok.Encode("<s>[INST] <<SYS>>\nBe brief\n<</SYS>>\n\nHello [/INST]"));
  EXPECT_EQ(seen_prompt.front(), 1);
  ASSERT_EQ(chat.messages().size(), 3u);
  EXPECT_EQ(chat.messages()[2].content, text);
  // The next turn's prompt carries the whole history.
  chat.Turn("Thanks", fake_model, [](std::string_view) {});
  EXPECT_EQ(seen_prompt, tok.Encode("<s>[INST] <<SYS>>\nBe brief\n<</SYS>>\n\nHello [/INST] Hi there \U0001F44B </s>"
                                    "<s>[INST] Thanks [/INST]"));
}

TEST(Chat, FailedTurnLeavesHistoryUnchanged) {
  STRATA_REQUIRE_VOCAB();
  Tokenizer tok = Tokenizer::FromGguf(GgufFile::Read(testutil::VocabDir() + "/ggml-vocab-llama-spm.gguf"));
  ChatSession chat(tok, ResolveChatTemplate("mistral", "", "<s>", "</s>"), "");
  auto broken = [](const std::vector<int>&, const std::function<bool(int)>&) { throw Error("model failed"); };
  EXPECT_THROW(chat.Turn("Hello", broken, [](std::string_view) {}), Error);
  EXPECT_TRUE(chat.messages().empty());
  // ChatML needs <|im_end|>, which a Llama 2 vocabulary does not have.
  EXPECT_THROW(ChatSession(tok, ResolveChatTemplate("chatml", "", "<s>", "</s>"), ""), Error);
}

}  // namespace
}  // namespace strata
