#!/usr/bin/env bash
# `strata serve` through the official `openai` npm client (serve_openai.mjs):
# the model list, chat (plain and streamed) and completions against
# `strata run`'s greedy text on a base, its DUS and its block expansion, and
# the client's error classes. Needs node and the npm registry (CI has both).
# usage: serve_openai.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
T=$(mktemp -d)
source "$ROOT/tests/e2e/serve_common.bash"
trap serve_cleanup EXIT
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

need_shared
command -v node > /dev/null && command -v npm > /dev/null || skip_or_fail "no node/npm (node 20)"
[ "$(node -e 'console.log(process.versions.node.split(".")[0] >= 18 ? 1 : 0)')" = 1 ] || skip_or_fail "node $(node --version) is older than 18"

# The client installs while the model is built and the references run.
mkdir -p "$T/node"
(cd "$T/node" && npm install --prefix "$T/node" --no-audit --no-fund --loglevel=error openai@4 > "$T/npm.log" 2>&1) &
npm_pid=$!

make_variants
export STRATA_BATCH_INVARIANT=1
P="Once upon a time"
CHAT="Tell me about the sea."
N=24
for v in base dus block-expansion; do
  "$BIN" run "$v" --prompt "$P" -n $N --json --store "$T/store" > "$T/run-$v.json" || bad "strata run $v"
done
"$BIN" run base --chat --prompt "$CHAT" -n $N --json --store "$T/store" > "$T/run-chat.json" || bad "strata run --chat"
$PY -c "
import json, sys
t = sys.argv[1]
e = {'prompt': sys.argv[2], 'chat_prompt': sys.argv[3], 'n': int(sys.argv[4]), 'base_params': int(sys.argv[5]), 'run': {}}
for v in ['base', 'dus', 'block-expansion', 'chat']:
    e['run'][v] = json.load(open(t + '/run-' + v + '.json'))
json.dump(e, open(t + '/expect.json', 'w'))" "$T" "$P" "$CHAT" $N "$BASE_PARAMS" || bad "expectations"

serve_start "$T/serve.log" --batch-invariant || exit 1
serve_ready "$SERVE_PORT" || exit 1

if ! wait $npm_pid; then
  cat "$T/npm.log"
  skip_or_fail "npm install openai@4 failed (no registry?)"
fi
cp "$ROOT/tests/e2e/serve_openai.mjs" "$T/node/"
node "$T/node/serve_openai.mjs" "http://127.0.0.1:$SERVE_PORT/v1" "$T/expect.json" > "$T/node.out" 2>&1
rc=$?
cat "$T/node.out"
pass=$((pass + $(grep -c '^ok: ' "$T/node.out")))
fail=$((fail + $(grep -c '^FAIL: ' "$T/node.out")))
[ $rc -eq 0 ] || [ "$(grep -c '^FAIL: ' "$T/node.out")" -gt 0 ] || bad "serve_openai.mjs exited $rc"
grep -q '^done$' "$T/node.out" || bad "serve_openai.mjs did not finish"

serve_stop "$SERVE_PID"
rc=$?
[ $rc -eq 0 ] && ok "SIGTERM: exit 0" || bad "SIGTERM: exit $rc: $(tail -3 "$T/serve.log")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
