"""serve_fuzz.sh's test: a seeded stream of random requests (methods, paths,
headers, truncated and oversized bodies, hostile JSON, valid requests mixed
in) against a live `strata serve`. Every answer must be well-formed HTTP: a
200 (JSON, or an event stream ending with [DONE]) or an error of the
documented status with the body {"error":{"message","type","param","code"}}.
The server must never crash (it answers /health at the end) nor grow (RSS).
A request that broke it is printed whole (repr) to replay."""
import json
import random
import socket
import time

from serve_client import Checks, BadHttp, Reader, Server, connect

STATUSES = {200, 400, 401, 404, 405, 408, 413, 429, 431, 503, 504}
TYPES = {"invalid_request_error", "authentication_error", "not_found_error", "rate_limit_error", "unavailable_error",
         "timeout_error", "server_error"}
MAX_BODY = 65536
PATHS = ["/v1/completions", "/v1/chat/completions", "/health", "/metrics", "/v1/models", "/", "/v1", "/v1/completions/",
         "/v1/completions?x=1", "/v1/chat/completions?stream=true", "//v1/completions", "/v1/../health", "/%00",
         "/" + "a" * 3000, "*", "http://127.0.0.1/v1/completions", "/v1/embeddings", "/\xff"]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FOO", "post", "G\tT"]
FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed",
          "stop", "n", "best_of", "logprobs", "top_logprobs", "stream", "stream_options", "repetition_penalty",
          "ignore_eos", "presence_penalty", "frequency_penalty", "logit_bias", "tools", "tool_choice", "user",
          "metadata", "echo", "suffix", "response_format", "", "\u0000", "modèl"]
