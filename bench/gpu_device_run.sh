#!/bin/bash
# ONE device call of the GPU checks (issue 16), staged by bench/gpu_stage.sh (read it first):
# gpu_test, then the 7B bench (bench/gpu_bench.sh, HF transformers on the base only), then
# the tiny/small comparisons and serve/eval (bench/gpu_check.sh), then memcheck, each cut to
# what is left of BUDGET seconds (default 520). Everything lands in $OUT/results.tar.gz;
# the verdicts and the table are printed at the end (the tool returns the output tail).
# env: BUDGET=520 TT=120 (gpu_test limit) BD=250 (bench deadline) HFV=base (HF rows)
#      BENCH=0 (no 7B bench) PRESETS="tiny small"
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SRC=$(cat .gpu/source_dir)   # STRATA_SOURCE_DIR compiled into gpu_test
[ "$ROOT" = "$SRC" ] || { mkdir -p "$(dirname "$SRC")" && ln -sfn "$ROOT" "$SRC"; }
export PYTHONUNBUFFERED=1
B=$ROOT/.gpu/build
R=/tmp/res; rm -rf $R; mkdir -p $R
T0=$(date +%s)
left() { echo $(( ${BUDGET:-520} - ($(date +%s) - T0) )); }
# cuBLAS for dlopen: beside the binary (RPATH $ORIGIN/lib) when not on the default path
if ! ldconfig -p | grep -q 'libcublas.so.13 '; then
  c=$(find /usr/local/cuda*/ /opt /usr/lib /usr/local/lib -name 'libcublas.so.13' 2>/dev/null | head -1)
  [ -n "$c" ] && for f in $(dirname "$c")/libcublas*.so.13; do ln -sf "$f" $B/lib/; done
  echo "cublas: $c"
fi
{ nvidia-smi; ldd $B/strata; $B/strata --version; df -h /tmp; } > $R/env0.txt 2>&1
head -20 $R/env0.txt | grep -i "H200\|not found\|strata"
fin() {
  cat $R/*/summary.txt 2>/dev/null | grep -v '^INFO strata'
  cat $R/bench/table.md 2>/dev/null
  tar czf $OUT/results.tar.gz -C $R . 2>/dev/null
}
trap fin EXIT
PARTS=test TEST_TIMEOUT=${TT:-120} WORK=/tmp/gc bash bench/gpu_check.sh $B $R/check-test > /dev/null 2>&1
grep -h "^\[  FAILED  \] [A-Za-z]" $R/check-test/gpu_test.log | head -30
echo "== test done $(( $(date +%s) - T0 ))s"
[ "${BENCH:-1}" = 1 ] && { DEADLINE=${BD:-250} HF_VARIANTS=${HFV:-base} WORK=/tmp/gb bash bench/gpu_bench.sh $B $R/bench > $R/bench-stdout.txt 2>&1; echo "== bench done $(( $(date +%s) - T0 ))s"; }
l=$(left); [ $l -gt 60 ] && PARTS="small serve" PRESETS="${PRESETS:-tiny small}" VOCAB_GGUF=$ROOT/.gpu/vocab/ggml-vocab-llama-spm.gguf WORK=/tmp/gc timeout $(( l - 40 )) bash bench/gpu_check.sh $B $R/check-small > /dev/null 2>&1
echo "== small/serve done $(( $(date +%s) - T0 ))s"
l=$(left); [ $l -gt 30 ] && PARTS=sanitize SAN_TIMEOUT=$(( l - 20 )) WORK=/tmp/gc bash bench/gpu_check.sh $B $R/check-san > /dev/null 2>&1
echo "== all done $(( $(date +%s) - T0 ))s"
