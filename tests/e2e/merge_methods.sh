#!/usr/bin/env bash
# End-to-end: every merge method (docs/merge_methods.md) over tiny synthetic models.
#
#   merge_methods.sh STRATA_BIN PROJECT_ROOT
#
# - each plan is compiled into one shared store and exported; the export is checked
#   against tests/ref/merge_ref.py, an independent numpy model of mergekit's merge
#   methods: byte for byte, except slerp (mergekit's norms are float32 BLAS sums,
#   strata's float64: one unit in the last place allowed, the count reported);
# - a merge over stored sources stores recipes, not tensors: the store grows by
#   less than 1 MiB for a slerp of two stored models, and a DUS of a TIES merge
#   shares the merge's layer nodes;
# - the runtime computes a recipe as export does: the perplexity of a merge over
#   the trained fixture equals its exported checkpoint's, to the last bit;
# - bad plans fail with exit 1 naming plan:line, and leave the store as it was.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 STRATA_BIN PROJECT_ROOT" >&2
  exit 2
fi
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
REF="$ROOT/tests/ref/merge_ref.py"
FIX="$ROOT/tests/fixtures/kjv"

T=$(mktemp -d "${TMPDIR:-/tmp}/strata-merge.XXXXXX")
trap 'rm -rf "$T"' EXIT
export HF_HUB_CACHE="$T/hf" STRATA_STORE="$T/store"
mkdir -p "$T/hf" "$T/plans" "$T/out" "$T/logs"
# shellcheck source=check_common.bash
source "$ROOT/tests/e2e/check_common.bash"

# --- sources: bf16, f16 and f32 models of one shape -----------------------------------
synth() {  # synth ID SEED [DTYPE]
  "$STRATA" synth --preset tiny --layers 4 --hf-cache "$T/hf" --as "$1" --seed "$2" \
    --dtype "${3:-bfloat16}" -q >"$T/logs/synth-${1//\//-}" 2>&1 || bad "synth $1" "$T/logs/synth-${1//\//-}"
}
synth org/base 1
synth org/a 2
synth org/b 3
synth org/h0 4 float16
synth org/h1 5 float16
synth org/f0 6 float32
synth org/f1 7 float32

plan() {  # plan NAME LINE...: writes $T/plans/NAME.yml
  local name=$1
  shift
  printf '%s\n' "$@" >"$T/plans/$name.yml"
}

# check_merge NAME ULPS [--random-seed N]: compile, export, compare with the reference.
check_merge() {
  local name=$1 ulps=$2
  shift 2
  local log="$T/logs/$name"
  if ! "$STRATA" compile "$T/plans/$name.yml" --name "$name" -q "$@" >"$log" 2>&1; then
    bad "compile $name" "$log"
    return
  fi
  if ! "$STRATA" export "$name" "$T/out/$name" --shard-size 200000 -q >>"$log" 2>&1; then
    bad "export $name" "$log"
    return
  fi
  if "$PY" "$REF" compare "$T/plans/$name.yml" --hf-cache "$T/hf" --export "$T/out/$name" \
      --shard-size 200000 --ulps "$ulps" "$@" >"$log.ref" 2>&1; then
    ok "$name equals the reference ($(tail -n 1 "$log.ref"))"
  else
    bad "$name equals the reference" "$log.ref"
  fi
}

# --- every method ---------------------------------------------------------------------
plan linear \
  "merge_method: linear" \
  "models:" \
  "  - model: org/base" \
  "    parameters: {weight: 0.3}" \
  "  - model: org/a" \
  "    parameters: {weight: [0.2, 0.9]}" \
  "  - model: org/b" \
  "    parameters:" \
  "      weight:" \
  "        - filter: mlp" \
  "          value: 0.5" \
  "        - value: 1.5"
check_merge linear 0

