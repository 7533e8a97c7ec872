#!/usr/bin/env bash
# End-to-end: `strata eval` on the trained fixture (tests/fixtures/kjv) and on
# every example plan compiled over it.
#
#   eval_fixture.sh STRATA_BIN PROJECT_ROOT
#
# - the fixture's held-out perplexity equals the one torch recorded at training
#   time (training.json) within 1e-3 relative, and the float64 numpy reference
#   (tests/ref/perplexity_ref.py) within 1e-4 on the first 24 chunks (1e-6 with the
#   avx2 kernels, whose activations stay float32);
# - block-expansion-40 scores exactly as the base (the same NLL to the last bit),
#   a DUS does not;
# - --json, --svg and the table agree; bad input fails cleanly with exit 1.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STRATA_BIN PROJECT_ROOT" >&2
  exit 2
fi
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
FIX="$ROOT/tests/fixtures/kjv"
# shellcheck source=fixture_common.bash
source "$ROOT/tests/e2e/fixture_common.bash"

T=$(mktemp -d "${TMPDIR:-/tmp}/strata-eval.XXXXXX")
trap 'rm -rf "$T"' EXIT
export HF_HUB_CACHE="$T/hf" STRATA_STORE="$T/store"
# shellcheck source=check_common.bash
source "$ROOT/tests/e2e/check_common.bash"

# --- the fixture itself against torch and the float64 reference ---------------------
printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$FIX" >"$T/kjv.yml"
"$STRATA" compile "$T/kjv.yml" --name kjv >"$T/compile-base.log" 2>&1 || bad "compile the fixture" "$T/compile-base.log"
if "$STRATA" eval kjv --file "$FIX/heldout.txt" --json -q >"$T/base.json" 2>"$T/base.err"; then
  rel=$(json_get "$T/base.json" "abs(j['results'][0]['ppl'] / json.load(open('$FIX/training.json'))['torch_perplexity']['512']['ppl'] - 1)")
  if "$PY" -c "import sys; sys.exit(0 if float('$rel') < 1e-3 else 1)"; then
    ok "held-out perplexity equals torch's (relative difference $rel < 1e-3)"
  else
    bad "held-out perplexity equals torch's: relative difference $rel" "$T/base.json"
  fi
  n_tok=$(json_get "$T/base.json" "j['results'][0]['text_tokens']")
  n_ids=$(($(stat -c %s "$FIX/heldout.ids") / 2))
  [[ $n_tok == "$n_ids" ]] && ok "the text tokenizes to the $n_ids tokens training recorded" ||
    bad "the text tokenizes to $n_tok tokens, training recorded $n_ids"
else
  bad "strata eval kjv" "$T/base.err"
fi

# The float64 reference: the default kernels (bf16 activations on the bf16 tiers)
# within 1e-4; the avx2 tier (float32 activations, every x86-64 machine) within 1e-6.
CH=24
if "$PY" "$ROOT/tests/ref/perplexity_ref.py" "$FIX" --ids "$FIX/heldout.ids" --ctx 512 --chunks $CH >"$T/ref.json" 2>"$T/ref.err"; then
  for tier in default avx2; do
    if [[ $tier == default ]]; then tol=1e-4; env=(); else tol=1e-6; env=(STRATA_CPU_KERNELS=avx2); fi
    env "${env[@]}" "$STRATA" eval kjv --file "$FIX/heldout.txt" --chunks $CH --json -q >"$T/base-$tier.json" 2>&1 ||
      bad "eval --chunks $CH ($tier kernels)" "$T/base-$tier.json"
    rel=$("$PY" -c "import json; a=json.load(open('$T/base-$tier.json'))['results'][0]; b=json.load(open('$T/ref.json')); \
assert a['scored_tokens']==b['scored_tokens'], (a['scored_tokens'], b['scored_tokens']); print(abs(a['ppl']/b['ppl']-1))")
    if "$PY" -c "import sys; sys.exit(0 if float('$rel') < $tol else 1)"; then
      ok "perplexity over $CH chunks ($tier kernels) equals the float64 numpy reference (relative difference $rel < $tol)"
    else
      bad "perplexity ($tier kernels) equals the float64 reference: relative difference $rel, limit $tol" "$T/ref.json"
    fi
  done
else
  bad "tests/ref/perplexity_ref.py" "$T/ref.err"
fi

