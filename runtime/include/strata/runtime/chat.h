// Chat prompts through the Jinja engine (strata/runtime/jinja.h): the model's
// own chat_template from tokenizer_config.json, a .jinja file, or one of four
// built-in templates (llama2, mistral, chatml, llama3), rendered as HF
// transformers' apply_chat_template renders them.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/runtime/jinja.h"
#include "strata/runtime/tokenizer.h"

namespace strata {

struct ChatMessage {
  std::string role;  // system | user | assistant (| tool, ... as the template allows)
  std::string content;
};

struct ChatTemplate {
  std::string name;     // "llama2" ... for a built-in, the file for a .jinja, "the model's chat_template"
  std::string source;   // the Jinja text
  std::string bos, eos;  // the tokenizer's BOS/EOS text: the templates' bos_token and eos_token
  jinja::Template tmpl;  // `source`, parsed
};

// The names of the built-in templates: "llama2, mistral, chatml, llama3".
std::string BuiltinChatTemplateNames();

// The chat template to use:
//  - `name` a built-in (llama2 | mistral | chatml | llama3): its Jinja source
//    (written to render what strata's hand-written formats rendered: Mistral
//    folds a system message into the first user turn; ChatML adds Qwen2's
//    default system turn and Mistral v0.1 its space after EOS when
//    `chat_template` shows the model wants them);
//  - `name` any other non-empty string: a path to a .jinja file;
//  - `name` empty: `chat_template` (the model's).
// Throws Error saying what to do when the name is unknown, the file cannot be
// read, there is no template, or the template does not parse.
ChatTemplate ResolveChatTemplate(const std::string& name, const std::string& chat_template, const std::string& bos,
                                 const std::string& eos);

// The variables apply_chat_template passes: messages, tools and documents
// (None when absent, as transformers passes them), add_generation_prompt,
// bos_token, eos_token, then each member of `extra` (an object or null; it may
// override bos_token/eos_token/documents, never messages/tools/
// add_generation_prompt: Error).
nlohmann::ordered_json ChatContext(const ChatTemplate& t, const nlohmann::ordered_json& messages,
                                   bool add_generation_prompt, const nlohmann::ordered_json& tools,
                                   const nlohmann::ordered_json& extra);

// Renders the template over `messages` (a JSON array of message objects) with
// the context ChatContext builds. The result holds the special tokens as
// text: encode it with special tokens parsed and without adding BOS. Throws
// jinja::TemplateError when the template raises (roles out of order, a
// feature the model lacks) with the template's message.
std::string RenderChat(const ChatTemplate& t, const Json& messages, bool add_generation_prompt, const Json& tools,
                       const Json& extra);
// The same with members in their given order (tojson of tools prints keys as given).
std::string RenderChat(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                       const nlohmann::ordered_json& tools, const nlohmann::ordered_json& extra);

// The prompt for `messages` ending where the assistant's reply begins
// (add_generation_prompt=true, no tools). Throws jinja::TemplateError as RenderChat.
std::string FormatChat(const ChatTemplate& t, const std::vector<ChatMessage>& messages);

// The texts that end an assistant turn: the EOS text (when not empty), then
// each end-of-turn token that the template's source literally contains, from
// the list <|im_end|> <|eot_id|> <|eom_id|> <|end_of_turn|> <end_of_turn>
// <|end|> <|END_OF_TURN_TOKEN|> <｜end▁of▁sentence｜>. With `vocab`, only those
// the vocabulary has as a token.
std::vector<std::string> ChatStopTokens(const ChatTemplate& t, const Tokenizer* vocab = nullptr);

// A conversation: each turn formats the whole history with the template,
// encodes it, and streams the reply as it is generated, stopping at the
// template's end-of-turn tokens. The model stays behind `generate`, so the
// session works (and is tested) without one.
class ChatSession {
 public:
  // Runs the model on `prompt`, calling `on_token` with each new token until
  // it returns false or generation ends.
  using GenerateFn = std::function<void(const std::vector<int>& prompt, const std::function<bool(int)>& on_token)>;
  // Throws Error when the template ends turns with end-of-turn tokens
  // (ChatStopTokens) of which none is in the vocabulary.
  ChatSession(const Tokenizer& tok, ChatTemplate t, const std::string& system);
  // Adds the user turn, generates the reply (its text goes to `emit` piece by
  // piece as tokens arrive) and returns the reply, now part of the history.
  std::string Turn(const std::string& user, const GenerateFn& generate, const std::function<void(std::string_view)>& emit);
  // The token ids the next turn's prompt would start with (for tests).
  std::vector<int> EncodeHistory() const;
  const std::vector<ChatMessage>& messages() const { return messages_; }

 private:
  const Tokenizer& tok_;
  ChatTemplate t_;
  std::vector<ChatMessage> messages_;
  std::vector<int> stop_ids_;
};

}  // namespace strata
