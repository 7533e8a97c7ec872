"""Checks of raw HTTP answers of `strata serve`, for serve_http.sh.

usage: serve_http.py error BODY STATUS TYPE CODE PARAM [MESSAGE_SUBSTRING]
       serve_http.py get FILE EXPR           (prints EXPR of the JSON document d)
       serve_http.py sse RAW KIND            (RAW: a body as `curl --raw` wrote it; KIND chat|completions)
       serve_http.py metrics FILE            (Prometheus text format)
       serve_http.py sample FILE NAME LABELS (the value of one sample; 0 when absent)
Each check prints what is wrong (one line per problem) and nothing when all is well;
`sse` prints a JSON summary {"text", "finish", "events", "last" (event), "problems"}.
"""
import json
import re
import sys


def error(path, status, type_, code, param, substring=""):
    try:
        d = json.load(open(path))
    except ValueError as e:
        return [f"the {status} body is not JSON ({e}): {open(path, 'rb').read()[:200]!r}"]
    p = []
    if not isinstance(d, dict) or set(d) != {"error"}:
        return [f"the body is not {{\"error\": ...}}: {d}"]
    e = d["error"]
    if not isinstance(e, dict) or set(e) != {"message", "type", "param", "code"}:
        return [f"error has not exactly message, type, param, code: {e}"]
    if not isinstance(e["message"], str) or not e["message"]:
        p.append(f"message is not a non-empty string: {e['message']!r}")
    elif substring and substring not in e["message"]:
        p.append(f"message {e['message']!r} does not contain {substring!r}")
    want = {"type": type_, "code": code or None, "param": param or None}
    for k, v in want.items():
        if e[k] != v:
            p.append(f"{k} is {e[k]!r}, expected {v!r} (message: {e['message']})")
    return p


def unchunk(raw):
    """The payload of a chunked body, with problems of its framing."""
    out, p, i = b"", [], 0
    while True:
        j = raw.find(b"\r\n", i)
        if j < 0:
            p.append(f"chunk size line missing at byte {i}")
            return out, p
        try:
            n = int(raw[i:j], 16)
        except ValueError:
            p.append(f"bad chunk size {raw[i:j][:20]!r}")
            return out, p
        data = raw[j + 2:j + 2 + n]
        if len(data) != n or raw[j + 2 + n:j + 4 + n] != b"\r\n":
            p.append(f"chunk of {n} bytes at {i} is truncated or not followed by CRLF")
            return out, p
        i = j + 4 + n
        if n == 0:
            if i != len(raw):
                p.append(f"{len(raw) - i} bytes after the last chunk")
            return out, p
        out += data


def sse(path, kind):
    payload, p = unchunk(open(path, "rb").read())
    text, finish, events, last = "", [], 0, None
    if not payload.endswith(b"data: [DONE]\n\n"):
        p.append(f"the stream does not end with data: [DONE]: ...{payload[-60:]!r}")
    parts = payload.split(b"\n\n")
    if parts[-1] != b"":
        p.append(f"bytes after the last blank line: {parts[-1][:60]!r}")
    parts = parts[:-1]
    for k, ev in enumerate(parts):
        if not ev.startswith(b"data: ") or b"\n" in ev:
            p.append(f"event {k} is not one 'data: ' line: {ev[:80]!r}")
            continue
        body = ev[len(b"data: "):]
        if body == b"[DONE]":
            if k != len(parts) - 1:
                p.append(f"[DONE] is event {k} of {len(parts)}")
            continue
        try:
            j = json.loads(body)
        except ValueError:
            p.append(f"event {k} is not JSON: {body[:80]!r}")
            continue
        events += 1
        last = j
        if "error" in j:  # an error after the stream started: the last event before [DONE]
            if set(j) != {"error"} or k != len(parts) - 2:
                p.append(f"event {k} of {len(parts)}: a misplaced or malformed error event: {j}")
            continue
        want = "chat.completion.chunk" if kind == "chat" else "text_completion"
        if j.get("object") != want:
            p.append(f"event {k}: object {j.get('object')!r}, expected {want}")
        for c in j.get("choices", []):
            if kind == "chat":
                if k == 0 and c["delta"].get("role") != "assistant":
                    p.append(f"the first chunk has no delta.role: {j}")
                text += c["delta"].get("content") or ""
            else:
                text += c["text"]
            finish.append(c["finish_reason"])
    return {"text": text, "finish": finish, "events": events, "last": last, "problems": p}


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
                    r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def metrics(path):
    p, types = [], {}
    for n, line in enumerate(open(path).read().split("\n"), 1):
        if not line:
            continue
        if line.startswith("# TYPE "):
            f = line.split()
            if len(f) != 4 or f[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                p.append(f"line {n}: bad TYPE line {line!r}")
            else:
                types[f[2]] = f[3]
        elif line.startswith("# HELP ") or line.startswith("#"):
            continue
        elif not SAMPLE.match(line):
            p.append(f"line {n}: not a Prometheus sample: {line!r}")
        else:
            name = line.split("{")[0].split(" ")[0]
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in types and base not in types:
                p.append(f"line {n}: {name} has no # TYPE line before it")
    return p


def sample(path, name, labels):
    for line in open(path).read().split("\n"):
        if line.startswith(name + ("{" + labels + "}" if labels else "") + " "):
            return line.rsplit(" ", 1)[1]
    return "0"


def tokstr(b):
    """The "token" string of a logprobs entry for its bytes: the text when they
    are valid UTF-8, else each byte past ASCII as \\xNN (docs/serve.md)."""
    try:
        return bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(x) if x < 128 else "\\x%02x" % x for x in b)


def main(a):
    if a[0] == "error":
        print("\n".join(error(a[1], a[2], a[3], a[4], a[5], a[6] if len(a) > 6 else "")))
    elif a[0] == "get":
        d = json.load(open(a[1]))
        print(eval(a[2], {"d": d, "json": json, "tokstr": tokstr}))
    elif a[0] == "sse":
        print(json.dumps(sse(a[1], a[2])))
    elif a[0] == "metrics":
        print("\n".join(metrics(a[1])))
    elif a[0] == "sample":
        print(sample(a[1], a[2], a[3]))


main(sys.argv[1:])
