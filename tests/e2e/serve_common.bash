# Shared by the serve_*.sh end-to-end tests (sourced; not a test itself: ctest
# picks up only *.sh): prerequisites, a tiny Llama with a real tokenizer and
# chat template compiled as three variants, and servers on free ports.
# The sourcing script sets BIN, ROOT and T, and defines ok/bad.
PY=${STRATA_PYTHON3:-/usr/bin/python3}
SHARED=$ROOT/../shared
VOCAB=$SHARED/vocab/ggml-vocab-llama-spm.gguf
TEMPLATES=$SHARED/templates
SERVE_PIDS=""

# A missing prerequisite: fails in CI, skips (77) elsewhere.
skip_or_fail() {
  if [ -n "${CI:-}" ]; then
    echo "FAIL: $1 (required when \$CI is set)"
    exit 1
  fi
  echo "SKIP: $1"
  exit 77
}

need_shared() {
  [ -f "$VOCAB" ] || skip_or_fail "no $VOCAB (the shared vocabularies)"
  [ -f "$TEMPLATES/meta-llama-Llama-2-7b-chat-hf.jinja" ] || skip_or_fail "no $TEMPLATES (the shared chat templates)"
  command -v curl > /dev/null || skip_or_fail "no curl (scripts/install-deps.sh installs it)"
}

# Stops every server still running, then removes $T.
serve_cleanup() {
  local p
  for p in $SERVE_PIDS; do kill "$p" 2> /dev/null; done
  for p in $SERVE_PIDS; do wait "$p" 2> /dev/null; done
  rm -rf "$T"
}

# The model $T/m (Llama-2's chat template) and the variants base (4 layers),
# dus (6: layers 0-2 then 1-3) and block-expansion (6: 0-3, then layer 3
# twice with o_proj and down_proj zeroed) in $T/store. Sets BASE_PARAMS.
make_variants() {
  "$BIN" synth --arch llama --layers 4 -q --tokenizer llama-spm --vocab-gguf "$VOCAB" --out "$T/m" --json > "$T/synth.json" ||
    { echo "FAIL: synth"; exit 1; }
  BASE_PARAMS=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['parameters'])" "$T/synth.json")
  $PY -c "
import json, sys
p = sys.argv[1] + '/tokenizer_config.json'
c = json.load(open(p))
c['chat_template'] = open(sys.argv[2]).read()
json.dump(c, open(p, 'w'), indent=2)" "$T/m" "$TEMPLATES/meta-llama-Llama-2-7b-chat-hf.jinja" || { echo "FAIL: setting chat_template"; exit 1; }
  printf '%s\n' "models:" "  - model: $T/m" "merge_method: passthrough" "dtype: bfloat16" > "$T/base.yml"
  printf '%s\n' "slices:" "  - sources:" "    - model: $T/m" "      layer_range: [0, 3]" \
    "  - sources:" "    - model: $T/m" "      layer_range: [1, 4]" "merge_method: passthrough" "dtype: bfloat16" > "$T/dus.yml"
  local zero=("      parameters:" "        scale:" "          - filter: o_proj" "            value: 0.0"
    "          - filter: down_proj" "            value: 0.0" "          - value: 1.0")
  printf '%s\n' "slices:" "  - sources:" "    - model: $T/m" "      layer_range: [0, 4]" \
    "  - sources:" "    - model: $T/m" "      layer_range: [3, 4]" "${zero[@]}" \
    "  - sources:" "    - model: $T/m" "      layer_range: [3, 4]" "${zero[@]}" \
    "merge_method: passthrough" "dtype: bfloat16" > "$T/block-expansion.yml"
  local v
  for v in base dus block-expansion; do
    "$BIN" compile "$T/$v.yml" --name "$v" --store "$T/store" -q > /dev/null || { echo "FAIL: compile $v"; exit 1; }
  done
}

# serve_start LOG [serve options...]: starts `strata serve` on a free port
# (env assignments before the call reach it); sets SERVE_PID and SERVE_PORT
# once the port is printed. Returns 1 if no port appears within 20 s.
serve_start() {
  local log=$1 i
  shift
  : > "$log"
  "$BIN" serve --store "$T/store" --port 0 "$@" 2> "$log" &
  SERVE_PID=$!
  SERVE_PIDS="$SERVE_PIDS $SERVE_PID"
  SERVE_PORT=""
  for i in $(seq 200); do
    SERVE_PORT=$(sed -n 's/^strata serve: loading .* on port \([0-9][0-9]*\) .*/\1/p' "$log")
    [ -n "$SERVE_PORT" ] && return 0
    kill -0 "$SERVE_PID" 2> /dev/null || break
    sleep 0.1
  done
  echo "FAIL: no port from strata serve $*: $(cat "$log")"
  return 1
}

# serve_ready PORT: waits (up to 30 s) for GET /health to answer 200.
serve_ready() {
  local i
  for i in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health")" = 200 ] && return 0
    sleep 0.1
  done
  echo "FAIL: /health on port $1 never answered 200"
  return 1
}

# serve_stop PID: SIGTERM, then its exit status (after at most 20 s: 124).
serve_stop() {
  local i
  kill -TERM "$1" 2> /dev/null
  for i in $(seq 200); do
    kill -0 "$1" 2> /dev/null || break
    sleep 0.1
  done
  if kill -0 "$1" 2> /dev/null; then
    kill -KILL "$1"
    wait "$1" 2> /dev/null
    return 124
  fi
  wait "$1"
}
