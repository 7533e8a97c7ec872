#!/usr/bin/env bash
# Issue 5's benchmark in ONE device call (< 10 minutes) on a machine with an
# NVIDIA GPU: strata against HF transformers on a synthetic mistral-7b base, its
# SOLAR DUS (48 layers) and its 40-layer block expansion. Builds nothing: give it
# a build directory made with the CUDA backend.
#
# usage: bench/gpu_bench.sh BUILD_DIR [OUT_DIR]     (OUT_DIR: default $OUT, else /tmp/strata-gpu-bench)
# env:   WORK=/tmp/strata-gpu-bench-work   scratch: synthetic base, store, one export at a time
#                                          (mistral-7b: 29 GB, then 14.5 + 21.5 = 36 GB at the peak:
#                                          the source is deleted after its HF run, before the exports)
#        PYTHON=python3                    with torch + transformers (the HF rows)
#        DEV=cuda                          DEV=cpu: a dry run of the plumbing (no bound, no targets)
#        PRESET=mistral-7b                 synth preset (tiny | small | mistral-7b)
#        PREFILLS=512,2048 DECODE=256      (DEV=cpu: 16,32 and 8)
#        SKIP_HF=1                         strata rows only (no exports, no transformers)
#        HF_VARIANTS="base solar-dus block-expansion-40"   the variants with an HF row
#        DEADLINE=570                      seconds from the start after which no step starts
#                                          (each step's timeout is cut to what is left)
#
# Steps: synth the base into WORK; compile base, examples/solar-dus.yml and
# examples/block-expansion-40.yml (openchat's id linked to the same files);
# `strata bench --device $DEV --prefill $PREFILLS --decode $DECODE --json` on each (cold
# load: page cache of the blobs dropped), and on cuda the base again with --no-graphs
# (warm) for the launch-gap A/B; then for each model bench/decode_bytes.py (weight bytes
# per token from the safetensors headers) and bench/hf_bench.py (bf16, greedy generate,
# cold TTFT) on the synthetic base and on `strata export`s of the two variants, made one
# at a time and deleted after use; finally bench/bench_table.py prints the table and the
# checks (decode >= 85% of the bound for base and DUS, block-exp within 3% of the base,
# decode bytes consistent).
# Output in OUT_DIR: summary.txt (PASS/FAIL/INFO), table.md, env.log, strata.jsonl,
# strata-nographs.jsonl, hf.jsonl, decode_bytes.jsonl, sass-gemv.txt and the stderr logs
# *.log; on cuda (PACK=1) all but summary.txt and table.md go into raw.tar.gz, as the
# device machine returns at most 8 files. Unpack it into bench/results/ for the record.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [OUT_DIR]" >&2; exit 2; }
BUILD=$(realpath "$1")
OUTD=${2:-${OUT:-/tmp/strata-gpu-bench}}
mkdir -p "$OUTD"
OUTD=$(realpath "$OUTD")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$BUILD/strata
WORK=${WORK:-/tmp/strata-gpu-bench-work}
PY=${PYTHON:-python3}
DEV=${DEV:-cuda}
PRESET=${PRESET:-mistral-7b}
if [ "$DEV" = cuda ]; then PREFILLS=${PREFILLS:-512,2048} DECODE=${DECODE:-256}
else PREFILLS=${PREFILLS:-16,32} DECODE=${DECODE:-8}; fi
SKIP_HF=${SKIP_HF:-0}
DEADLINE=${DEADLINE:-570}
SUMMARY=$OUTD/summary.txt
LOG=$OUTD/steps.log
: > "$LOG"
for f in strata.jsonl strata-nographs.jsonl hf.jsonl decode_bytes.jsonl; do : > "$OUTD/$f"; done
. "$ROOT/bench/report.sh"
# cap N: N seconds, or what is left before DEADLINE (less a margin), whichever is smaller.
# Never 0: `timeout 0` means no limit.
cap() { local left=$(( DEADLINE - ($(date +%s) - T0) - 10 )); [ $left -lt 1 ] && left=1; [ $left -lt $1 ] && echo $left || echo $1; }
# in_time N LABEL: false (and an INFO line) when fewer than N seconds are left.
in_time() { [ "$(cap 100000)" -ge "$1" ] || { info "$2: skipped, $(elapsed) of the ${DEADLINE}s deadline used"; return 1; }; }

