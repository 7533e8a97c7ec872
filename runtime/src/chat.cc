// The four chat formats written out as the reference Jinja templates render
// them (meta-llama/Llama-2-7b-chat-hf, mistralai/Mistral-7B-Instruct-v0.1/v0.2,
// ChatML as Qwen2 and others ship it, meta-llama/Meta-Llama-3-8B-Instruct).
#include "strata/runtime/chat.h"

#include <algorithm>

#include "strata/formats/error.h"

namespace strata {

namespace {

// Python's str.strip() / Jinja's trim for the whitespace chat text contains.
std::string Strip(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

// Splits off a leading system message; checks user/assistant alternate.
std::vector<ChatMessage> Turns(const std::vector<ChatMessage>& messages, std::string* system, ChatFormat f) {
  std::vector<ChatMessage> turns(messages.begin(), messages.end());
  if (!turns.empty() && turns[0].role == "system") {
    *system = turns[0].content;
    turns.erase(turns.begin());
  }
  for (size_t i = 0; i < turns.size(); ++i) {
    const char* want = i % 2 == 0 ? "user" : "assistant";
    if (turns[i].role != want)
      throw Error(std::string("the ") + std::string(ChatFormatName(f)) + " chat format needs one optional system "
                  "message, then user and assistant turns alternating from user; message " + std::to_string(i + 1) +
                  " is \"" + turns[i].role + "\"");
  }
  return turns;
}

std::string Llama2(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  std::string system, out;
  bool has_system = !messages.empty() && messages[0].role == "system";
  auto turns = Turns(messages, &system, t.format);
  for (size_t i = 0; i < turns.size(); ++i) {
    std::string content = turns[i].content;
    if (i == 0 && has_system) content = std::string("<<SYS>>\n").append(system).append("\n<</SYS>>\n\n").append(content);
    if (turns[i].role == "user") out += t.bos + "[INST] " + Strip(content) + " [/INST]";
    else out.append(" ").append(Strip(content)).append(" ").append(t.eos);
  }
  return out;
}

// Mistral's template refuses system messages; strata folds one into the first
// user turn, as Mistral's later templates do.
std::string Mistral(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  std::string system, out = t.bos;
  bool has_system = !messages.empty() && messages[0].role == "system";
  auto turns = Turns(messages, &system, t.format);
  for (size_t i = 0; i < turns.size(); ++i) {
    std::string content = turns[i].content;
    if (i == 0 && has_system) content = system + "\n\n" + content;
    if (turns[i].role == "user") out += "[INST] " + content + " [/INST]";
    else out += content + t.eos + (t.space_after_eos ? " " : "");
  }
  return out;
}

std::string ChatML(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  std::string out;
  if (!t.default_system.empty() && (messages.empty() || messages[0].role != "system"))
    out += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
  std::string system;
  Turns(messages, &system, t.format);
  for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return out + "<|im_start|>assistant\n";
}

std::string Llama3(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  std::string system, out = t.bos;
  Turns(messages, &system, t.format);
  for (const ChatMessage& m : messages)
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + Strip(m.content) + "<|eot_id|>";
  return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

}  // namespace

std::string_view ChatFormatName(ChatFormat f) {
  switch (f) {
    case ChatFormat::kLlama2: return "llama2";
    case ChatFormat::kMistral: return "mistral";
    case ChatFormat::kChatML: return "chatml";
    case ChatFormat::kLlama3: return "llama3";
  }
  return "?";
}

std::optional<ChatFormat> ChatFormatFromName(std::string_view name) {
  for (ChatFormat f : {ChatFormat::kLlama2, ChatFormat::kMistral, ChatFormat::kChatML, ChatFormat::kLlama3})
    if (ChatFormatName(f) == name) return f;
  return std::nullopt;
}

std::optional<ChatFormat> DetectChatFormat(std::string_view tmpl) {
  auto has = [&](std::string_view s) { return tmpl.find(s) != std::string_view::npos; };
  if (has("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (has("<|im_start|>")) return ChatFormat::kChatML;
  if (has("<<SYS>>")) return ChatFormat::kLlama2;
  if (has("[INST]")) return ChatFormat::kMistral;
  return std::nullopt;
}

ChatTemplate ResolveChatTemplate(const std::string& name, const std::string& chat_template, const std::string& bos,
                                 const std::string& eos) {
  const std::string known = "llama2, mistral, chatml, llama3";
  ChatTemplate t;
  t.bos = bos;
  t.eos = eos;
  if (!name.empty()) {
    auto f = ChatFormatFromName(name);
    if (!f) throw Error("--chat-template \"" + name + "\" is not a chat format strata knows; choose one of " + known);
    t.format = *f;
  } else if (chat_template.empty()) {
    throw Error("the model has no chat template (no chat_template in tokenizer_config.json); choose a format with "
                "--chat-template (" + known + ")");
  } else {
    auto f = DetectChatFormat(chat_template);
    if (!f)
      throw Error("the model's chat template is not one strata recognises (it implements " + known +
                  " without a Jinja engine); if the model follows one of them, choose it with --chat-template");
    t.format = *f;
  }
  if (t.format == ChatFormat::kChatML && chat_template.find("You are a helpful assistant") != std::string::npos)
    t.default_system = "You are a helpful assistant.";
  t.space_after_eos = t.format == ChatFormat::kMistral && chat_template.find("eos_token + ' '") != std::string::npos;
  return t;
}

std::string FormatChat(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  switch (t.format) {
    case ChatFormat::kLlama2: return Llama2(t, messages);
    case ChatFormat::kMistral: return Mistral(t, messages);
    case ChatFormat::kChatML: return ChatML(t, messages);
    case ChatFormat::kLlama3: return Llama3(t, messages);
  }
  return {};
}

std::vector<std::string> ChatStopTokens(const ChatTemplate& t) {
  std::vector<std::string> out;
  if (t.format == ChatFormat::kChatML) out.push_back("<|im_end|>");
  if (t.format == ChatFormat::kLlama3) out.push_back("<|eot_id|>");
  if (!t.eos.empty()) out.push_back(t.eos);
  return out;
}

ChatSession::ChatSession(const Tokenizer& tok, ChatTemplate t, const std::string& system) : tok_(tok), t_(std::move(t)) {
  if (!system.empty()) messages_.push_back({"system", system});
  for (const std::string& s : ChatStopTokens(t_)) {
    auto id = tok_.TokenId(s);
    if (id) stop_ids_.push_back(*id);
    else if (s != t_.eos)
      throw Error("the " + std::string(ChatFormatName(t_.format)) + " chat format ends turns with " + s +
                  ", which is not in this model's vocabulary; choose another format with --chat-template");
  }
}

std::vector<int> ChatSession::EncodeHistory() const {
  // The template writes BOS itself: encode without adding one, special tokens parsed.
  return tok_.Encode(FormatChat(t_, messages_), /*parse_special=*/true);
}

std::string ChatSession::Turn(const std::string& user, const GenerateFn& generate,
                              const std::function<void(std::string_view)>& emit) {
  messages_.push_back({"user", user});
  std::vector<int> prompt;
  try {
    prompt = EncodeHistory();
  } catch (...) {
    messages_.pop_back();
    throw;
  }
  StreamDecoder decoder(tok_);
  std::string reply;
  auto on_token = [&](int id) {
    if (std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end()) return false;
    std::string text = decoder.Push(id);
    reply += text;
    if (!text.empty()) emit(text);
    return true;
  };
  try {
    generate(prompt, on_token);
  } catch (...) {
    messages_.pop_back();  // the turn did not happen: the history stays consistent
    throw;
  }
  std::string rest = decoder.Finish();
  reply += rest;
  if (!rest.empty()) emit(rest);
  messages_.push_back({"assistant", reply});
  return reply;
}

}  // namespace strata
