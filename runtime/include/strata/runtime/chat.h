// Chat prompts without a template engine: the four formats strata implements
// directly (Llama 2, Mistral [INST], ChatML, Llama 3), recognised from a
// tokenizer_config.json chat_template by markers only they contain.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/runtime/tokenizer.h"

namespace strata {

enum class ChatFormat { kLlama2, kMistral, kChatML, kLlama3 };

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct ChatTemplate {
  ChatFormat format = ChatFormat::kChatML;
  std::string bos, eos;        // the tokenizer's BOS/EOS text, as the templates use them
  std::string default_system;  // ChatML as Qwen2 ships it: the system turn when there is none
  bool space_after_eos = false;  // Mistral v0.1 puts " " after each assistant turn's EOS
};

// "llama2", "mistral", "chatml", "llama3".
std::string_view ChatFormatName(ChatFormat f);
std::optional<ChatFormat> ChatFormatFromName(std::string_view name);
// The format a Jinja chat_template implements, from its distinctive
// substrings; nullopt when none matches.
std::optional<ChatFormat> DetectChatFormat(std::string_view chat_template);

// `name` (from --chat-template) when given, else the format detected in
// `chat_template`. Throws Error saying what is known and how to choose one
// when the name is unknown, or the template is missing or not recognised.
ChatTemplate ResolveChatTemplate(const std::string& name, const std::string& chat_template, const std::string& bos,
                                 const std::string& eos);

// The prompt for `messages` (system first, if any, then user/assistant turns
// alternating from user) ending where the assistant's reply begins, exactly
// as the model's Jinja template renders it with add_generation_prompt. It
// contains the special tokens as text: encode it with special tokens parsed
// and without adding BOS. Throws Error for turns out of order.
std::string FormatChat(const ChatTemplate& t, const std::vector<ChatMessage>& messages);

// The texts of the tokens that end an assistant turn in this format.
std::vector<std::string> ChatStopTokens(const ChatTemplate& t);

// A conversation: each turn formats the whole history with the template,
// encodes it, and streams the reply as it is generated, stopping at the
// format's end-of-turn tokens. The model stays behind `generate`, so the
// session works (and is tested) without one.
class ChatSession {
 public:
  // Runs the model on `prompt`, calling `on_token` with each new token until
  // it returns false or generation ends.
  using GenerateFn = std::function<void(const std::vector<int>& prompt, const std::function<bool(int)>& on_token)>;
  // Throws Error when an end-of-turn token of the format is not in the vocabulary.
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