[ -x "$BIN" ] || { bad "no strata binary at $BIN"; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
{
  date; uname -a; nproc; free -g; df -h "$WORK"
  [ "$DEV" = cuda ] && { nvidia-smi || true; }
  "$BIN" --version
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')" || true
} > "$OUTD/env.log" 2>&1
info "strata $("$BIN" --version 2>&1), build $BUILD, DEV=$DEV PRESET=$PRESET PREFILLS=$PREFILLS DECODE=$DECODE, disk free $(df -h --output=avail "$WORK" | tail -1 | tr -d ' ')"

export HF_HUB_CACHE=$WORK/hf STRATA_STORE=$WORK/store
ID=mistralai/Mistral-7B-v0.1
SRC=$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1
# ------------------------------------------------------------ synth + compile
printf 'models:\n  - model: %s\nmerge_method: passthrough\ndtype: bfloat16\n' $ID > "$WORK/base.yml"
if timeout "$(cap 240)" "$BIN" synth --arch mistral --preset "$PRESET" --hf-cache "$HF_HUB_CACHE" --as $ID -q >> "$LOG" 2>&1 &&
   ln -s "$SRC" "$HF_HUB_CACHE/models--openchat--openchat-3.5-0106" &&
   timeout "$(cap 240)" "$BIN" compile "$WORK/base.yml" --name base -q >> "$LOG" 2>&1 &&
   timeout "$(cap 60)" "$BIN" compile "$ROOT/examples/solar-dus.yml" --name solar-dus -q >> "$LOG" 2>&1 &&
   timeout "$(cap 60)" "$BIN" compile "$ROOT/examples/block-expansion-40.yml" --name block-expansion-40 -q >> "$LOG" 2>&1; then
  info "$PRESET synthesized, base, solar-dus and block-expansion-40 compiled ($(elapsed))"
else
  bad "synth/compile failed (see steps.log)"
  say "done in $(elapsed): $npass passed, $nfail failed"
  exit 1
fi
SNAP=$SRC/snapshots/$(cat "$SRC/refs/main")
VARIANTS="base solar-dus block-expansion-40"

# ------------------------------------------------------------ strata
for v in $VARIANTS; do
  in_time 30 "strata bench $v" || continue
  timeout "$(cap 150)" "$BIN" bench $v --device "$DEV" --prefill "$PREFILLS" --decode "$DECODE" --json \
    > "$WORK/$v.json" 2> "$OUTD/strata-$v.log"
  rc=$?
  if [ $rc -eq 0 ] && [ -s "$WORK/$v.json" ]; then
    cat "$WORK/$v.json" >> "$OUTD/strata.jsonl"
    ok "strata bench $v --device $DEV ($(elapsed))"
  else
    bad "strata bench $v --device $DEV: rc $rc (see strata-$v.log)"
  fi
done
if [ "$DEV" = cuda ] && in_time 30 "strata bench base --no-graphs"; then
  timeout "$(cap 90)" "$BIN" bench base --device cuda --prefill "${PREFILLS%%,*}" --decode "$DECODE" --json --warm --no-graphs \
    > "$OUTD/strata-nographs.jsonl" 2> "$OUTD/strata-nographs.log" \
    && ok "strata bench base --no-graphs ($(elapsed))" || bad "strata bench base --no-graphs failed (see strata-nographs.log)"
fi

# ------------------------------------------------------------ HF transformers
if [ "$SKIP_HF" = 1 ]; then
  info "SKIP_HF=1: no exports, no transformers"
else
  have_hf=1
  if ! "$PY" -c "import torch, transformers" 2>> "$OUTD/hf.log"; then
    have_hf=0
    if [ "$DEV" = cuda ]; then bad "$PY cannot import torch and transformers: HF rows n/a"
    else info "$PY cannot import torch and transformers: HF rows n/a (decode bytes still computed)"; fi
  fi
  for v in ${HF_VARIANTS:-$VARIANTS}; do
    in_time 40 "HF $v" || continue
    dir=$SNAP
    if [ $v != base ]; then
      dir=$WORK/export-$v
      timeout "$(cap 150)" "$BIN" export $v "$dir" -q >> "$LOG" 2>&1 || { bad "strata export $v failed (see steps.log)"; rm -rf "$dir"; continue; }
      info "exported $v ($(elapsed))"
    fi
    "$PY" "$ROOT/bench/decode_bytes.py" "$dir" --label $v >> "$OUTD/decode_bytes.jsonl" 2>> "$OUTD/hf.log" \
      || bad "decode_bytes.py $v failed (see hf.log)"
    if [ $have_hf = 1 ] && in_time 30 "HF $v"; then
      echo "== $v: $dir" >> "$OUTD/hf.log"
      timeout "$(cap 180)" "$PY" "$ROOT/bench/hf_bench.py" "$dir" --label $v --device "$DEV" --prefill "$PREFILLS" \
        --decode "$DECODE" > "$WORK/hf-$v.json" 2>> "$OUTD/hf.log"
      rc=$?
      if [ $rc -eq 0 ] && [ -s "$WORK/hf-$v.json" ]; then
        cat "$WORK/hf-$v.json" >> "$OUTD/hf.jsonl"
        ok "HF transformers $v ($(elapsed))"
      else
        bad "HF transformers $v: rc $rc (see hf.log)"
      fi
    fi
    # Disk: the store holds every variant now; the source (14.5 GB for mistral-7b) goes
    # before the first export, so the peak is store + one export.
    if [ $v = base ]; then rm -rf "$HF_HUB_CACHE"; else rm -rf "$dir"; fi
  done
fi

# ------------------------------------------------------------ table and checks
TARGETS=; [ "$DEV" = cuda ] && TARGETS=--targets
"$PY" "$ROOT/bench/bench_table.py" "$OUTD" $TARGETS > "$WORK/table.out" 2>> "$LOG" || bad "bench_table.py failed (see steps.log)"
grep -v -E '^(PASS|FAIL|INFO) ' "$WORK/table.out"
while read -r verdict line; do
  case $verdict in PASS) ok "$line";; FAIL) bad "$line";; *) info "$line";; esac