plan linear_f16 \
  "merge_method: linear" \
  "models:" \
  "  - {model: org/h0, parameters: {weight: 1}}" \
  "  - {model: org/h1, parameters: {weight: 3}}" \
  "dtype: float32" \
  "out_dtype: float16"
check_merge linear_f16 0

plan linear_nonorm \
  "merge_method: linear" \
  "models:" \
  "  - {model: org/f0, parameters: {weight: 0.7}}" \
  "  - {model: org/f1, parameters: {weight: -0.2}}" \
  "parameters: {normalize: false}"
check_merge linear_nonorm 0

plan task_arithmetic \
  "merge_method: task_arithmetic" \
  "base_model: org/base" \
  "slices:" \
  "  - sources:" \
  "      - {model: org/base, layer_range: [0, 2]}" \
  "      - {model: org/a, layer_range: [0, 2], parameters: {weight: 0.6}}" \
  "      - {model: org/b, layer_range: [2, 4], parameters: {weight: 0.4}}" \
  "  - base_model: org/a" \
  "    sources:" \
  "      - {model: org/b, layer_range: [0, 2], parameters: {weight: 1.0}}" \
  "      - {model: org/a, layer_range: [2, 4]}" \
  "parameters: {lambda: 0.8}"
check_merge task_arithmetic 0

plan ties \
  "merge_method: ties" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a" \
  "    parameters: {weight: 0.6, density: 0.5}" \
  "  - model: org/b" \
  "    parameters:" \
  "      weight: [0.2, 0.8]" \
  "      density:" \
  "        - filter: self_attn" \
  "          value: 0.3" \
  "        - value: 0.9" \
  "dtype: bfloat16"
check_merge ties 0

plan ties_f16 \
  "merge_method: ties" \
  "base_model: org/h0" \
  "models:" \
  "  - {model: org/h1, parameters: {weight: 1, density: 0.4}}" \
  "  - {model: org/h0}" \
  "parameters: {normalize: false}"
check_merge ties_f16 0

plan dare_ties \
  "merge_method: dare_ties" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - {model: org/a, parameters: {weight: 0.5, density: 0.53}}" \
  "  - {model: org/b, parameters: {weight: 0.5, density: [0.3, 0.7]}}"
check_merge dare_ties 0 --random-seed 7

plan dare_linear \
  "merge_method: dare_linear" \
  "base_model: org/f0" \
  "models:" \
  "  - {model: org/f0}" \
  "  - {model: org/f1, parameters: {weight: 1, density: 0.25}}" \
  "parameters: {rescale: true}" \
  "dtype: float16"
check_merge dare_linear 0

plan breadcrumbs \
  "merge_method: breadcrumbs" \
  "base_model: org/base" \
  "models:" \
  "  - {model: org/base}" \
  "  - {model: org/a, parameters: {weight: 1, density: 0.8, gamma: 0.05}}" \
  "  - {model: org/b, parameters: {weight: 0.5, density: 0.6, gamma: 0.1}}"
check_merge breadcrumbs 0

plan breadcrumbs_ties \
  "merge_method: breadcrumbs_ties" \
  "base_model: org/base" \
  "models:" \
  "  - {model: org/base}" \
  "  - {model: org/a, parameters: {weight: 1, density: 0.7, gamma: 0.02}}" \
  "  - {model: org/b, parameters: {weight: 1, density: 0.9, gamma: 0.01}}"
check_merge breadcrumbs_ties 0

plan della \
  "merge_method: della" \
  "base_model: org/base" \
  "models:" \
  "  - {model: org/base}" \
  "  - {model: org/a, parameters: {weight: 1, density: 0.5, epsilon: 0.1}}" \
  "  - {model: org/b, parameters: {weight: 0.7, density: 0.6}}" \
  "parameters: {lambda: 1.1}"
check_merge della 0 --random-seed 3

plan della_linear \
  "merge_method: della_linear" \
  "base_model: org/h0" \
  "models:" \
  "  - {model: org/h0}" \
  "  - {model: org/h1, parameters: {weight: 0.8, density: 0.4, epsilon: 0.2}}"
