#!/usr/bin/python3
"""The reference chat-template renderer: Python's jinja2 set up as HF transformers'
apply_chat_template sets it up, for strata's Jinja conformance test.

Usage: jinja_render.py CASES.json

CASES.json is a JSON list of cases, each
  {"template_path": "x.jinja" (or "template": "source text"),
   "context": {...variables...},
   "now": "2024-07-26T10:30:00"}   (what strftime_now formats; optional)
Prints one JSON line per case, in order:
  {"ok": true, "output": "..."}
  {"ok": false, "error": "TemplateError", "message": "..."}   (the exception's class and str())

The environment (a separate reading of transformers' chat_template_utils, no code shared):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols
extension and a {% generation %} block rendered as its body (transformers' AssistantTracker when
it is not tracking), raise_exception(msg) raising TemplateError(msg), strftime_now(fmt), and
tojson = json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys).
Needs only Debian's python3-jinja2.
"""
import datetime
import json
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationBlock(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


_now = [None]  # what strftime_now formats for the case being rendered
_compiled = {}


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return (_now[0] or datetime.datetime.now()).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def render(case):
    _now[0] = datetime.datetime.fromisoformat(case["now"]) if case.get("now") else None
    if "template" in case:
        source = case["template"]
    else:
        with open(case["template_path"], encoding="utf-8") as f:
            source = f.read()
    try:
        if source not in _compiled:
            _compiled[source] = ENV.from_string(source)
        out = _compiled[source].render(**case.get("context", {}))
        return {"ok": True, "output": out}
    except Exception as e:  # what jinja2 raised, reported, not handled
        return {"ok": False, "error": type(e).__name__, "message": str(e)}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    for case in cases:
        print(json.dumps(render(case), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
