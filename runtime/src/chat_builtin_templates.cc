// The built-in chat templates (--chat-template llama2 | mistral | chatml |
// llama3) as Jinja sources. They render what strata's hand-written formats
// rendered: the reference templates' text for a system message (optional) and
// user/assistant turns alternating from user, raising otherwise.
#include <optional>
#include <string>

namespace strata {

namespace {

// Splits an optional leading system message into `system` / `turns` and
// raises unless the turns alternate user, assistant, ... from user.
std::string Turns(const std::string& format) {
  return R"JINJA(
{%- if messages and messages[0].role == 'system' -%}
  {%- set system = messages[0].content -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = none -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for m in turns -%}
  {%- if m.role != ['user', 'assistant'][loop.index0 % 2] -%}
    {{- raise_exception('the )JINJA" + format + R"JINJA( chat format needs one optional system message, then user and assistant turns alternating from user; message ' ~ loop.index ~ ' is "' ~ m.role ~ '"') -}}
  {%- endif -%}
{%- endfor -%}
)JINJA";
}

// meta-llama/Llama-2-7b-chat-hf: the system message inside the first [INST].
std::string Llama2() {
  return Turns("llama2") + R"JINJA(
{%- for m in turns -%}
  {%- set content = m.content -%}
  {%- if loop.first and system is not none -%}
    {%- set content = '<<SYS>>\n' ~ system ~ '\n<</SYS>>\n\n' ~ content -%}
  {%- endif -%}
  {%- if m.role == 'user' -%}
    {{- bos_token ~ '[INST] ' ~ content.strip() ~ ' [/INST]' -}}
  {%- else -%}
    {{- ' ' ~ content.strip() ~ ' ' ~ eos_token -}}
  {%- endif -%}
{%- endfor -%}
)JINJA";
}

// mistralai/Mistral-7B-Instruct-v0.2 (v0.1 puts a space after each EOS).
// Mistral's templates refuse a system message; strata folds it into the
// first user turn, as Mistral's later templates do.
std::string Mistral(bool space_after_eos) {
  return "{{- bos_token -}}" + Turns("mistral") + R"JINJA(
{%- for m in turns -%}
  {%- set content = m.content -%}
  {%- if loop.first and system is not none -%}
    {%- set content = system ~ '\n\n' ~ content -%}
  {%- endif -%}
  {%- if m.role == 'user' -%}
    {{- '[INST] ' ~ content ~ ' [/INST]' -}}
  {%- else -%}
    {{- content ~ eos_token -}})JINJA" + (space_after_eos ? "{{- ' ' -}}" : "") + R"JINJA(
  {%- endif -%}
{%- endfor -%}
)JINJA";
}

// ChatML; Qwen2's version starts with a default system turn when there is none.
std::string ChatML(bool default_system) {
  std::string s = Turns("chatml");
  if (default_system)
    s += R"JINJA(
{%- if system is none -%}
  {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' -}}
{%- endif -%}
)JINJA";
  return s + R"JINJA(
{%- for m in messages -%}
  {{- '<|im_start|>' ~ m.role ~ '\n' ~ m.content ~ '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
)JINJA";
}

// meta-llama/Meta-Llama-3-8B-Instruct.
std::string Llama3() {
  return "{{- bos_token -}}" + Turns("llama3") + R"JINJA(
{%- for m in messages -%}
  {{- '<|start_header_id|>' ~ m.role ~ '<|end_header_id|>\n\n' ~ m.content | trim ~ '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
)JINJA";
}

}  // namespace

// The source of the built-in template `name`, nullopt for another name.
// `model_template` (the model's own, possibly empty) picks the variant.
std::optional<std::string> BuiltinChatTemplateSource(const std::string& name, const std::string& model_template) {
  auto has = [&](const char* s) { return model_template.find(s) != std::string::npos; };
  if (name == "llama2") return Llama2();
  if (name == "mistral") return Mistral(has("eos_token + ' '"));
  if (name == "chatml") return ChatML(has("You are a helpful assistant"));
  if (name == "llama3") return Llama3();
  return std::nullopt;
}

}  // namespace strata
