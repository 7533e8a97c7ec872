// Chat formats against what transformers' apply_chat_template renders for the
// real templates (expected strings generated with add_generation_prompt=True),
// template recognition, and a chat session over a fake model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

TEST(Chat, DetectsTheFourFormats) {
  EXPECT_EQ(DetectChatFormat(kChatML), ChatFormat::kChatML);
  EXPECT_EQ(DetectChatFormat(kQwen2), ChatFormat::kChatML);
  EXPECT_EQ(DetectChatFormat(kMistralV01), ChatFormat::kMistral);
  EXPECT_EQ(DetectChatFormat(kMixtral), ChatFormat::kMistral);
  EXPECT_EQ(DetectChatFormat(kLlama2), ChatFormat::kLlama2);
  EXPECT_EQ(DetectChatFormat(kLlama3), ChatFormat::kLlama3);
  EXPECT_EQ(DetectChatFormat("{{ messages | tojson }}"), std::nullopt);
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
  // Mistral's template has no system role; strata folds it into the first turn.
  EXPECT_THAT(Render(kMixtral, true), HasSubstr("<s>[INST] You are a helpful assistant\n\nHello [/INST]"));
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
  EXPECT_EQ(ResolveChatTemplate("llama3", "", "", "").format, ChatFormat::kLlama3);
  EXPECT_EQ(ResolveChatTemplate("chatml", kLlama2, "", "").format, ChatFormat::kChatML);  // the flag wins
  try {
    ResolveChatTemplate("", "{{ messages | tojson }}", "", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("not one strata recognises"));
    EXPECT_THAT(e.what(), HasSubstr("--chat-template"));
  }
  EXPECT_THROW(ResolveChatTemplate("", "", "", ""), Error);
  EXPECT_THROW(ResolveChatTemplate("vicuna", kLlama2, "", ""), Error);
  ChatTemplate t = ResolveChatTemplate("llama2", "", "<s>", "</s>");
  EXPECT_THROW(FormatChat(t, {{"assistant", "hi"}}), Error);
  EXPECT_THROW(FormatChat(t, {{"user", "a"}, {"user", "b"}}), Error);
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