check_merge della_linear 0

plan slerp \
  "merge_method: slerp" \
  "base_model: org/base" \
  "slices:" \
  "  - sources:" \
  "      - {model: org/base, layer_range: [0, 4]}" \
  "      - {model: org/a, layer_range: [0, 4]}" \
  "parameters:" \
  "  t:" \
  "    - filter: self_attn" \
  "      value: [0, 0.5, 0.3, 0.7, 1]" \
  "    - filter: mlp" \
  "      value: [1, 0.5, 0.7, 0.3, 0]" \
  "    - value: 0.5"
check_merge slerp 1
# mergekit's slerp under NumPy 2 works out theta, s0 and s1 in float32 (NumPy 1: float64, as
# strata): within one unit in the last place of bf16 on a small fraction of the elements.
if "$PY" "$REF" compare "$T/plans/slerp.yml" --hf-cache "$T/hf" --export "$T/out/slerp" --shard-size 200000 \
    --ulps 1 --slerp-scalars f32 >"$T/logs/slerp-f32" 2>&1; then
  ok "slerp within 1 ulp of float32 scalars ($(grep -m1 'slerp:' "$T/logs/slerp-f32" || tail -n 1 "$T/logs/slerp-f32"))"
else
  bad "slerp within 1 ulp of float32 scalars" "$T/logs/slerp-f32"
fi

plan slerp_f32 \
  "merge_method: slerp" \
  "base_model: org/f1" \
  "models:" \
  "  - model: org/f0" \
  "  - model: org/f1" \
  "parameters: {t: 0.3}" \
  "out_dtype: bfloat16"
check_merge slerp_f32 1

plan nearswap \
  "merge_method: nearswap" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/a" \
  "  - model: org/base" \
  "parameters:" \
  "  t:" \
  "    - filter: mlp" \
  "      value: [0.0005, 0.02]" \
  "    - value: 0.004"
check_merge nearswap 0

plan nearswap_f16 \
  "merge_method: nearswap" \
  "base_model: org/h0" \
  "models:" \
  "  - model: org/h0" \
  "  - model: org/h1" \
  "parameters: {t: 0.001}"
check_merge nearswap_f16 0

plan ram \
  "merge_method: ram" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a" \
  "  - model: org/b" \
  "parameters:" \
  "  epsilon:" \
  "    - filter: self_attn" \
  "      value: 0.03" \
  "    - value: 0.015"
check_merge ram 0

plan ram_f32 \
  "merge_method: ram" \
  "base_model: org/f0" \
  "models:" \
  "  - model: org/f0" \
  "  - model: org/f1" \
  "  - model: org/h0" \
  "dtype: float32" \
  "out_dtype: bfloat16"
check_merge ram_f32 0

plan model_stock \
  "merge_method: model_stock" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a" \
  "  - model: org/b"
check_merge model_stock 1

plan model_stock_rows \
  "merge_method: model_stock" \
  "base_model: org/h0" \
  "models:" \
  "  - model: org/a" \
  "  - model: org/h1" \
  "  - model: org/f0" \
  "  - model: org/h0" \
  "parameters: {filter_wise: true}" \
  "dtype: float16"
check_merge model_stock_rows 1

plan sce \
  "merge_method: sce" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a" \
  "  - model: org/b" \
  "parameters:" \
  "  select_topk:" \
  "    - filter: mlp" \
  "      value: 0.3" \
  "    - value: [0.5, 1]"
check_merge sce 1

plan sce_f32 \
  "merge_method: sce" \
  "base_model: org/f1" \
  "models:" \
  "  - model: org/f1" \
  "  - model: org/f0" \
  "parameters: {int8_mask: true}"
check_merge sce_f32 1

plan nuslerp \
  "merge_method: nuslerp" \
  "models:" \
  "  - model: org/a" \
  "    parameters: {weight: [0.2, 0.8]}" \
  "  - model: org/b" \
  "    parameters: {weight: 0.5}"
