#!/usr/bin/env python3
"""Shared by the tests/e2e/serve_*.sh scripts: the test model and store, a
`strata serve` process (port 0, parsed from its stderr), and a raw-socket
HTTP/1.1 client that reads plain, chunked and server-sent-event answers.
Python standard library only."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

VARIANTS = ["base", "dus", "expand"]


class Checks:
    """ok/FAIL lines and a summary, as the shell e2e scripts print them."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        print("ok: " + what, flush=True)
        self.passed += 1

    def bad(self, what):
        print("FAIL: " + what, flush=True)
        self.failed += 1

    def check(self, cond, what, detail=""):
        if cond:
            self.ok(what)
        else:
            self.bad(what + (": " + detail if detail else ""))
        return cond

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 0 if self.failed == 0 else 1


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, **kw)


def make_store(bin_, root, tmp):
    """A 4-layer synthetic Llama with the llama-spm tokenizer and three
    variants of it in tmp/store: base (passthrough), dus (layers 0-3 then 1-4)
    and expand (block expansion: layer 3 twice more with o_proj, down_proj 0)."""
    m = os.path.join(tmp, "m")
    vocab = os.path.join(root, "..", "shared", "vocab", "ggml-vocab-llama-spm.gguf")
    run([bin_, "synth", "--arch", "llama", "--layers", "4", "-q", "--tokenizer", "llama-spm",
         "--vocab-gguf", vocab, "--out", m])
    zero = ("      parameters:\n        scale:\n          - filter: o_proj\n            value: 0.0\n"
            "          - filter: down_proj\n            value: 0.0\n          - value: 1.0\n")
    tail = "merge_method: passthrough\ndtype: bfloat16\n"
    src = "  - sources:\n    - model: %s\n      layer_range: [%d, %d]\n"
    plans = {
        "base": "models:\n  - model: %s\n" % m + tail,
        "dus": "slices:\n" + src % (m, 0, 3) + src % (m, 1, 4) + tail,
        "expand": "slices:\n" + src % (m, 0, 4) + (src % (m, 3, 4) + zero) * 2 + tail,
    }
    store = os.path.join(tmp, "store")
    for name in VARIANTS:
        p = os.path.join(tmp, name + ".yml")
        with open(p, "w") as f:
            f.write(plans[name])
        run([bin_, "compile", p, "--name", name, "--store", store, "-q"])
    return store


class Server:
    """`strata serve --port 0 --batch-invariant EXTRA...` on the store; its
    stderr goes to a file (the request log)."""

    def __init__(self, bin_, store, tmp, extra=(), tag="serve", env=None):
        self.log_path = os.path.join(tmp, tag + ".err")
        self.logf = open(self.log_path, "wb")
        cmd = [bin_, "serve", "--store", store, "--port", "0", "--batch-invariant"] + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.logf, env=env)
        self.pid = self.proc.pid
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline and self.port is None:
            m = re.search(r"strata serve: loading .* on port (\d+)", self.log())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError("strata serve exited %s: %s" % (self.proc.returncode, self.log()))
            else:
                time.sleep(0.02)
        if self.port is None:
            raise RuntimeError("no port line from strata serve: " + self.log())
        while time.time() < deadline:
            try:
                if request(self.port, "GET", "/health", timeout=5).status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("strata serve exited %s: %s" % (self.proc.returncode, self.log()))
            time.sleep(0.05)
        raise RuntimeError("/health never answered 200: " + self.log())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def metrics(self):
        """/metrics as {'name{labels}': value}."""
        r = request(self.port, "GET", "/metrics", timeout=10)
        out = {}
        for line in r.body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def idle_problem(self):
        """'' when /metrics shows nothing running, queued or holding KV."""
        m = self.metrics()
        bad = []
        for k in ["strata_active_sequences", "strata_queue_depth"] + [
                'strata_kv_blocks_used{model="%s"}' % v for v in VARIANTS]:
            if m.get(k) != 0:
                bad.append("%s=%s" % (k, m.get(k)))
        return ", ".join(bad)

    def wait_idle(self, seconds):
        deadline = time.time() + seconds
        while True:
            p = self.idle_problem()
            if not p or time.time() > deadline:
                return p
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, wait=40):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


class Response:
    def __init__(self):
        self.status = None
        self.reason = ""
        self.headers = {}
        self.body = b""
        self.chunked = False

    def json(self):
        return json.loads(self.body)

    def events(self):
        """The `data:` payloads of an event stream, in order."""
        out = []
        for block in self.body.decode("utf-8", "strict").split("\n\n"):
            if block.startswith("data: "):
                out.append(block[len("data: "):])
            elif block.strip():
                raise ValueError("not an SSE event: %r" % block[:200])
        return out


