// A Jinja template engine for chat templates: renders exactly what Python's
// jinja2 renders in the environment HF transformers' apply_chat_template uses
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
// raise_exception / strftime_now globals, tojson as json.dumps). docs/templates.md
// says what it covers and how it is checked against jinja2.
//
// Supported: {{ }}, {% if/elif/else %}, {% for %} (loop.index/index0/revindex/
// revindex0/first/last/length/previtem/nextitem/cycle/depth, `for x in y if c`,
// `else`, tuple targets), {% set %} (plain, tuple, `ns.attr =`, block set with
// filters), namespace(), {% macro %} (defaults, keyword arguments, varargs,
// kwargs, recursion), {% filter %}, {% break %}/{% continue %},
// {% generation %} (rendered as its body, as transformers does), {% raw %},
// comments, whitespace control (-, +, trim_blocks, lstrip_blocks), literals,
// all Python operators of Jinja expressions, slicing, attribute/item lookup as
// jinja2's sandbox does it, Python printing of values (repr of lists, dicts,
// tuples, floats), Markup (|safe) escaping on `+`, the filters and tests listed
// in jinja_builtins.cc, and the str/dict/list methods listed there.
//
// Not supported (each raises TemplateError "unsupported Jinja feature: ..."
// rather than printing something jinja2 would not): {% call %}/caller,
// {% include/import/extends/block/with/do %}, string formatting ('%' on
// strings, str.format), the filters and tests of jinja2 not listed in
// jinja_builtins.cc (e.g. wordwrap, urlize, groupby, batch), case mapping of
// non-ASCII letters (upper/lower/title of "É" etc.), printing values whose
// Python text is an address (iterators, functions), integers past 64 bits.
#pragma once

#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "strata/formats/error.h"

namespace strata {

using Json = nlohmann::json;  // as in strata/formats/store.h

namespace jinja {

// What jinja2 would raise: a syntax error ("line N: ..."), an operation on an
// undefined value or of the wrong types (jinja2's message where known), a
// sandbox violation, or raise_exception(msg) (the message is msg exactly).
class TemplateError : public strata::Error {
 public:
  using Error::Error;
};

struct RenderOptions {
  // The time strftime_now() formats; unset: the local time at the call.
  std::optional<std::tm> now;
};

namespace internal {
struct Program;
}

// A parsed template: immutable, cheap to copy (shared), Render is const and
// safe to call from many threads at once.
class Template {
 public:
  Template();  // renders ""
  // Parses `source` (newlines normalised and one trailing newline dropped, as
  // jinja2 does). Throws TemplateError "line N: ..." on a syntax error, an
  // unknown filter or test, or an unsupported feature.
  static Template Parse(std::string_view source);

  // Renders with `context` (an object: its members become the template's
  // variables; a null context is an empty one). Object members keep their
  // order in the ordered_json overload; Json (nlohmann::json) has sorted keys,
  // so `tojson` of an object then prints its keys sorted. Throws TemplateError.
  std::string Render(const Json& context) const;
  std::string Render(const Json& context, const RenderOptions& options) const;
  std::string Render(const nlohmann::ordered_json& context) const;
  std::string Render(const nlohmann::ordered_json& context, const RenderOptions& options) const;

 private:
  std::shared_ptr<const internal::Program> program_;
};

}  // namespace jinja
}  // namespace strata
