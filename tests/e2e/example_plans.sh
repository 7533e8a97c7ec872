#!/usr/bin/env bash
# End-to-end: every plan in examples/ against tiny synthetic models.
#
#   example_plans.sh STRATA_BIN PROJECT_ROOT
#
# For each referenced model id, `strata synth` writes a tiny 32-layer model into a
# private HF cache; each plan is compiled into one shared store, exported, and the
# export is checked byte for byte against tests/ref/mergekit_ref.py, an independent
# numpy model of mergekit's passthrough.  Store dedup is checked independently too:
# layer nodes per plan (`strata show --json`) and the blobs after each compile.
#
# Environment: STRATA_PYTHON3 (default /usr/bin/python3); STRATA_REF_ORDER
# (mergekit|plan, default mergekit: the tensor write order the reference assumes).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STRATA_BIN PROJECT_ROOT" >&2
  exit 2
fi
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
REF="$ROOT/tests/ref/mergekit_ref.py"
ORDER=${STRATA_REF_ORDER:-mergekit}
SHARD=2000000

T=$(mktemp -d "${TMPDIR:-/tmp}/strata-e2e.XXXXXX")
trap 'rm -rf "$T"' EXIT
HF="$T/hf"
STORE="$T/store"
mkdir -p "$HF" "$T/out" "$T/out-default" "$T/logs"

passed=0
failed=0
n_log=0

# check DESCRIPTION CMD...: run CMD, print one PASS/FAIL line (with its output on failure).
check() {
  local desc=$1
  shift
  n_log=$((n_log + 1))
  local log="$T/logs/$n_log"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "PASS $desc"
  else
    failed=$((failed + 1))
    echo "FAIL $desc"
    sed -e 's/^/    /' "$log" | tail -n 60
  fi
}

# check_v DESCRIPTION CMD...: like check, and a pass shows CMD's first output line.
check_v() {
  local desc=$1
  shift
  n_log=$((n_log + 1))
  local log="$T/logs/$n_log"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "PASS $desc: $(head -n 1 "$log")"
  else
    failed=$((failed + 1))
    echo "FAIL $desc"
    sed -e 's/^/    /' "$log" | tail -n 60
  fi
}

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
  if [[ "$2" == "$3" ]]; then
    passed=$((passed + 1))
    echo "PASS $1 ($3)"
  else
    failed=$((failed + 1))
    echo "FAIL $1: expected $2, got $3"
  fi
}

finish() {
  echo "$passed passed, $failed failed"
  if [[ $failed -eq 0 ]]; then exit 0; else exit 1; fi
}

# ref SUBCOMMAND ARGS...: a number from the reference, or a marker that fails any
# comparison (with the reference's error) if it could not compute one.
ref() {
  local out
  if out=$("$PY" "$REF" "$@" 2>"$T/logs/ref-err"); then
    echo "$out"
  else
    echo "<reference failed: $(tail -n 1 "$T/logs/ref-err")>"
  fi
}

if [[ ! -x "$STRATA" ]]; then
  echo "FAIL strata binary not found or not executable: $STRATA"
  failed=$((failed + 1))
  finish
fi

shopt -s nullglob
plans=("$ROOT"/examples/*.yml)
shopt -u nullglob
if [[ ${#plans[@]} -eq 0 ]]; then
  echo "FAIL no plans in $ROOT/examples"
  failed=$((failed + 1))
  finish
fi

# 1. synthesize every referenced model once
if ! "$PY" "$REF" models "${plans[@]}" >"$T/models" 2>"$T/logs/models"; then
  echo "FAIL reading model ids from the plans"
  sed -e 's/^/    /' "$T/logs/models"
  failed=$((failed + 1))
  finish
fi
mapfile -t models <"$T/models"
seed=0
for model in "${models[@]}"; do
  seed=$((seed + 1))
  arch=mistral
  [[ $model == "Cartinoe5930/Llama2_init_Mistral" ]] && arch=llama
  check "synth $model (--arch $arch --seed $seed)" \
    "$STRATA" synth --arch "$arch" --preset tiny --hf-cache "$HF" --as "$model" --seed "$seed"
done

# 2. compile, export and compare each plan
compiled=()
for plan in "${plans[@]}"; do
  name=$(basename "$plan" .yml)
  if ! HF_HUB_CACHE="$HF" "$STRATA" compile "$plan" --name "$name" --store "$STORE" \
      >"$T/logs/compile-$name" 2>&1; then
    failed=$((failed + 1))
    echo "FAIL compile $name"
    sed -e 's/^/    /' "$T/logs/compile-$name" | tail -n 60
    continue
  fi
  passed=$((passed + 1))
  echo "PASS compile $name"
  compiled+=("$plan")

  # store dedup: the tensor blobs so far are exactly the distinct source tensors read
  # by the plans so far (a scaled copy, as in block expansion, must not be stored);
  # the only other blobs allowed are plan files and config.json files.
  check_v "store blobs after compiling $name" \
    "$PY" "$REF" store-blobs "${compiled[@]}" --hf-cache "$HF" --blobs "$STORE/blobs"

  # layer nodes: distinct (source layer, scales) vs `strata show --json`
  if "$STRATA" show "$name" --json --store "$STORE" >"$T/show-$name.json" 2>"$T/logs/show-$name"; then
    want=$(ref distinct-layers "$plan" --hf-cache "$HF")
    got=$("$PY" -c 'import json,sys; print(len({l["layer"] for l in json.load(open(sys.argv[1]))["layers"]}))' \
      "$T/show-$name.json" 2>&1) || true
    expect_eq "distinct layer nodes of $name" "$want" "$got"
    check "show $name: layer sources and sharing" \
      "$PY" "$REF" check-show "$plan" --hf-cache "$HF" --show-json "$T/show-$name.json"
  else
    failed=$((failed + 1))
    echo "FAIL show $name --json"
    sed -e 's/^/    /' "$T/logs/show-$name" | tail -n 60
  fi

  check "export $name --shard-size $SHARD" \
    "$STRATA" export "$name" "$T/out/$name" --store "$STORE" --shard-size "$SHARD"
  if [[ -d "$T/out/$name" ]]; then
    check "compare $name (shard size $SHARD, order $ORDER)" \
      "$PY" "$REF" compare "$plan" --hf-cache "$HF" --export "$T/out/$name" \
      --shard-size "$SHARD" --order "$ORDER"
  fi

  # default shard size (mergekit's 5 GB): a single model.safetensors
  check "export $name (default shard size)" \
    "$STRATA" export "$name" "$T/out-default/$name" --store "$STORE"
  if [[ -d "$T/out-default/$name" ]]; then
    check "compare $name (default shard size)" \
      "$PY" "$REF" compare "$plan" --hf-cache "$HF" --export "$T/out-default/$name" \
      --order "$ORDER"
  fi
done

# 3. the whole store: one blob per distinct source tensor across all plans
want=$(ref source-blobs "${plans[@]}" --hf-cache "$HF")
if [[ -d "$STORE/blobs" ]]; then
  got=$("$PY" "$REF" store-blobs "${plans[@]}" --hf-cache "$HF" --blobs "$STORE/blobs" 2>&1 |
    head -n 1 | cut -d' ' -f1) || true
else
  got=0
fi
expect_eq "tensor blobs after compiling all plans" "$want" "$got"

finish