# --- the example plans over the fixture ----------------------------------------------
mapfile -t ids < <(plan_model_ids "$ROOT"/examples/*.yml)
link_fixture_cache "$FIX" "$HF_HUB_CACHE" "${ids[@]}"
for p in "$ROOT"/examples/*.yml; do
  "$STRATA" compile "$p" >"$T/compile.log" 2>&1 || bad "compile $(basename "$p")" "$T/compile.log"
done
if "$STRATA" eval kjv block-expansion-40 solar-dus idus-1layer --file "$FIX/heldout.txt" --chunks 8 --json -q \
  --svg "$T/eval.svg" >"$T/plans.json" 2>"$T/plans.err"; then
  "$PY" - "$T/plans.json" >"$T/plans.check" 2>&1 <<'EOF' && ok "block-expansion-40 scores exactly as the base; the DUS and iDUS do not" || bad "block expansion equals the base, DUS differs" "$T/plans.check"
import json, sys
r = {x["variant"]: x for x in json.load(open(sys.argv[1]))["results"]}
b, be = r["kjv"], r["block-expansion-40"]
assert be["layers"] == 40 and b["layers"] == 32, (be["layers"], b["layers"])
assert be["nll_sum"] == b["nll_sum"] and be["ppl"] == b["ppl"], (be["nll_sum"], b["nll_sum"])
for v in ("solar-dus", "idus-1layer"):
    assert r[v]["layers"] == 48, r[v]["layers"]
    assert r[v]["nll_sum"] != b["nll_sum"], v
    assert r[v]["scored_tokens"] == b["scored_tokens"], v
print("ok", {k: round(x["ppl"], 4) for k, x in r.items()})
EOF
  if grep -q '<svg' "$T/eval.svg" && grep -q 'block-expansion-40' "$T/eval.svg" && "$PY" -c "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])" "$T/eval.svg"; then
    ok "--svg writes a well-formed chart naming every variant"
  else
    bad "--svg chart" "$T/eval.svg"
  fi
else
  bad "strata eval over the example plans" "$T/plans.err"
fi
if "$STRATA" eval kjv block-expansion-40 --file "$FIX/heldout.txt" --chunks 2 -q >"$T/table.txt" 2>&1 &&
  grep -qE '^block-expansion-40 +40 .* same ' "$T/table.txt" && grep -q 'llama-perplexity' "$T/table.txt"; then
  ok "the table marks block-expansion-40 as the same as the base"
else
  bad "the table" "$T/table.txt"
fi

# --- bad input: exit 1, a message that says what is wrong, nothing written ------------
: >"$T/empty.txt"
head -c 1500 "$FIX/heldout.txt" >"$T/short.txt"
{ head -c 5000 "$FIX/heldout.txt"; printf 'and the \xff\xfe LORD'; head -c 300000 "$FIX/heldout.txt"; } >"$T/bad-utf8.txt"
expect_fail() {  # DESCRIPTION PATTERN ARGS...
  local desc=$1 pat=$2 rc=0
  shift 2
  "$STRATA" eval "$@" -q >"$T/fail.out" 2>&1 || rc=$?
  if [[ $rc == 1 ]] && grep -qE -- "$pat" "$T/fail.out" && [[ ! -e $T/never.svg ]]; then
    ok "$desc"
  else
    bad "$desc (exit $rc)" "$T/fail.out"
  fi
}
expect_fail "an empty file" "empty.txt is empty" kjv --file "$T/empty.txt" --svg "$T/never.svg"
expect_fail "a file shorter than two chunks" "needs at least 1024" kjv --file "$T/short.txt" --svg "$T/never.svg"
expect_fail "invalid UTF-8, with its byte offset" "not valid UTF-8: byte 5008 \(line [0-9]+, column [0-9]+\)" \
  kjv --file "$T/bad-utf8.txt" --svg "$T/never.svg"
expect_fail "ctx past the model's context" "ctx 1024 is past the model's context of 512" \
  kjv --file "$FIX/heldout.txt" --ctx 1024 --svg "$T/never.svg"
expect_fail "a missing file" "missing.txt does not exist" kjv --file "$T/missing.txt"
expect_fail "an unknown variant" "no-such-variant" kjv no-such-variant --file "$FIX/heldout.txt"
rc=0
"$STRATA" eval --file "$FIX/heldout.txt" >"$T/usage.out" 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "name at least one variant" "$T/usage.out" && ok "no variant: usage error (exit 2)" ||
  bad "no variant: exit $rc" "$T/usage.out"

echo "eval_fixture: $passed passed, $failed failed"
[[ $failed == 0 ]]