ODD = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "99999999999999999999999999", "-0", "0x10", "01",
       "1.", ".5", "+1", "true", "null", "[]", "{}", '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "tru", "nul", '"',
       "[1,]", "{,}", "1 2"]


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def string(self):
        r = self.r
        k = r.randrange(10)
        if k == 0:
            return ""
        if k == 1:
            return "".join(chr(r.choice([r.randrange(32, 127), r.randrange(0x80, 0x800), r.randrange(0x800, 0xd7ff),
                                         r.randrange(0x10000, 0x10ffff)])) for _ in range(r.randrange(1, 40)))
        if k == 2:
            return "x" * r.choice([1000, 20000])
        if k == 3:
            return "<s></s>[INST]<|im_start|>{{ raise }}{% for %}"
        if k == 4:
            return "\n\t\r\x00\x1b"
        return " ".join(r.choice(["hello", "world", "the", "cat", "東京", "ü", "42", "<unk>"]) for _ in range(r.randrange(1, 8)))

    def value(self, depth=0):
        r = self.r
        k = r.randrange(12 if depth < 4 else 8)
        if k == 0:
            return None
        if k == 1:
            return r.choice([True, False])
        if k == 2:
            return r.choice([0, 1, -1, 2, 3, 16, 255, 4096, 2 ** 31, -2 ** 31, 2 ** 63, -2 ** 63 - 1, 10 ** 30, 7])
        if k == 3:
            return r.choice([0.0, -0.0, 0.5, 1e-300, 1e300, -3.5, 2.0000001, 1.5])
        if k in (4, 5, 6, 7):
            return self.string()
        if k in (8, 9):
            return [self.value(depth + 1) for _ in range(r.randrange(0, 6))]
        return {self.r.choice(FIELDS + ["role", "content", "type", "text"]): self.value(depth + 1)
                for _ in range(r.randrange(0, 5))}

    def messages(self):
        r = self.r
        out = []
        for _ in range(r.randrange(0, 5)):
            m = {"role": r.choice(["user", "assistant", "system", "tool", "developer", "function", "", "USER", 7, None]),
                 "content": r.choice([self.string(), None, [], [{"type": "text", "text": self.string()}],
                                      [{"type": "image_url", "image_url": {"url": "x"}}], [{"type": "text"}],
                                      [{"text": 1}], {"a": 1}, 12])}
            if r.random() < 0.2:
                m[r.choice(["name", "tool_calls", "tool_call_id", "extra"])] = self.value(2)
            if r.random() < 0.1:
                m = self.value(2)
            out.append(m)
        return out

    def valid(self):
        r = self.r
        b = {"model": r.choice(["base", "dus", "expand"]), "max_tokens": r.randint(1, 24),
             "temperature": r.choice([0, 0.7, 1.0]), "stream": r.random() < 0.5}
        if r.random() < 0.5:
            b["messages"] = [{"role": "user", "content": self.string()[:200] or "hi"}]
            return "/v1/chat/completions", b
        b["prompt"] = r.choice([self.string()[:200] or "hi", ["a", "b c"], [1, 2, 3], [[5, 6], [7]]])
        if r.random() < 0.3:
            b["stop"] = r.choice(["\n", ["a", "e", " ", "x"], "the"])
        if r.random() < 0.2:
            b["logprobs"] = r.randint(0, 5)
        if r.random() < 0.2:
            b["seed"] = r.randint(0, 1000)
        if r.random() < 0.2:
            b["stream_options"] = {"include_usage": True}
        return "/v1/completions", b

    def body_json(self):
        """A JSON request body: valid, or a valid one with fields broken."""
        r = self.r
        path, b = self.valid()
        for _ in range(r.randrange(0, 4)):
            f = r.choice(FIELDS)
            b[f] = self.messages() if f == "messages" and r.random() < 0.5 else self.value()
        if r.random() < 0.1:
            b["stop"] = [self.string()[:20] for _ in range(r.choice([5, 100, 5000]))]
        deep = r.choice([50, 600, 20000]) if r.random() < 0.05 else 0
        if deep:
            b[r.choice(FIELDS)] = "@DEEP@"
        if r.random() < 0.1:
            b["max_tokens"] = r.choice([-1, 0, -2 ** 40, 2 ** 40, 1.5, "5", None])
        text = json.dumps(b, ensure_ascii=r.random() < 0.5)
        if deep:
            text = text.replace('"@DEEP@"', r.choice(["[", '{"a":']) * deep + "0" + "]" * deep)
        if r.random() < 0.15:  # a non-JSON token where a number or string was
            text = text.replace(r.choice(["0", "1", "true", "false", "null", '"base"']), r.choice(ODD), 1)
        raw = text.encode("utf-8", "surrogatepass")
        if r.random() < 0.08:  # invalid UTF-8 inside a string
            i = raw.rfind(b'"', 0, max(1, len(raw) - 2))
            raw = raw[:i] + r.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]) + raw[i:]
        if r.random() < 0.05:
            raw = raw[: r.randrange(len(raw))]  # cut JSON, right length
        return path, raw

    def request(self):
        """(bytes to send, kind): kind 'plain', 'truncated' (the body may be
        shorter than the headers say: the write side is then shut) or
        'oversized'."""
        r = self.r
        kind = "plain"
        k = r.randrange(100)
        if k < 45:
            path, body = self.body_json()
            method = "POST"
        elif k < 60:
            path, b = self.valid()
            body, method = json.dumps(b).encode(), "POST"
        elif k < 75:
            method, path = r.choice(METHODS), r.choice(PATHS)
            body = r.choice([b"", b"{}", b"null", b"[1,2]", self.body_json()[1]])
        elif k < 82:
            path, body = self.body_json()
            method, kind = "POST", "truncated"
        elif k < 86:
            path, method, kind = r.choice(["/v1/completions", "/v1/chat/completions"]), "POST", "oversized"
            body = b'{"model":"base","prompt":"' + b"y" * r.choice([MAX_BODY, 3 * MAX_BODY]) + b'"}'
        else:
            method, path = r.choice(["POST", "GET"]), r.choice(PATHS[:5])
            body = self.body_json()[1] if method == "POST" else b""
        headers = [("Host", "127.0.0.1")]
        cl = str(len(body))
        if kind == "truncated":
            cl = str(len(body) + r.randint(1, 500))
        chunked = False
        if r.random() < 0.12:  # the body may then be shorter than the server expects
            kind = "truncated" if kind == "plain" else kind
            cl = r.choice(["abc", "-1", "", "99999999999999999999", "1e3", " 5", "0x10", cl + ", " + cl])
        if r.random() < 0.06:
            chunked = True
            kind = "truncated" if kind == "plain" else kind
        if not chunked or r.random() < 0.3:
            headers.append(("Content-Length", cl))
        if chunked:
            headers.append(("Transfer-Encoding", r.choice(["chunked", "gzip, chunked", "identity", "chunked, chunked"])))
        if r.random() < 0.2:
            headers.append(("Content-Type", r.choice(["text/plain", "application/json; charset=latin1", "", "\x7f"])))
        for _ in range(r.choice([0, 0, 0, 1, 3, 30])):
            headers.append((r.choice(["X-A", "Authorization", "Connection", "Expect", "Accept", "Host", "X-\xe9", "Bad Name",
                                      "Upgrade", "Cookie"]),
                            r.choice(["", "close", "keep-alive", "100-continue", "Bearer x", "h2c", "\xe9\xff",
                                      "v" * r.choice([10, 5000, 70000])])))
        version = r.choice(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""])
        head = ("%s %s %s\r\n" % (method, path, version)).encode("latin-1", "replace")
        head += b"".join(("%s: %s\r\n" % kv).encode("latin-1", "replace") for kv in headers) + b"\r\n"
        if chunked:
            body = b"%x\r\n" % len(body) + body + b"\r\n" + r.choice([b"0\r\n\r\n", b"zz\r\n", b"", b"5\r\nab"])
        if r.random() < 0.03:
            head = head.replace(b"\r\n", b"\n")
        return head + body, kind


SEEN = {}  # status (or 'none': closed unanswered) -> count