check_merge nuslerp 1

plan nuslerp_rows \
  "merge_method: nuslerp" \
  "base_model: org/h0" \
  "models:" \
  "  - {model: org/h1, parameters: {weight: 1}}" \
  "  - {model: org/f0, parameters: {weight: 2}}" \
  "parameters: {nuslerp_flatten: false}" \
  "dtype: float16"
check_merge nuslerp_rows 1

plan nuslerp_cols \
  "merge_method: nuslerp" \
  "base_model: org/f1" \
  "models:" \
  "  - {model: org/f1}" \
  "  - {model: org/f0, parameters: {weight: 0.3}}" \
  "  - {model: org/base, parameters: {weight: 0.6}}" \
  "parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}" \
  "dtype: float32" \
  "out_dtype: bfloat16"
check_merge nuslerp_cols 1

plan multislerp \
  "merge_method: multislerp" \
  "models:" \
  "  - {model: org/base, parameters: {weight: 0.5}}" \
  "  - {model: org/a, parameters: {weight: [0.2, 1]}}" \
  "  - {model: org/b, parameters: {weight: 0.3}}"
check_merge multislerp 1

plan multislerp_base \
  "merge_method: multislerp" \
  "base_model: org/f0" \
  "models:" \
  "  - {model: org/f1, parameters: {weight: 0.7}}" \
  "  - {model: org/h0, parameters: {weight: 0.6}}" \
  "  - {model: org/h1, parameters: {weight: 0.2}}" \
  "parameters: {normalize_weights: false}" \
  "dtype: float32"
check_merge multislerp_base 1

plan karcher \
  "merge_method: karcher" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/a" \
  "  - model: org/b"
check_merge karcher 1

plan karcher_f16 \
  "merge_method: karcher" \
  "models:" \
  "  - model: org/h0" \
  "  - model: org/h1" \
  "parameters:" \
  "  max_iter: 3" \
  "  tol:" \
  "    - filter: mlp" \
  "      value: 0.01" \
  "    - value: 0.000001"
check_merge karcher_f16 1

plan arcee_fusion \
  "merge_method: arcee_fusion" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a"
check_merge arcee_fusion 1

plan arcee_fusion_f16 \
  "merge_method: arcee_fusion" \
  "base_model: org/h1" \
  "models:" \
  "  - model: org/h0" \
  "out_dtype: bfloat16"
check_merge arcee_fusion_f16 1

plan arcee_fusion_f32 \
  "merge_method: arcee_fusion" \
  "base_model: org/f0" \
  "models:" \
  "  - model: org/f1" \
  "dtype: float32"
check_merge arcee_fusion_f32 1

# --- recipes, not tensors -------------------------------------------------------------
store_bytes() { du -sb "$STRATA_STORE" | cut -f1; }
plan stack_ties \
  "merge_method: ties" \
  "base_model: org/base" \
  "slices:" \
  "  - sources:" \
  "      - {model: org/base, layer_range: [0, 3]}" \
  "      - {model: org/a, layer_range: [0, 3], parameters: {weight: 0.6, density: 0.5}}" \
  "  - sources:" \
  "      - {model: org/base, layer_range: [1, 4]}" \
  "      - {model: org/a, layer_range: [1, 4], parameters: {weight: 0.6, density: 0.5}}"
check_merge stack_ties 0
# Layers 1-2 of the second slice are layers 1-2 of the first (same inputs, same t-free
# parameters): the same layer nodes.
"$STRATA" show stack_ties --json >"$T/show.json" 2>"$T/logs/show" || bad "show stack_ties" "$T/logs/show"
if [[ $(json_get "$T/show.json" "[l['layer'] for l in j['layers']][1:3] == [l['layer'] for l in j['layers']][3:5] and len(set(l['layer'] for l in j['layers'])) == 4") == True ]]; then
  ok "a DUS of a TIES merge shares the merge's layer nodes (6 layers, 4 distinct)"