class BadHttp(Exception):
    pass


class Reader:
    """Reads one HTTP/1.1 answer off a socket (plain, Content-Length or chunked)."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.buf = b""
        self.deadline = deadline

    def _more(self):
        left = self.deadline - time.time()
        if left <= 0:
            raise socket.timeout("no complete answer in time")
        self.sock.settimeout(left)
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise BadHttp("a line over 1 MiB")
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._more()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def response(self, on_chunk=None):
        r = Response()
        status = self.line().decode("latin-1")
        m = re.fullmatch(r"HTTP/1\.[01] (\d{3}) ([^\r\n]*)", status)
        if not m:
            raise BadHttp("bad status line %r" % status)
        r.status, r.reason = int(m.group(1)), m.group(2)
        while True:
            h = self.line().decode("latin-1")
            if h == "":
                break
            if ":" not in h:
                raise BadHttp("bad header line %r" % h)
            k, v = h.split(":", 1)
            r.headers[k.strip().lower()] = v.strip()
        if r.headers.get("transfer-encoding", "").lower() == "chunked":
            r.chunked = True
            parts = []
            while True:
                size = self.line().split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]+", size):
                    raise BadHttp("bad chunk size %r" % size)
                n = int(size, 16)
                if n == 0:
                    if self.line() != b"":
                        raise BadHttp("trailers after the last chunk")
                    break
                data = self.exact(n)
                if self.exact(2) != b"\r\n":
                    raise BadHttp("chunk not followed by CRLF")
                parts.append(data)
                if on_chunk and on_chunk(data) is False:
                    r.body = b"".join(parts)
                    return r
            r.body = b"".join(parts)
        elif "content-length" in r.headers:
            r.body = self.exact(int(r.headers["content-length"]))
        else:
            raise BadHttp("an answer with neither Content-Length nor chunked transfer")
        return r


def encode(method, path, body=b"", headers=None, port=0):
    if isinstance(body, str):
        body = body.encode()
    h = {"Host": "127.0.0.1:%d" % port}
    if body or method == "POST":
        h["Content-Length"] = str(len(body))
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    return head.encode() + body


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request(port, method, path, body=b"", headers=None, timeout=60, on_chunk=None):
    """One request on a new connection; the answer (Response)."""
    s = connect(port, timeout)
    try:
        s.sendall(encode(method, path, body, headers, port))
        return Reader(s, time.time() + timeout).response(on_chunk)
    finally:
        s.close()


def post(port, path, obj, timeout=60):
    return request(port, "POST", path, json.dumps(obj), timeout=timeout)


def stream_text(r):
    """(text, problem) of a streamed completion/chat answer: problem is '' when
    the answer is 200, every event is JSON without an error, one choice ends
    with a finish_reason and the stream ends with [DONE]."""
    if r.status != 200:
        return None, "status %d: %s" % (r.status, r.body[:300])
    if not r.headers.get("content-type", "").startswith("text/event-stream"):
        return None, "content-type %r" % r.headers.get("content-type")
    ev = r.events()
    if not ev or ev[-1] != "[DONE]":
        return None, "the stream does not end with [DONE]: %r" % ev[-3:]
    text, finish = "", None
    for e in ev[:-1]:
        j = json.loads(e)
        if "error" in j:
            return None, "error event %s" % e
        for c in j["choices"]:
            if "delta" in c:
                text += c["delta"].get("content") or ""
            else:
                text += c["text"]
            if c.get("finish_reason"):
                finish = c["finish_reason"]
    if finish not in ("stop", "length"):
        return None, "no finish_reason in the stream"
    return text, ""


def path_of(kind):
    return "/v1/chat/completions" if kind == "chat" else "/v1/completions"


def body_of(model, kind, prompt, max_tokens, stream=True):
    b = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if kind == "chat":
        b["messages"] = [{"role": "user", "content": prompt}]
    else:
        b["prompt"] = prompt
    return b


def main():
    mode, bin_, root = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="strata-serve-%s." % mode)
    try:
        store = make_store(bin_, root, tmp)
        if mode == "load":
            import serve_load as t
        elif mode == "disconnect":
            import serve_disconnect as t
        elif mode == "shutdown":
            import serve_shutdown as t
        elif mode == "fuzz":
            import serve_fuzz as t
        else:
            raise SystemExit("unknown mode " + mode)
        return t.main(bin_, store, tmp, sys.argv[4:])
    finally:
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
