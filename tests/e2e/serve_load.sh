#!/usr/bin/env bash
# strata serve under load: 32 concurrent streaming clients, 480 requests over
# three variants (base, DUS, block expansion) of one store, completions and
# chat; every stream ends with [DONE] and equals the same request run alone
# (and `strata run`'s text for a few, with batch invariant kernels); the RSS
# after the load is within 8 MiB of after a warm-up round; /metrics shows
# nothing running, queued or holding KV afterwards. (serve_load.py)
# usage: serve_load.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
PY=${STRATA_PYTHON3:-python3}
if [ ! -f "$ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf" ]; then
  echo "no $ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf (the tokenizer of the test model)"
  [ -n "${CI:-}" ] && exit 1
  exit 77
fi
exec "$PY" "$ROOT/tests/e2e/serve_client.py" load "$BIN" "$ROOT"