else
  bad "a DUS of a TIES merge shares the merge's layer nodes" "$T/show.json"
fi

# Two models of 8 layers, hidden 256 (about 16 MB each), stored; then their slerp.
for m in big0 big1; do
  "$STRATA" synth --preset tiny --layers 8 --hidden 256 --heads 4 --kv-heads 2 --intermediate 1024 \
    --hf-cache "$T/hf" --as "org/$m" --seed "${#m}${m: -1}" -q >"$T/logs/synth-$m" 2>&1 || bad "synth org/$m" "$T/logs/synth-$m"
  plan "$m" "merge_method: passthrough" "models:" "  - model: org/$m"
  "$STRATA" compile "$T/plans/$m.yml" --name "$m" -q >"$T/logs/$m" 2>&1 || bad "compile $m" "$T/logs/$m"
done
plan slerp_big \
  "merge_method: slerp" \
  "base_model: org/big0" \
  "models:" \
  "  - model: org/big0" \
  "  - model: org/big1" \
  "parameters: {t: [0, 0.4, 1]}"
before=$(store_bytes)
"$STRATA" compile "$T/plans/slerp_big.yml" --name slerp_big -q >"$T/logs/slerp_big" 2>&1 ||
  bad "compile slerp_big" "$T/logs/slerp_big"
grown=$(($(store_bytes) - before))
model=$(du -sbL "$T/hf/models--org--big0/snapshots" | cut -f1)
if ((grown < 1048576 && model > 10 * 1048576)); then
  ok "a slerp of two stored models grows the store by $grown bytes (< 1 MiB; one model is $model bytes)"
else
  bad "a slerp of two stored models grows the store by $grown bytes (< 1 MiB? one model is $model bytes)" "$T/logs/slerp_big"
fi
"$STRATA" verify -q >"$T/logs/verify" 2>&1 && ok "verify: the store with merge nodes is clean" || bad "verify is clean" "$T/logs/verify"

# --- bad plans: exit 1, plan:line, the store as it was ---------------------------------
refs_before=$("$STRATA" ls --json)
expect_error() {  # expect_error NAME REGEX
  local log="$T/logs/err-$1" rc=0
  "$STRATA" compile "$T/plans/$1.yml" --name "$1" -q >"$log" 2>&1 || rc=$?
  if [[ $rc == 1 ]] && grep -Eq "$2" "$log" && [[ $("$STRATA" ls --json) == "$refs_before" ]]; then
    ok "$1 is refused: $(grep -Eo "$2" "$log" | head -n 1)"
  else
    echo "    exit status $rc; wanted /$2/" >>"$log"
    bad "$1 is refused with /$2/" "$log"
  fi
}
plan bad_slerp3 \
  "merge_method: slerp" \
  "base_model: org/base" \
  "parameters: {t: 0.5}" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a" \
  "  - model: org/b"
expect_error bad_slerp3 "bad_slerp3.yml:5:3: models: has 3 sources; merge_method slerp takes exactly 2"
plan bad_nobase \
  "merge_method: ties" \
  "models:" \
  "  - {model: org/a, parameters: {weight: 1}}" \
  "  - {model: org/b, parameters: {weight: 1}}"
expect_error bad_nobase "bad_nobase.yml:3:3: merge_method ties needs a base_model"
plan bad_density \
  "merge_method: dare_ties" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - {model: org/a, parameters: {weight: 1, density: 0}}"
expect_error bad_density "bad_density.yml:5:53: density 0(\\.0)? for .* is outside \\(0, 1\\]"
plan bad_zero \
  "merge_method: linear" \
  "models:" \
  "  - {model: org/a, parameters: {weight: 1}}" \
  "  - {model: org/b, parameters: {weight: -1}}"
