// Chat templates: choosing one (built-in, file, or the model's), the context
// transformers' apply_chat_template renders it with, stop tokens, and the
// chat session the CLI runs.
#include "strata/runtime/chat.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "strata/formats/error.h"

namespace strata {

std::optional<std::string> BuiltinChatTemplateSource(const std::string& name, const std::string& model_template);

namespace {

const char* kEndOfTurnTokens[] = {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_turn|>", "<end_of_turn>",
                                  "<|end|>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>"};

std::string Choices() { return BuiltinChatTemplateNames() + " or FILE.jinja"; }

std::string ReadTemplateFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw Error("cannot read the chat template file " + path + ": " + std::strerror(errno) +
                "; --chat-template takes " + Choices());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool LooksLikeFile(const std::string& name) {
  if (name.find('/') != std::string::npos) return true;
  if (name.size() > 6 && name.compare(name.size() - 6, 6, ".jinja") == 0) return true;
  return std::ifstream(name).good();
}

}  // namespace

std::string BuiltinChatTemplateNames() { return "llama2, mistral, chatml, llama3"; }

ChatTemplate ResolveChatTemplate(const std::string& name, const std::string& chat_template, const std::string& bos,
                                 const std::string& eos) {
  ChatTemplate t;
  t.bos = bos;
  t.eos = eos;
  if (!name.empty()) {
    t.name = name;
    if (std::optional<std::string> src = BuiltinChatTemplateSource(name, chat_template)) {
      t.source = *src;
    } else if (LooksLikeFile(name)) {
      t.source = ReadTemplateFile(name);
    } else {
      throw Error("--chat-template \"" + name + "\" is neither a built-in chat template nor a file; choose one of " +
                  Choices());
    }
  } else if (chat_template.empty()) {
    throw Error("the model has no chat template (no chat_template in tokenizer_config.json); choose one with "
                "--chat-template (" + Choices() + ")");
  } else {
    t.name = "the model's chat_template";
    t.source = chat_template;
  }
  try {
    t.tmpl = jinja::Template::Parse(t.source);
  } catch (const jinja::TemplateError& e) {
    throw Error("the chat template (" + t.name + ") cannot be used: " + e.what() +
                "; choose another with --chat-template (" + Choices() + ")");
  }
  return t;
}

nlohmann::ordered_json ChatContext(const ChatTemplate& t, const nlohmann::ordered_json& messages,
                                   bool add_generation_prompt, const nlohmann::ordered_json& tools,
                                   const nlohmann::ordered_json& extra) {
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["messages"] = messages;
  ctx["tools"] = tools;
  ctx["documents"] = nullptr;
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = t.bos;
  ctx["eos_token"] = t.eos;
  if (extra.is_null()) return ctx;
  if (!extra.is_object()) throw Error("extra chat template variables must be a JSON object, not " + std::string(extra.type_name()));
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    if (it.key() == "messages" || it.key() == "tools" || it.key() == "add_generation_prompt")
      throw Error("the extra chat template variable \"" + it.key() + "\" would replace the chat's own; pass it as such");
    ctx[it.key()] = it.value();
  }
  return ctx;
}

std::string RenderChat(const ChatTemplate& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                       const nlohmann::ordered_json& tools, const nlohmann::ordered_json& extra) {
  return t.tmpl.Render(ChatContext(t, messages, add_generation_prompt, tools, extra));
}

std::string RenderChat(const ChatTemplate& t, const Json& messages, bool add_generation_prompt, const Json& tools,
                       const Json& extra) {
  return RenderChat(t, nlohmann::ordered_json(messages), add_generation_prompt, nlohmann::ordered_json(tools),
                    nlohmann::ordered_json(extra));
}

std::string FormatChat(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json m = nlohmann::ordered_json::array();
  for (const ChatMessage& msg : messages) m.push_back({{"role", msg.role}, {"content", msg.content}});
  return RenderChat(t, m, true, nullptr, nullptr);
}

std::vector<std::string> ChatStopTokens(const ChatTemplate& t, const Tokenizer* vocab) {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (s.empty() || std::find(out.begin(), out.end(), s) != out.end()) return;
    if (vocab && !vocab->TokenId(s)) return;
    out.push_back(s);
  };
  add(t.eos);
  for (const char* m : kEndOfTurnTokens)
    if (t.source.find(m) != std::string::npos) add(m);
  return out;
}

ChatSession::ChatSession(const Tokenizer& tok, ChatTemplate t, const std::string& system) : tok_(tok), t_(std::move(t)) {
  if (!system.empty()) messages_.push_back({"system", system});
  std::vector<std::string> markers;
  for (const std::string& s : ChatStopTokens(t_))
    if (s != t_.eos) markers.push_back(s);
  for (const std::string& s : ChatStopTokens(t_, &tok_)) stop_ids_.push_back(*tok_.TokenId(s));
  bool any_marker = std::any_of(markers.begin(), markers.end(), [&](const std::string& s) { return tok_.TokenId(s).has_value(); });
  if (!markers.empty() && !any_marker)
    throw Error("the chat template (" + t_.name + ") ends turns with " + markers[0] +
                ", which is not in this model's vocabulary; choose another with --chat-template (" + Choices() + ")");
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
