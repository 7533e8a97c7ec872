#!/usr/bin/env bash
# strata serve stopped under load: SIGTERM (streams longer than a 1 s
# --shutdown-timeout) and SIGINT (streams that finish within a 10 s one), with
# 2 streams running and 4 queued (--max-batch 2): exit 0 in time; running
# streams end with [DONE] after their last token or after a shutdown error
# event, queued ones with the error; new connections are refused or get 503;
# no client hangs. (serve_shutdown.py)
# usage: serve_shutdown.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
PY=${STRATA_PYTHON3:-python3}
if [ ! -f "$ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf" ]; then
  echo "no $ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf (the tokenizer of the test model)"
  [ -n "${CI:-}" ] && exit 1
  exit 77
fi
exec "$PY" "$ROOT/tests/e2e/serve_client.py" shutdown "$BIN" "$ROOT"
