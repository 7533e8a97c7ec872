// The Jinja engine: the language as Jinja documents it (whitespace control,
// trim_blocks/lstrip_blocks, filters, tests, macros, namespaces, loop
// variables, Python printing, errors), and a conformance test that renders the
// real chat templates of ../shared/templates over a set of conversations with
// strata and with Python's jinja2 (tests/ref/jinja_render.py, the environment
// transformers' apply_chat_template uses) and compares them byte for byte.
#include "strata/runtime/jinja.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unistd.h>
#include <algorithm>

namespace strata::jinja {
namespace {

using ::testing::HasSubstr;

std::string R(std::string_view src, const std::string& ctx = "{}") {
  return Template::Parse(src).Render(nlohmann::ordered_json::parse(ctx));
}

std::string ErrorOf(std::string_view src, const std::string& ctx = "{}") {
  try {
    R(src, ctx);
  } catch (const TemplateError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Jinja, TextAndOutput) {
  EXPECT_EQ(R(""), "");
  EXPECT_EQ(R("plain text"), "plain text");
  EXPECT_EQ(R("{{ x }}", R"({"x": "hi"})"), "hi");
  EXPECT_EQ(R("a{# comment #}b"), "ab");
  EXPECT_EQ(R("{{ undefined_name }}|{{ {'a': 1}.b }}"), "|");  // printing undefined gives ""
  EXPECT_EQ(R("line\n"), "line");                               // one trailing newline dropped
  EXPECT_EQ(R("a\r\nb\rc"), "a\nb\nc");                          // newlines normalised
  EXPECT_EQ(R("{% raw %}{{ x }}{% if %}{% endraw %}"), "{{ x }}{% if %}");
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(R("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(R("a \n {%- if true -%} \n b \n {%- endif -%} \n c"), "abc");
  EXPECT_EQ(R("a\n  {#- c -#}  \n b"), "ab");
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: the
  // indentation before one goes. Neither applies to {{ }}.
  EXPECT_EQ(R("{% if true %}\nx\n{% endif %}\ny"), "x\ny");
  EXPECT_EQ(R("  {% if true %}\n  x\n  {% endif %}\n"), "  x\n");
  EXPECT_EQ(R("  {{ 'v' }}\n"), "  v");
  // + disables both.
  EXPECT_EQ(R("  {%+ if true +%}\nx{% endif %}"), "  \nx");
  EXPECT_EQ(R("a  {#+ c +#}  \nb"), "a    \nb");
  EXPECT_EQ(R("{% for i in [1, 2] %}\n  {{ i }}\n{% endfor %}"), "  1\n  2\n");
  EXPECT_EQ(R("{% for i in [1, 2] -%}\n  {{ i }}\n{%- endfor %}"), "12");
}

TEST(Jinja, Literals) {
  EXPECT_EQ(R("{{ 'a\\tb\\n\\x41\\u00e9\\101' }}"), "a\tb\nAé\x41");
  EXPECT_EQ(R("{{ \"multi\" 'concat' }}"), "multiconcat");
  EXPECT_EQ(R("{{ 1.5e3 }} {{ 1_000 }} {{ 12e-2 }} {{ True }} {{ none }}"), "1500.0 1000 0.12 True None");
  EXPECT_EQ(R("{{ [1, 'a', 1.5, none, true, (1, 2), (1,), {'k': 'v'}, \"it's\"] }}"),
            "[1, 'a', 1.5, None, True, (1, 2), (1,), {'k': 'v'}, \"it's\"]");
}

TEST(Jinja, PythonNumbers) {
  EXPECT_EQ(R("{{ 1e20 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 10 / 2 }} {{ 1e16 }} {{ 123456789012345.6 }} {{ -0.0 }}"),
            "1e+20 1e-05 0.30000000000000004 5.0 1e+16 123456789012345.6 -0.0");
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 5.5 // 2 }}"),
            "3 -4 2 -2 1024 0.5 2.0");
  EXPECT_EQ(R("{{ 2 * 3 + 4 * 5 }} {{ 10 - 2 - 3 }} {{ - 2 ** 2 }} {{ 2 ** 3 ** 2 }}"), "26 5 4 64");
  EXPECT_EQ(R("{{ 1 == 1.0 }}{{ true == 1 }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}"), "TrueTrueTrueFalse");
}

TEST(Jinja, Operators) {
  EXPECT_EQ(R("{{ 'a' ~ none ~ 1 ~ 1.5 ~ true }}"), "aNone11.5True");
  EXPECT_EQ(R("{{ 'a' * 3 }}{{ [1] * 2 }}{{ [1] + [2] }}{{ (1,) + (2,) }}"), "aaa[1, 1][1, 2](1, 2)");
  EXPECT_EQ(R("{{ true and 'yes' }}{{ false or 'no' }}{{ none or 0 or 'last' }}{{ not none }}"), "yesnolastTrue");
  EXPECT_EQ(R("{{ 'a' in 'abc' }}{{ 1 in [1, 2] }}{{ 'a' in {'a': 1} }}{{ 'z' not in 'abc' }}{{ 'x' in nothing }}"),
            "TrueTrueTrueTrueFalse");
  EXPECT_EQ(R("{{ 'x' if false }}|{{ 'x' if false else 'y' }}|{{ 1 if none else 2 if true else 3 }}"), "|y|2");
  EXPECT_EQ(R("{{ 'abc'[1:] }}{{ 'abc'[-1] }}{{ 'abc'[::-1] }}{{ [1, 2, 3, 4][1:3] }}{{ 'héllo'[1:3] }}"),
            "bcccba[2, 3]él");
}

TEST(Jinja, IfForSet) {
  EXPECT_EQ(R("{% if 0 %}a{% elif '' %}b{% elif [1] %}c{% else %}d{% endif %}"), "c");
  EXPECT_EQ(R("{% for i in [3, 4, 5] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
              "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.cycle('a', 'b') }}|{% endfor %}"),
            "1032TrueFalse3a|2121FalseFalse3b|3210FalseTrue3a|");
  EXPECT_EQ(R("{% for i in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }},{% endfor %}"), "-2,1-3,2-,");
  EXPECT_EQ(R("{% for i in range(10) if i is odd %}{{ i }}{{ loop.last }},{% endfor %}"),
            "1False,3False,5False,7False,9True,");
  EXPECT_EQ(R("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for k, v in {'a': 1, 'b': 2}|items %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(R("{% for c in 'hé' %}{{ c }}.{% endfor %}{% for k in {'x': 1} %}{{ k }}{% endfor %}"), "h.é.x");
  EXPECT_EQ(R("{% for i in [1, 2, 3, 4, 5] %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}"
              "{% endif %}{{ i }}{% endfor %}"),
            "13");
  // A for body's assignments stay in the iteration; an if's do not.
  EXPECT_EQ(R("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}"), "11121");
  EXPECT_EQ(R("{% if true %}{% set y = 2 %}{% endif %}{{ y }}"), "2");
  EXPECT_EQ(R("{% set a, b = 'xy' %}{{ b }}{{ a }}"), "yx");
  EXPECT_EQ(R("{% set blk | trim | upper %}  inner {{ 1 + 1 }}  {% endset %}[{{ blk }}]"), "[INNER 2]");
  EXPECT_EQ(R("{% filter upper %}hello {{ 'x' }}{% endfilter %}"), "HELLO X");
}

TEST(Jinja, Namespaces) {
  EXPECT_EQ(R("{% set ns = namespace(x=1, y=[]) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}"
              "{% set ns.y = ns.y + [i] %}{% endfor %}{{ ns.x }}{{ ns.y }}"),
            "4[1, 2]");
  EXPECT_EQ(R("{% set ns = namespace() %}{% set ns.a = 'v' %}{{ ns.a }}{{ ns.missing }}"), "v");
  EXPECT_EQ(ErrorOf("{% set d = {} %}{% set d.y = 1 %}"), "cannot assign attribute on non-namespace object");
}

TEST(Jinja, Macros) {
  EXPECT_EQ(R("{% macro m(a, b=2, c='z') %}[{{ a }}{{ b }}{{ c }}]{% endmacro %}"
              "{{ m(1) }}{{ m(1, 3) }}{{ m(1, c='q') }}{{ m(b=5, a=0) }}{{ m() }}"),
            "[12z][13z][12q][05z][2z]");
  EXPECT_EQ(R("{% macro v() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ v(1, 2, k=3) }}"), "(1, 2){'k': 3}");
  EXPECT_EQ(R("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"), "321");
  // A macro sees the template's variables as they are when it is called.
  EXPECT_EQ(R("{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}"), "2");
  EXPECT_EQ(ErrorOf("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"), "macro 'm' takes not more than 1 argument(s)");
  EXPECT_EQ(ErrorOf("{% macro m(a) %}{% endmacro %}{{ m(c=2) }}"), "macro 'm' takes no keyword argument 'c'");
}

TEST(Jinja, Filters) {
  EXPECT_EQ(R("{{ '  x  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ [1, 2]|length }}{{ 'héllo'|count }}{{ nothing|length }}"),
            "x|hi|250");
  EXPECT_EQ(R("{{ [1, 2, 3]|first }}{{ [1, 2, 3]|last }}{{ [1, 2, 3]|join(', ') }}{{ [{'a': 'x'}, {'a': 'y'}]|join(',', attribute='a') }}"),
            "131, 2, 3x,y");
  EXPECT_EQ(R("{{ 'Hello'|upper }}{{ 'Hello'|lower }}{{ \"it's a-b (c)\"|title }}{{ 'hELLO'|capitalize }}"),
            "HELLOhelloIt's A-B (C)Hello");
  EXPECT_EQ(R("{{ 'abcabc'|replace('b', 'X') }}{{ 'abcabc'|replace('b', 'X', 1) }}"), "aXcaXcaXcabc");
  EXPECT_EQ(R("{{ nothing|default('d') }}{{ none|default('d') }}{{ ''|d('d', true) }}{{ 'v'|d('d') }}"), "dNonedv");
  EXPECT_EQ(R("{{ 3|string + 'a' }}{{ '3'|int + 1 }}{{ 'x'|int }}{{ '1.5'|float }}{{ '1.5'|int }}{{ 3.9|int }}"), "3a401.513");
  EXPECT_EQ(R("{{ 'ab'|list }}{{ {'a': 1}|items|list }}{{ [3, 1, 2]|sort }}{{ ['b', 'A', 'c']|sort }}{{ [1, 2]|reverse|list }}"),
            "['a', 'b'][('a', 1)][1, 2, 3]['A', 'b', 'c'][2, 1]");
  EXPECT_EQ(R("{{ [1, 2, 2, 'a', 'A']|unique|list }}{{ [1, 2, 3, 4]|select('odd')|list }}{{ [1, 2, 3, 4]|reject('odd')|list }}"),
            "[1, 2, 'a'][1, 3][2, 4]");
  EXPECT_EQ(R("{{ [{'a': 1}, {'b': 2}]|selectattr('a', 'defined')|list }}{{ [{'a': 1}, {'b': 2}]|rejectattr('a')|list }}"
              "{{ [{'t': 'x'}, {'t': 'y'}]|selectattr('t', 'equalto', 'y')|list }}"),
            "[{'a': 1}][{'b': 2}][{'t': 'y'}]");
  EXPECT_EQ(R("{{ [{'a': 1}, {'a': 2}]|map(attribute='a')|list }}{{ ['a', 'B']|map('upper')|list }}"), "[1, 2]['A', 'B']");
  EXPECT_EQ(R("{{ 'a\\nb'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb\\n'|indent(2) }}"), "a\n  b|  a\n  b|a\n\n  b\n");
  EXPECT_EQ(R("{{ 2.5|round }}{{ 3|round }}{{ 2.675|round(2) }}{{ 2.4|round(0, 'ceil') }}{{ -3|abs }}"), "2.032.673.03");
  EXPECT_EQ(R("{{ {'b': 2, 'a': 1}|dictsort }}{{ [1, 5, 3]|max }}{{ [1, 2, 3]|sum }}"), "[('a', 1), ('b', 2)]56");
  // Markup (|safe) escapes what is added to it, as markupsafe does.
  EXPECT_EQ(R("{{ 'x'|safe + \"it's <b>\" }}{{ 'x'|safe ~ '<b>' }}"), "xit&#39;s &lt;b&gt;x<b>");
}

TEST(Jinja, Tojson) {
  // json.dumps(ensure_ascii=False): Python's separators, key order as given.
  EXPECT_EQ(R("{{ x|tojson }}", R"({"x": {"b": [1, 2.5, null, true], "a": "é\"\\\n"}})"),
            "{\"b\": [1, 2.5, null, true], \"a\": \"é\\\"\\\\\\n\"}");
  EXPECT_EQ(R("{{ {'b': 1, 'a': [1, {}]}|tojson(indent=2) }}"), "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    {}\n  ]\n}");
  EXPECT_EQ(R("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}{{ [1, 2]|tojson(separators=(',', ':')) }}"),
            "{\"a\": 2, \"b\": 1}[1,2]");
  EXPECT_EQ(R("{{ 'é😀'|tojson(ensure_ascii=true) }}"), "\"\\u00e9\\ud83d\\ude00\"");
  EXPECT_EQ(ErrorOf("{{ nothing|tojson }}"), "Object of type Undefined is not JSON serializable");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(R("{{ x is defined }}{{ u is undefined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}"
              "{{ [] is iterable }}{{ 1 is iterable }}{{ 1 is number }}{{ true is boolean }}{{ 1 is true }}",
              R"({"x": 1})"),
            "TrueTrueTrueTrueTrueTrueFalseTrueTrueFalse");
  EXPECT_EQ(R("{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 'a' is equalto 'a' }}{{ 1 is in [1] }}"
              "{{ x is not none }}{{ none is not none }}{{ nothing is iterable }}"),
            "TrueTrueTrueTrueTrueTrueFalseTrue");
}

TEST(Jinja, Methods) {
  EXPECT_EQ(R("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ ' x '.strip() }}"),
            "['a', 'b', '', 'c']['a', 'b']['a', 'b c']x");
  EXPECT_EQ(R("{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x', 'lo')) }}{{ \"it's\".title() }}{{ 'x'.upper() }}"),
            "TrueTrueIt'SX");
  EXPECT_EQ(R("{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 0) }}{{ d.items()|list }}{{ d.keys() }}", R"({"d": {"a": 1}})"),
            "1None0[('a', 1)]dict_keys(['a'])");
  // Attribute lookup finds dict methods before keys, as jinja2 does.
  EXPECT_EQ(R("{{ d.items is defined }}{{ d['items'] }}", R"({"d": {"items": 5}})"), "True5");
}

TEST(Jinja, Errors) {
  EXPECT_EQ(ErrorOf("{{ raise_exception('Roles must alternate') }}"), "Roles must alternate");
  EXPECT_EQ(ErrorOf("{{ u + 'a' }}"), "'u' is undefined");
  EXPECT_EQ(ErrorOf("{{ d.b.c }}", R"({"d": {}})"), "'dict object' has no attribute 'b'");
  EXPECT_EQ(ErrorOf("{{ l[5].x }}", R"({"l": []})"), "list object has no element 5");
  EXPECT_EQ(ErrorOf("{{ none + 'a' }}"), "unsupported operand type(s) for +: 'NoneType' and 'str'");
  EXPECT_EQ(ErrorOf("{{ 'a' + 1 }}"), "can only concatenate str (not \"int\") to str");
  EXPECT_EQ(ErrorOf("{% for x in none %}{% endfor %}"), "'NoneType' object is not iterable");
  EXPECT_EQ(ErrorOf("{{ 1 < 'a' }}"), "'<' not supported between instances of 'int' and 'str'");
  EXPECT_EQ(ErrorOf("{{ 1 / 0 }}"), "division by zero");
  EXPECT_EQ(ErrorOf("{{ [1]|select|length }}"), "object of type 'generator' has no len()");
  // The sandbox: lists and dicts cannot be changed.
  EXPECT_EQ(ErrorOf("{{ l.append(1) }}", R"({"l": []})"), "access to attribute 'append' of 'list' object is unsafe.");
  // Syntax errors name the line.
  EXPECT_EQ(ErrorOf("a\n{% if x %}"), "line 2: Unexpected end of template. Jinja was looking for the following tags: "
                                      "'elif' or 'else' or 'endif'.");
  EXPECT_EQ(ErrorOf("{% endfor %}"), "line 1: Encountered unknown tag 'endfor'.");
  EXPECT_EQ(ErrorOf("{{ x | nofilter }}"), "line 1: No filter named 'nofilter'.");
  EXPECT_THAT(ErrorOf("{{ 1 +}}"), HasSubstr("line 1:"));
  EXPECT_THAT(ErrorOf("{% break %}"), HasSubstr("outside of a for loop"));
  EXPECT_THROW(Template::Parse("{{ 'unterminated }}"), TemplateError);
  EXPECT_THROW(Template::Parse("{{ " + std::string(100000, '(') + "1 }}"), TemplateError);  // no stack overflow
  EXPECT_THROW(Template::Parse("{{ " + std::string(100000, '-') + "1 }}"), TemplateError);
  EXPECT_THROW(Template::Parse(std::string(300, '{') + "% if x %}"), TemplateError);
  std::string deep;
  for (int k = 0; k < 1000; ++k) deep += "{% if x %}";
  EXPECT_THROW(Template::Parse(deep), TemplateError);
}

TEST(Jinja, UnsupportedFeaturesSayso) {
  for (const char* src : {"{% include 'x' %}", "{% call m() %}{% endcall %}", "{{ '%s' % 1 }}", "{{ '{}'.format(1) }}",
                          "{{ [1]|reverse }}", "{{ 'É'|lower }}", "{{ 2 ** 100 }}", "{{ x|wordwrap }}", "{{ d.items }}"})
    EXPECT_THAT(ErrorOf(src, R"({"d": {}})"), HasSubstr("unsupported Jinja feature: ")) << src;
}

TEST(Jinja, StrftimeNowUsesTheGivenClock) {
  std::tm tm{};
  tm.tm_year = 124, tm.tm_mon = 6, tm.tm_mday = 26, tm.tm_hour = 10, tm.tm_min = 30, tm.tm_wday = 5, tm.tm_yday = 207;
  RenderOptions o;
  o.now = tm;
  EXPECT_EQ(Template::Parse("{{ strftime_now('%d %b %Y %H:%M %a') }}").Render(Json::object(), o), "26 Jul 2024 10:30 Fri");
  EXPECT_FALSE(Template::Parse("{{ strftime_now('%Y') }}").Render(Json::object()).empty());
}

TEST(Jinja, ContextFromBothJsonKinds) {
  Template t = Template::Parse("{{ x|tojson }}");
  // nlohmann::json sorts keys; ordered_json keeps them as given.
  EXPECT_EQ(t.Render(Json::parse(R"({"x": {"b": 1, "a": 2}})")), "{\"a\": 2, \"b\": 1}");
  EXPECT_EQ(t.Render(nlohmann::ordered_json::parse(R"({"x": {"b": 1, "a": 2}})")), "{\"b\": 1, \"a\": 2}");
  EXPECT_EQ(Template().Render(Json()), "");
  EXPECT_THROW(t.Render(Json::array()), TemplateError);
}

// --- conformance against jinja2 ---

const char* kConversations = R"JSON(
{"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the user's current weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "The unit of temperature"}, "days": {"type": "integer", "description": "How many days", "default": 1, "minimum": 1, "maximum": 7}, "hours": {"type": "array", "items": {"type": "number"}, "description": "The hours of the day"}, "options": {"type": "object", "properties": {"detailed": {"type": "boolean", "description": "More detail"}}, "required": ["detailed"], "description": "Extra options"}}, "required": ["city"]}}}, {"type": "function", "function": {"name": "search", "description": "Search the web <fast> & well", "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "What to search for"}}, "required": ["query"]}}}],
 "documents": [{"title": "Tall penguins", "text": "Emperor penguins are the tallest."}, {"title": "Penguin habitats", "text": "Emperor penguins only live in Antarctica."}],
 "conversations": [
  {"name": "user_only", "agp": true, "messages": [{"role": "user", "content": "Hello!"}]},
  {"name": "user_only_no_gen", "agp": false, "messages": [{"role": "user", "content": "Hello!"}]},
  {"name": "system_user", "agp": true, "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+2?"}]},
  {"name": "system_empty", "agp": true, "messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}]},
  {"name": "multi_turn", "agp": true, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a joke"}, {"role": "assistant", "content": "  Why did the chicken cross the road?  "}, {"role": "user", "content": "Why?"}]},
  {"name": "multi_turn_ends_assistant", "agp": false, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye</think>"}]},
  {"name": "unicode", "agp": true, "messages": [{"role": "system", "content": "Réponds en français 🇫🇷"}, {"role": "user", "content": "こんにちは 世界! 😀 «quotes» \"dq\" 'sq' <tag> & \\ back"}, {"role": "assistant", "content": "  Bonjour! 你好  \n"}, {"role": "user", "content": "Ça va?\tOui.\n\n"}]},
  {"name": "think", "agp": true, "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>easy</think>4"}, {"role": "user", "content": "3+3?"}]},
  {"name": "tools", "agp": true, "tools": true, "messages": [{"role": "user", "content": "What's the weather in Paris?"}]},
  {"name": "tools_system", "agp": true, "tools": true, "messages": [{"role": "system", "content": "You can call tools."}, {"role": "user", "content": "Search for penguins"}]},
  {"name": "tool_calls_dict", "agp": true, "tools": true, "messages": [{"role": "user", "content": "What's the weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]}, {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "{\"temperature\": 22}"}, {"role": "assistant", "content": "It is 22°C in Paris."}, {"role": "user", "content": "Thanks!"}]},
  {"name": "tool_calls_string", "agp": true, "tools": true, "messages": [{"role": "user", "content": "What's the weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"}]},
  {"name": "tool_calls_with_text", "agp": false, "tools": true, "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}, {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "call12345", "content": "22"}, {"role": "tool", "tool_call_id": "call12345", "content": "25"}]},
  {"name": "two_tool_calls", "agp": true, "tools": true, "messages": [{"role": "user", "content": "Weather in Paris and Rome?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}, {"id": "call67890", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]}, {"role": "tool", "tool_call_id": "call12345", "content": "22"}, {"role": "tool", "tool_call_id": "call67890", "content": "25"}]},
  {"name": "tool_result_object", "agp": true, "tools": true, "messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, {"role": "tool", "tool_call_id": "call12345", "content": {"temperature": 22.5, "sunny": true, "note": null}}]},
  {"name": "out_of_alternation", "agp": true, "messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]},
  {"name": "assistant_first", "agp": true, "messages": [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "ok"}]},
  {"name": "empty", "agp": true, "messages": []},
  {"name": "documents", "agp": true, "documents": true, "messages": [{"role": "user", "content": "How tall are penguins?"}]},
  {"name": "documents_citations", "agp": true, "documents": true, "tools": true, "extra": {"enable_citations": true}, "messages": [{"role": "system", "content": "Cite sources."}, {"role": "user", "content": "Where do penguins live?"}]},
  {"name": "firefunction_kwargs", "agp": true, "extra": {"functions": "[{\"name\": \"get_weather\"}]", "datetime": "2024-07-26"}, "messages": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}]},
  {"name": "builtin_tools", "agp": true, "tools": true, "extra": {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}, "messages": [{"role": "user", "content": "Search penguins"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "brave_search", "arguments": {"query": "penguins"}}}]}, {"role": "tool", "content": "Penguins are birds."}]},
  {"name": "tools_in_system", "agp": true, "tools": true, "extra": {"tools_in_user_message": false, "date_string": "01 Jan 2025"}, "messages": [{"role": "system", "content": "  Sys  "}, {"role": "user", "content": "  Hi  "}]},
  {"name": "code_interpreter", "agp": true, "tools_extra": [{"type": "code_interpreter"}], "tools": true, "messages": [{"role": "user", "content": "Plot"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function", "function": {"name": "python", "arguments": "print(1)"}}]}]}
]})JSON";

std::string TemplatesDir() { return std::string(STRATA_SOURCE_DIR) + "/../shared/templates"; }

// A Python that has jinja2: $STRATA_PYTHON, /usr/bin/python3, or python3 on PATH.
std::string FindPython() {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("STRATA_PYTHON")) candidates.push_back(p);
  candidates.push_back("/usr/bin/python3");
  candidates.push_back("python3");
  for (const std::string& py : candidates)
    if (std::system((py + " -c 'import jinja2' >/dev/null 2>&1").c_str()) == 0) return py;
  return "";
}

// The bos/eos texts each model's tokenizer has.
std::pair<std::string, std::string> Tokens(const std::string& file) {
  auto has = [&](const char* s) { return file.find(s) != std::string::npos; };
  if (has("Llama-3") || has("firefunction") || has("functionary")) return {"<|begin_of_text|>", "<|eot_id|>"};
  if (has("Hermes")) return {"<|begin_of_text|>", "<|im_end|>"};
  if (has("Qwen") || has("chatml")) return {"", "<|im_end|>"};
  if (has("gemma")) return {"<bos>", "<eos>"};
  if (has("Phi-3")) return {"<s>", "<|endoftext|>"};
  if (has("DeepSeek")) return {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"};
  if (has("Cohere")) return {"<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"};
  return {"<s>", "</s>"};
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Where two renderings first differ, with some context around it.
std::string Diff(const std::string& want, const std::string& got) {
  size_t k = 0;
  while (k < want.size() && k < got.size() && want[k] == got[k]) ++k;
  size_t from = k > 60 ? k - 60 : 0;
  auto show = [&](const std::string& s) { return nlohmann::json(s.substr(from, 160)).dump(); };
  return "first difference at byte " + std::to_string(k) + " (jinja2 " + std::to_string(want.size()) + " bytes, strata " +
         std::to_string(got.size()) + ")\n    jinja2: ..." + show(want) + "\n    strata: ..." + show(got);
}

struct Case {
  std::string name, path;
  nlohmann::ordered_json context;
};

TEST(JinjaConformance, RealTemplatesMatchJinja2) {
  bool ci = std::getenv("CI") != nullptr;
  std::string dir = TemplatesDir();
  if (!std::filesystem::is_directory(dir)) {
    if (ci) FAIL() << "chat templates not found at " << dir;
    GTEST_SKIP() << "chat templates not found at " << dir << " (the shared/templates directory beside the checkout)";
  }
  std::string py = FindPython();
  if (py.empty()) {
    if (ci) FAIL() << "no python3 with jinja2 (apt-get install python3-jinja2, or set STRATA_PYTHON)";
    GTEST_SKIP() << "no python3 with jinja2 (apt-get install python3-jinja2, or set STRATA_PYTHON)";
  }
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".jinja") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  ASSERT_GE(files.size(), 22u);

  auto data = nlohmann::ordered_json::parse(kConversations);
  std::vector<Case> cases;
  nlohmann::ordered_json input = nlohmann::ordered_json::array();
  for (const std::string& f : files) {
    auto [bos, eos] = Tokens(std::filesystem::path(f).filename().string());
    for (const auto& c : data["conversations"]) {
      nlohmann::ordered_json ctx;
      ctx["messages"] = c["messages"];
      ctx["add_generation_prompt"] = c["agp"];
      ctx["bos_token"] = bos;
      ctx["eos_token"] = eos;
      ctx["tools"] = nullptr;
      if (c.value("tools", false)) {
        ctx["tools"] = data["tools"];
        if (c.contains("tools_extra"))
          for (const auto& t : c["tools_extra"]) ctx["tools"].push_back(t);
      }
      ctx["documents"] = c.value("documents", false) ? data["documents"] : nlohmann::ordered_json(nullptr);
      if (c.contains("extra"))
        for (const auto& [k, v] : c["extra"].items()) ctx[k] = v;
      cases.push_back({std::filesystem::path(f).filename().string() + " / " + c["name"].get<std::string>(), f, ctx});
      input.push_back({{"template_path", f}, {"context", ctx}, {"now", "2024-07-26T10:30:00"}});
    }
  }
  std::string tmp = (std::filesystem::temp_directory_path() / ("strata_jinja_cases_" + std::to_string(::getpid()) + ".json")).string();
  {
    std::ofstream out(tmp, std::ios::binary);
    out << input.dump();
  }
  std::string cmd = py + " " + STRATA_SOURCE_DIR + "/tests/ref/jinja_render.py " + tmp;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr) << cmd;
  std::string text;
  char buf[65536];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  int rc = ::pclose(p);
  std::filesystem::remove(tmp);
  ASSERT_EQ(rc, 0) << cmd;
  std::vector<nlohmann::json> ref;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) ref.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(ref.size(), cases.size());

  std::tm now{};
  now.tm_year = 124, now.tm_mon = 6, now.tm_mday = 26, now.tm_hour = 10, now.tm_min = 30, now.tm_wday = 5, now.tm_yday = 207;
  RenderOptions opts;
  opts.now = now;
  std::map<std::string, Template> parsed;
  int pass = 0, raised = 0;
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    if (!parsed.count(c.path)) parsed[c.path] = Template::Parse(ReadFile(c.path));
    std::string got, error;
    bool ok = true;
    try {
      got = parsed[c.path].Render(c.context, opts);
    } catch (const TemplateError& e) {
      ok = false;
      error = e.what();
    }
    const nlohmann::json& r = ref[k];
    if (r["ok"].get<bool>()) {
      if (!ok) {
        ADD_FAILURE() << c.name << ": jinja2 rendered it, strata raised: " << error;
        continue;
      }
      if (got != r["output"].get<std::string>()) {
        ADD_FAILURE() << c.name << ": " << Diff(r["output"], got);
        continue;
      }
    } else {
      std::string want = r["message"], cls = r["error"];
      if (ok) {
        ADD_FAILURE() << c.name << ": jinja2 raised " << cls << "(" << want << "), strata rendered " << nlohmann::json(got).dump();
        continue;
      }
      // raise_exception's text exactly; jinja2's own errors (UndefinedError,
      // TypeError, ...) have their message matched too.
      if (error != want) {
        ADD_FAILURE() << c.name << ": jinja2 raised " << cls << "(" << nlohmann::json(want).dump() << "), strata "
                      << nlohmann::json(error).dump();
        continue;
      }
      ++raised;
    }
    ++pass;
  }
  std::printf("[ conformance ] %d of %zu renders match jinja2 (%zu templates x %zu conversations; %d raise the same error)\n",
              pass, cases.size(), files.size(), cases.size() / files.size(), raised);
  EXPECT_EQ(static_cast<size_t>(pass), cases.size());
}

TEST(JinjaConformance, RenderingIsFast) {
  std::string path = TemplatesDir() + "/meta-llama-Llama-3.1-8B-Instruct.jinja";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path;
  Template t = Template::Parse(ReadFile(path));
  nlohmann::ordered_json ctx = {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"},
                                {"add_generation_prompt", true}, {"tools", nullptr}};
  ctx["messages"] = nlohmann::ordered_json::array();
  ctx["messages"].push_back({{"role", "system"}, {"content", "You are a helpful assistant."}});
  for (int k = 0; k < 9; ++k)
    ctx["messages"].push_back({{"role", k % 2 ? "assistant" : "user"}, {"content", "Message number " + std::to_string(k) + " with some text in it."}});
  const int n = 200;
  auto start = std::chrono::steady_clock::now();
  size_t bytes = 0;
  for (int k = 0; k < n; ++k) bytes += t.Render(ctx).size();
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / n;
  std::printf("[ jinja ] 10-message Llama 3.1 render: %.1f us (%zu bytes)\n", us, bytes / n);
  EXPECT_LT(us, 2000.0);  // well under a millisecond in Release; loose for sanitizer builds
}

}  // namespace
}  // namespace strata::jinja
