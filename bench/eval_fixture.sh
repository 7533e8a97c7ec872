#!/usr/bin/env bash
# The seeds' tables in miniature: every example plan compiled over the trained
# fixture (tests/fixtures/kjv; every model id the plans name points to it), then
# `strata eval` of the fixture and of each variant on the held-out split.
#
#   bench/eval_fixture.sh [--strata build/strata] [--out DIR] [--ctx 512] [--threads N]
#                         [--extra NAME=HF_DIR]...
#
# --extra compiles another HF directory (for example the LLaMA Pro fine-tune of
# `scripts/fixture/train_fixture.py expand`) into the same store and scores it
# too, after `strata diff block-expansion-40 NAME`. Writes OUT/eval.json,
# OUT/eval.svg and OUT/eval.md (the table); OUT defaults to a temporary directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STRATA=$ROOT/build/strata OUT= CTX=512 THREADS=0
extras=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --strata) STRATA=$2; shift 2 ;;
  --out) OUT=$2; shift 2 ;;
  --ctx) CTX=$2; shift 2 ;;
  --threads) THREADS=$2; shift 2 ;;
  --extra) extras+=("$2"); shift 2 ;;
  -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "eval_fixture: unknown argument $1" >&2; exit 2 ;;
  esac
done
FIX=$ROOT/tests/fixtures/kjv
OUT=${OUT:-$(mktemp -d /tmp/eval-fixture.XXXXXX)}
mkdir -p "$OUT"
T=$(mktemp -d /tmp/eval-fixture-work.XXXXXX)
trap 'rm -rf "$T"' EXIT
export HF_HUB_CACHE=$T/hf STRATA_STORE=$T/store
# shellcheck source=../tests/e2e/fixture_common.bash
source "$ROOT/tests/e2e/fixture_common.bash"
mapfile -t ids < <(plan_model_ids "$ROOT"/examples/*.yml)
link_fixture_cache "$FIX" "$HF_HUB_CACHE" "${ids[@]}"

printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$FIX" >"$T/kjv.yml"
echo "\$ strata compile kjv.yml --name kjv   # models: [tests/fixtures/kjv]"
"$STRATA" compile "$T/kjv.yml" --name kjv | grep -E "stored" | tail -n 1
names=(kjv)
for p in block-expansion-40 solar-dus idus-8layer idus-1layer mistral-instruct-v0.3-dus; do
  echo "\$ strata compile examples/$p.yml"
  "$STRATA" compile "$ROOT/examples/$p.yml" | grep -E 'stored|read' | tail -n 1
  names+=("$p")
done
for e in "${extras[@]}"; do
  n=${e%%=*} dir=${e#*=}
  printf 'models:\n  - model: "%s"\nmerge_method: passthrough\n' "$(cd "$dir" && pwd)" >"$T/$n.yml"
  echo "\$ strata compile $n.yml --name $n   # models: [$dir]"
  "$STRATA" compile "$T/$n.yml" --name "$n" | grep -E 'stored' | tail -n 1
  echo "\$ strata diff block-expansion-40 $n --short"
  "$STRATA" diff block-expansion-40 "$n" --short | head -n 4
  names+=("$n")
done
echo "\$ strata du"
"$STRATA" du | tail -n 4
echo "\$ strata eval ${names[*]} --file tests/fixtures/kjv/heldout.txt --ctx $CTX"
"$STRATA" eval "${names[@]}" --file "$FIX/heldout.txt" --ctx "$CTX" --threads "$THREADS" -q --json \
  --svg "$OUT/eval.svg" >"$OUT/eval.json"
python3 - "$OUT/eval.json" <<'PY' | tee "$OUT/eval.md"
import json, sys
j = json.load(open(sys.argv[1]))
r = j["results"]
print(f"ctx {j['ctx']}, {r[0]['chunks']} chunks, {r[0]['scored_tokens']:,} scored tokens ({r[0]['scored_bytes']:,} bytes); {j['device']}\n")
print("| variant | layers (distinct) | PPL | vs kjv | bits/byte | scored tok/s |")
print("|---|---|---|---|---|---|")
for x in r:
    same = x["nll_sum"] == r[0]["nll_sum"]
    vs = "-" if x is r[0] else ("same, bit for bit" if same else f"{100 * (x['ppl'] / r[0]['ppl'] - 1):+.2f}%")
    print(f"| {x['variant']} | {x['layers']} ({x['distinct_layers']}) | {x['ppl']:.3f} +/- {x['ppl_error']:.3f} | {vs} | "
          f"{x['bits_per_byte']:.4f} | {x['scored_tokens_per_s']:,.0f} |")
PY
echo "wrote $OUT/eval.json, $OUT/eval.svg, $OUT/eval.md" >&2