expect_error bad_zero "bad_zero.yml:3:3: the weights of the models merged into .* sum to 0"
plan bad_t \
  "merge_method: slerp" \
  "base_model: org/a" \
  "models:" \
  "  - model: org/a" \
  "  - model: org/b"
expect_error bad_t "bad_t.yml:4:3: merge_method slerp needs parameter \"t\""
plan bad_epsilon \
  "merge_method: della" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - {model: org/a, parameters: {weight: 1, density: 0.9}}"
expect_error bad_epsilon "bad_epsilon.yml:5:53: density 0.9 with epsilon 0.15 .* must lie inside \\(0, 1\\)"
plan bad_topk \
  "merge_method: ties" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - {model: org/a, parameters: {weight: 1, density: 0.01}}"
expect_error bad_topk "bad_topk.yml:5:53: density 0.01 keeps int\\(density \\* 64\\) = 0 elements"
# The last slice's norm and lm_head come from its first models, as many as the first slice has.
plan bad_zip \
  "merge_method: task_arithmetic" \
  "slices:" \
  "  - sources:" \
  "      - {model: org/a, layer_range: [0, 2], parameters: {weight: 1}}" \
  "  - base_model: org/base" \
  "    sources:" \
  "      - {model: org/a, layer_range: [2, 4], parameters: {weight: 1}}" \
  "      - {model: org/base, layer_range: [2, 4]}" \
  "base_model: org/a"
expect_error bad_zip "bad_zip.yml:5:5: merge_method task_arithmetic merges \"model.norm.weight\" from the first 1 source"
plan bad_stock2 \
  "merge_method: model_stock" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a"
expect_error bad_stock2 "bad_stock2.yml:4:3: models: has 2 sources; merge_method model_stock takes at least 3"
plan bad_swap3 \
  "merge_method: nearswap" \
  "base_model: org/base" \
  "parameters: {t: 0.1}" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/a" \
  "  - model: org/b"
expect_error bad_swap3 "bad_swap3.yml:5:3: models: has 3 sources; merge_method nearswap takes exactly 2"
plan bad_ram_dtypes \
  "merge_method: ram" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/base" \
  "  - model: org/h0"
expect_error bad_ram_dtypes "ram of \"[^\"]+\": the models store it as BF16 and F16; give the plan a dtype:"
plan bad_nuslerp3 \
  "merge_method: nuslerp" \
  "models:" \
  "  - {model: org/base, parameters: {weight: 1}}" \
  "  - {model: org/a, parameters: {weight: 1}}" \
  "  - {model: org/b, parameters: {weight: 1}}"
expect_error bad_nuslerp3 "bad_nuslerp3.yml:3:3: models: has 3 models; merge_method nuslerp takes exactly 2 \\(and an optional base_model\\)"
plan bad_nuslerp_base \
  "merge_method: nuslerp" \
  "base_model: org/base" \
  "slices:" \
  "  - sources:" \
  "      - {model: org/a, layer_range: [0, 4], parameters: {weight: 1}}" \
  "      - {model: org/b, layer_range: [0, 4], parameters: {weight: 1}}"
expect_error bad_nuslerp_base "bad_nuslerp_base.yml:4:5: base_model \"org/base\" is not a source of slice 0; merge_method nuslerp merges 2 models onto the base"
plan bad_karcher_iter \
  "merge_method: karcher" \
  "models:" \
  "  - model: org/a" \
  "  - model: org/b" \
  "parameters: {max_iter: 2.5}"
expect_error bad_karcher_iter "bad_karcher_iter.yml:5:24: karcher's max_iter 2.5 for \"model.embed_tokens.weight\" is not a whole number"
plan bad_arcee3 \
  "merge_method: arcee_fusion" \
  "base_model: org/base" \
  "models:" \
  "  - model: org/a" \
  "  - model: org/b"