def check_answer(raw, kind, sock):
    """'' when the server's answer to `raw` is acceptable, else what is wrong."""
    rd = Reader(sock, time.time() + 30)
    try:
        resp = rd.response()
        SEEN[resp.status] = SEEN.get(resp.status, 0) + 1
    except EOFError:
        SEEN["none"] = SEEN.get("none", 0) + 1
        # A client that sent an incomplete request and shut its side may get
        # no answer; so may one whose oversized body was refused mid-send.
        return "" if kind in ("truncated", "oversized") or not rd.buf else "closed after %r" % rd.buf[:200]
    except (ConnectionResetError, BrokenPipeError):
        return "" if kind == "oversized" else "connection reset"
    except (BadHttp, ValueError) as e:
        return "malformed answer: %s" % e
    except socket.timeout:
        return "no answer in 30 s"
    if resp.status not in STATUSES:
        return "status %d: %r" % (resp.status, resp.body[:300])
    ctype = resp.headers.get("content-type", "")
    if resp.status == 200:
        if ctype.startswith("text/event-stream"):
            try:
                ev = resp.events()
                if not ev or ev[-1] != "[DONE]":
                    return "stream without [DONE]"
                for e in ev[:-1]:
                    json.loads(e)
            except ValueError as e:
                return "bad event stream: %s" % e
            return ""
        try:
            json.loads(resp.body) if ctype.startswith("application/json") else None
        except ValueError:
            return "200 with a body that is not JSON: %r" % resp.body[:200]
        return ""
    try:
        e = json.loads(resp.body)["error"]
        if not (isinstance(e.get("message"), str) and e.get("type") in TYPES and set(e) == {"message", "type", "param", "code"}
                and (e["param"] is None or isinstance(e["param"], str)) and (e["code"] is None or isinstance(e["code"], str))):
            return "error body of the wrong shape: %r" % resp.body[:300]
    except (ValueError, KeyError, TypeError):
        return "%d with a body that is not the error JSON: %r" % (resp.status, resp.body[:300])
    if kind == "oversized" and resp.status not in (413, 400, 431):
        return "oversized body answered %d" % resp.status
    return ""


def send_one(port, raw, kind):
    s = connect(port, 10)
    try:
        try:
            s.sendall(raw)
            if kind == "truncated":
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:  # the server answered and closed already
                    pass
        except (ConnectionResetError, BrokenPipeError):
            if kind != "oversized":
                return "reset while sending"
        return check_answer(raw, kind, s)
    finally:
        s.close()


def run(c, srv, seed, count, label):
    g = Gen(seed)
    problems = 0
    SEEN.clear()
    for i in range(count):
        raw, kind = g.request()
        try:
            p = send_one(srv.port, raw, kind)
        except OSError as e:
            p = "cannot connect: %s" % e
        if not srv.alive():
            c.bad("%s: request %d crashed the server (exit %s); it was (%s):\n%r\n%s" %
                  (label, i, srv.proc.returncode, kind, raw[:4000], srv.log()[-2000:]))
            return False
        if p:
            problems += 1
            if problems <= 10:
                c.bad("%s: request %d (%s): %s\n  request: %r" % (label, i, kind, p, raw[:1500]))
    c.check(problems == 0, "%s: %d random requests (seed %d) all answered well-formed" % (label, count, seed),
            "%d bad answers" % problems)
    print("%s: answers by status %r" % (label, sorted(SEEN.items(), key=str)))
    if label == "fuzz":
        c.check(SEEN.get(200, 0) >= 200 and SEEN.get(400, 0) >= 200 and SEEN.get(413, 0) > 0 and
                SEEN.get(404, 0) > 0 and SEEN.get(405, 0) > 0, "fuzz: the mix reaches generation and every refusal path",
                repr(SEEN))
    return True


def main(bin_, store, tmp, args):
    c = Checks()
    seed, count = 1, 2000
    print("seed %d, %d requests" % (seed, count))
    srv = Server(bin_, store, tmp, ["--ctx", "256", "--max-body", str(MAX_BODY), "--max-queue", "64"])
    try:
        t0 = time.time()
        alive = run(c, srv, 1000 + seed, 300, "warm-up")
        time.sleep(0.3)
        rss0 = srv.rss_kib() if alive else 0
        alive = alive and run(c, srv, seed, count, "fuzz")
        print("took %.1f s" % (time.time() - t0))
        if alive:
            time.sleep(0.3)
            rss1 = srv.rss_kib()
            print("RSS after warm-up %d KiB, after the run %d KiB" % (rss0, rss1))
            c.check(rss1 - rss0 < 8 * 1024, "RSS after the run within 8 MiB of after the warm-up", "%d -> %d KiB" % (rss0, rss1))
            p = srv.wait_idle(5)
            c.check(not p, "/metrics afterwards: nothing running, queued or holding KV", p)
            s = connect(srv.port)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            c.check(Reader(s, time.time() + 10).response().status == 200, "the server still answers /health")
            s.close()
    finally:
        rc = srv.stop()
    c.check(rc == 0, "SIGTERM: exit 0", "exit %s" % rc)
    return c.finish()