done < <(grep -E '^(PASS|FAIL|INFO) ' "$WORK/table.out")
rm -rf "$WORK"

# ------------------------------------------------------------ SASS of the decode GEMV
# The GEMV's inner loop should issue its eight 16-byte weight loads
# (LDG.E.128 with the no-L1-allocate hint) before the first FFMA that uses them.
if [ "$DEV" = cuda ] && command -v cuobjdump > /dev/null; then
  cuobjdump -sass "$BIN" 2> /dev/null \
    | awk '/Function : .*DecodeGemvKernelILi0ELi1ELb0/ {f = 1} f && /Function : / && !/DecodeGemvKernelILi0ELi1ELb0/ {f = 0} f' \
    > "$OUTD/sass-gemv.txt"
  n128=$(grep -c 'LDG.E.*128' "$OUTD/sass-gemv.txt")
  info "SASS of the bf16 residual GEMV: $n128 LDG.E.128 instructions (sass-gemv.txt)"
fi

# The device machine returns at most 8 files: keep summary.txt and table.md
# beside one archive of everything else (PACK=0 keeps the files loose).
if [ "${PACK:-$([ "$DEV" = cuda ] && echo 1 || echo 0)}" = 1 ]; then
  (cd "$OUTD" && tar czf raw.tar.gz --exclude=summary.txt --exclude=table.md --exclude=raw.tar.gz ./* \
    && find . -maxdepth 1 -type f ! -name summary.txt ! -name table.md ! -name raw.tar.gz -delete)
fi
say "done in $(elapsed): $npass passed, $nfail failed"
[ $nfail -eq 0 ]