expect_error bad_arcee3 "bad_arcee3.yml:4:3: models: has 3 sources; merge_method arcee_fusion takes exactly 2"
plan bad_multislerp_weight \
  "merge_method: multislerp" \
  "models:" \
  "  - {model: org/a, parameters: {weight: 1}}" \
  "  - model: org/b"
expect_error bad_multislerp_weight "merge_method multislerp needs parameter \"weight\" for model \"org/b\""
"$STRATA" synth --preset tiny --layers 4 --hidden 128 --hf-cache "$T/hf" --as org/wide --seed 8 -q \
  >"$T/logs/synth-wide" 2>&1 || bad "synth org/wide" "$T/logs/synth-wide"
plan bad_shape \
  "merge_method: linear" \
  "models:" \
  "  - {model: org/a, parameters: {weight: 1}}" \
  "  - {model: org/wide, parameters: {weight: 1}}"
expect_error bad_shape "shapes disagree: output tensor \"[^\"]+\" merges"

# --- the runtime computes recipes as export does ---------------------------------------
# A merge of the trained fixture with a synthetic model of its shape: the recipe
# variant and its exported checkpoint score the same to the last bit.
"$STRATA" synth --preset tiny --layers 32 --hidden 96 --heads 3 --kv-heads 1 --intermediate 256 \
  --vocab 4096 --hf-cache "$T/hf" --as org/noise --seed 9 -q >"$T/logs/noise" 2>&1 || bad "synth org/noise" "$T/logs/noise"
for m in ties slerp sce arcee_fusion nuslerp; do
  if [[ $m == arcee_fusion ]]; then  # its result is float32: the runtime runs F32 weights beside bf16 ones
    plan "fix_$m" "merge_method: arcee_fusion" "base_model: \"$FIX\"" "models:" "  - model: org/noise"
  elif [[ $m == nuslerp ]]; then
    plan "fix_$m" "merge_method: nuslerp" "models:" "  - {model: \"$FIX\", parameters: {weight: 0.8}}" \
      "  - {model: org/noise, parameters: {weight: 0.2}}" "parameters: {nuslerp_flatten: false}"
  elif [[ $m == ties ]]; then
    plan "fix_$m" "merge_method: ties" "base_model: \"$FIX\"" "models:" "  - model: \"$FIX\"" \
      "  - {model: org/noise, parameters: {weight: 0.3, density: 0.5}}"
  elif [[ $m == sce ]]; then
    plan "fix_$m" "merge_method: sce" "base_model: \"$FIX\"" "models:" "  - model: \"$FIX\"" \
      "  - model: org/noise" "parameters: {select_topk: 0.4}"
  else
    plan "fix_$m" "merge_method: slerp" "base_model: \"$FIX\"" "models:" "  - model: \"$FIX\"" \
      "  - model: org/noise" "parameters: {t: 0.2}"
  fi
  log="$T/logs/fix_$m"
  if ! "$STRATA" compile "$T/plans/fix_$m.yml" --name "fix_$m" -q >"$log" 2>&1 ||
    ! "$STRATA" export "fix_$m" "$T/out/fix_$m" -q >>"$log" 2>&1; then
    bad "compile and export fix_$m" "$log"
    continue
  fi
  if "$STRATA" eval "fix_$m" "$T/out/fix_$m" --file "$FIX/heldout.txt" --ctx 128 --chunks 4 --json -q \
      >"$T/eval-$m.json" 2>>"$log"; then
    same=$(json_get "$T/eval-$m.json" "j['results'][0]['nll_sum'] == j['results'][1]['nll_sum'] and j['results'][0]['ppl'] == j['results'][1]['ppl']")
    ppl=$(json_get "$T/eval-$m.json" "j['results'][0]['ppl']")
    if [[ $same == True ]]; then
      ok "fixture $m: the recipe variant scores as its export, to the last bit (ppl $ppl)"
    else
      bad "fixture $m: the recipe variant scores as its export" "$T/eval-$m.json"
    fi
  else
    bad "eval fix_$m against its export" "$log"
  fi
done

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
