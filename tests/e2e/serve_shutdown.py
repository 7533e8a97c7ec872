"""serve_shutdown.sh's test: SIGTERM and SIGINT while streams run and others
wait (--max-batch 2). The server exits 0 within --shutdown-timeout plus a
little; every stream ends with [DONE], after its last token or after an error
event saying the server is shutting down; new connections are refused or get
503; no client hangs."""
import errno
import json
import signal
import threading
import time

from serve_client import Checks, Reader, Server, body_of, connect, encode, request


def client(port, model, max_tokens, out, i):
    """One streaming completion; out[i] = ('done' | 'shutdown' | 'problem', detail)."""
    try:
        r = request(port, "POST", "/v1/completions", json.dumps(body_of(model, "completions", "story %d" % i, max_tokens)),
                    timeout=40)
        if r.status == 503:
            j = r.json()
            out[i] = ("shutdown", "503 before the stream") if j["error"]["type"] == "unavailable_error" else (
                "problem", r.body[:300])
            return
        if r.status != 200:
            out[i] = ("problem", "status %d %s" % (r.status, r.body[:300]))
            return
        ev = r.events()
        if not ev or ev[-1] != "[DONE]":
            out[i] = ("problem", "no [DONE] at the end: %r" % ev[-2:])
            return
        js = [json.loads(e) for e in ev[:-1]]
        errs = [j for j in js if "error" in j]
        if errs:
            ok = len(errs) == 1 and "error" in js[-1] and js[-1]["error"]["type"] == "unavailable_error" and \
                "shutting down" in js[-1]["error"]["message"]
            out[i] = ("shutdown", "%d events" % len(js)) if ok else ("problem", "error events %r" % errs)
            return
        fin = [c["finish_reason"] for j in js for c in j["choices"] if c.get("finish_reason")]
        out[i] = ("done", fin) if fin in (["length"], ["stop"]) else ("problem", "finish reasons %r" % fin)
    except Exception as e:
        out[i] = ("problem", "%s: %s" % (type(e).__name__, e))


def after_stop_problem(port):
    """'' when a new connection is refused, closed unanswered, or answered 503."""
    try:
        s = connect(port, 5)
    except OSError as e:
        return "" if e.errno in (errno.ECONNREFUSED, errno.ECONNRESET) else "connect: %s" % e
    try:
        s.sendall(encode("POST", "/v1/completions", json.dumps(body_of("base", "completions", "late", 4)), port=port))
        r = Reader(s, time.time() + 10).response()
        return "" if r.status == 503 else "status %d %s" % (r.status, r.body[:200])
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return ""
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()


def round_(c, bin_, store, tmp, sig, timeout_s, max_tokens, want):
    name = signal.Signals(sig).name
    srv = Server(bin_, store, tmp, ["--ctx", "4096", "--max-batch", "2", "--shutdown-timeout", str(timeout_s)], tag=name)
    n = 6
    out = [None] * n
    threads = [threading.Thread(target=client, args=(srv.port, ["base", "dus", "expand"][i % 3], max_tokens, out, i))
               for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.time() + 10
    m = {}
    while time.time() < deadline:
        m = srv.metrics()
        if m.get("strata_active_sequences") == 2 and m.get("strata_queue_depth") == n - 2:
            break
        time.sleep(0.01)
    c.check(m.get("strata_active_sequences") == 2 and m.get("strata_queue_depth") == n - 2,
            "%s: 2 streams run and %d wait before the signal" % (name, n - 2), repr(m))
    t0 = time.time()
    srv.proc.send_signal(sig)
    time.sleep(0.1)
    late = [after_stop_problem(srv.port) for _ in range(3)]
    c.check(not any(late), "%s: new connections after the signal are refused or get 503" % name, repr(late))
    try:
        rc = srv.proc.wait(timeout_s + 10)
    except Exception:
        rc = "still running"
    took = time.time() - t0
    c.check(rc == 0 and took < timeout_s + 4, "%s: exit 0 within --shutdown-timeout %g s + 4 s" % (name, timeout_s),
            "exit %s after %.1f s" % (rc, took))
    print("%s: exited after %.2f s" % (name, took))
    if want == "done":
        c.check(took < 4, "%s: with nothing left to run it does not wait out the timeout" % name, "%.1f s" % took)
    for t in threads:
        t.join(20)
    c.check(not any(t.is_alive() for t in threads), "%s: no client hangs" % name)
    kinds = [o[0] if o else "problem" for o in out]
    c.check("problem" not in kinds, "%s: every stream ends with [DONE], finished or after a shutdown error event" % name,
            repr(out))
    c.check(kinds.count("shutdown") >= n - 2, "%s: the %d queued streams end with the shutdown error" % (name, n - 2),
            repr(out))
    c.check(want in kinds and (want != "done" or kinds.count("done") == 2),
            "%s: the running streams %s" % (name, "finish within the timeout" if want == "done" else
                                               "are ended by the timeout with the error"), repr(out))
    srv.stop()
    log = srv.log()
    c.check("strata serve: shutting down" in log, "%s: the log says it is shutting down" % name, log[-500:])


def main(bin_, store, tmp, args):
    c = Checks()
    # SIGTERM: the running streams (4000 tokens) outlast a 1 s --shutdown-timeout.
    round_(c, bin_, store, tmp, signal.SIGTERM, 1, 4000, "shutdown")
    # SIGINT: the running streams (300 tokens) finish within a 10 s one.
    round_(c, bin_, store, tmp, signal.SIGINT, 10, 300, "done")
    return c.finish()
