#!/usr/bin/env bash
# strata serve and clients that leave: a long stream closed (FIN, and reset)
# after a few events, a long non-streaming request abandoned, running and
# queued streams closed at once, half requests: each is logged with 499, its
# sequence and KV blocks are freed within seconds (/metrics) and the server
# keeps serving the same output; 48 idle and byte-a-second connections do not
# delay other requests; SIGTERM then exits 0 at once. (serve_disconnect.py)
# usage: serve_disconnect.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
PY=${STRATA_PYTHON3:-python3}
if [ ! -f "$ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf" ]; then
  echo "no $ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf (the tokenizer of the test model)"
  [ -n "${CI:-}" ] && exit 1
  exit 77
fi
exec "$PY" "$ROOT/tests/e2e/serve_client.py" disconnect "$BIN" "$ROOT"
