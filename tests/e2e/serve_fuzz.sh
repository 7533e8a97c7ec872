#!/usr/bin/env bash
# strata serve against 2000 seeded random requests (seed 1, after 300 of
# warm-up): random methods, paths, headers, truncated and oversized bodies,
# hostile JSON (wrong types in every field, deep nesting, huge numbers,
# NaN-like tokens, invalid UTF-8, giant stop lists, odd messages), valid
# requests mixed in. Every answer is well-formed HTTP, a 200 or an error of the
# documented shape; the server never crashes (a request that broke it is
# printed) and its RSS stays within 8 MiB of after the warm-up. (serve_fuzz.py)
# usage: serve_fuzz.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
PY=${STRATA_PYTHON3:-python3}
if [ ! -f "$ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf" ]; then
  echo "no $ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf (the tokenizer of the test model)"
  [ -n "${CI:-}" ] && exit 1
  exit 77
fi
exec "$PY" "$ROOT/tests/e2e/serve_client.py" fuzz "$BIN" "$ROOT"
