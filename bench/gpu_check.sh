#!/usr/bin/env bash
# GPU validation of the CUDA runtime (issue 4), meant for ONE device call on a
# machine with an NVIDIA GPU. Builds nothing: give it a build directory made
# with the CUDA backend (build/strata and build/tests/gpu_test).
#
# usage: bench/gpu_check.sh BUILD_DIR [OUT_DIR]     (OUT_DIR: default $OUT, else /tmp/strata-gpu-check)
# env:   PARTS="test sanitize small 7b"  which parts to run (default all, in that order)
#        WORK=/tmp/strata-gpu-work        scratch (synthetic models, stores, exports; ~30 GB for 7b)
#        PYTHON=python3                   with torch + transformers (for the HF comparison)
#        HF7B=1                           also compare the 7B base against transformers (bf16)
#        PRESETS="tiny small"             the presets of the `small` part
#        DEV=cuda                         the device under test (DEV=cpu BIG=tiny dry-run the script's logic)
#        BIG=mistral-7b                   the preset of the `7b` part
#        TEST_TIMEOUT=400 SAN_TIMEOUT=300 the limits of the gpu_test and sanitize runs (seconds)
#
# What it checks (every line also lands in OUT_DIR/summary.txt, PASS/FAIL/INFO):
#   test      gpu_test: every kernel against the CPU kernels, whole models CUDA vs CPU
#             (base, SOLAR DUS, block expansion, Qwen2, tied, F32/F16, cast/scale chains),
#             residency bit for bit; FAIL if any test fails or is skipped.
#   sanitize  compute-sanitizer memcheck over the kernel tests (out-of-bounds, misaligned).
#   small     tiny and small mistral presets, base and SOLAR-DUS (exported with `strata
#             export`): `strata run --device cuda` logits (all prompt positions) and 16
#             greedy tokens against `--device cpu` (rel err <= 2e-2), against transformers
#             in float32 on the exported checkpoint (<= 2e-2) and in bfloat16 (<= 5e-2:
#             HF rounds activations to bf16), and for tiny against tests/ref/forward_ref.py
#             (float64 numpy reference); `strata bench` on tiny for cpu and cuda.
#   serve     small preset, base + SOLAR-DUS in one `strata serve --device cuda` (one weight pool):
#             8 concurrent greedy completions (token-id prompts) against the same on a
#             `--device cpu` server; resident weight bytes of the pool == the base's; then
#             `strata eval base solar-dus --device cuda` perplexity against --device cpu (<= 1e-2).
#             The small model takes the tokenizer of VOCAB_GGUF (default
#             ../shared/vocab/ggml-vocab-llama-spm.gguf).
#   7b        mistral-7b preset (14.5 GB bf16) and its SOLAR DUS (48 layers, same distinct
#             bytes): `strata bench --device cuda --json` (cold load, prefill 512, decode 256,
#             peak VRAM, host peak RSS) for both; PASS when both resident weight byte counts
#             are equal, host peak RSS <= 1 GiB and peak VRAM <= weights x 1.02 + KV + 1 GiB; with HF7B=1 the base's logits
#             against transformers bf16.
# Raw logs: OUT_DIR/{summary.txt, env.log, gpu_test.log, sanitize.log, compare.log, bench.jsonl, bench.log}.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [OUT_DIR]" >&2; exit 2; }
BUILD=$(realpath "$1")
OUTD=${2:-${OUT:-/tmp/strata-gpu-check}}
mkdir -p "$OUTD"
OUTD=$(realpath "$OUTD")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$BUILD/strata
GPUTEST=$BUILD/tests/gpu_test
WORK=${WORK:-/tmp/strata-gpu-work}
PY=${PYTHON:-python3}
PARTS=${PARTS:-"test sanitize small serve 7b"}
HF7B=${HF7B:-1}
DEV=${DEV:-cuda}
SUMMARY=$OUTD/summary.txt
COMPARE=$OUTD/compare.log
BENCHJ=$OUTD/bench.jsonl
BENCHL=$OUTD/bench.log
: > "$COMPARE"; : > "$BENCHJ"; : > "$BENCHL"
. "$ROOT/bench/report.sh"
has() { [[ " $PARTS " == *" $1 "* ]]; }

[ -x "$BIN" ] || { bad "no strata binary at $BIN"; exit 1; }
{
  date; uname -a; nproc; free -g; df -h "$(dirname "$WORK")"
  nvidia-smi || true
  "$BIN" --version
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')" || true
} > "$OUTD/env.log" 2>&1
info "strata $($BIN --version 2>&1), build $BUILD, parts: $PARTS"

# ---------------------------------------------------------------- gpu_test
if has test; then
  if [ -x "$GPUTEST" ]; then
    timeout "${TEST_TIMEOUT:-400}" "$GPUTEST" > "$OUTD/gpu_test.log" 2>&1
    rc=$?
    passed=$(grep -c '^\[       OK \]' "$OUTD/gpu_test.log")
    failed=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$OUTD/gpu_test.log")
    skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z].*([0-9]* ms)' "$OUTD/gpu_test.log")
    if [ $rc -eq 0 ] && [ "$skipped" -eq 0 ] && [ "$passed" -gt 0 ]; then ok "gpu_test: $passed passed ($(elapsed))"
    else bad "gpu_test: rc $rc, $passed passed, $failed failed, $skipped skipped (see gpu_test.log)"; fi
  else
    bad "gpu_test: no binary at $GPUTEST"
  fi
fi

# ---------------------------------------------------------------- sanitize
if has sanitize; then
  if command -v compute-sanitizer > /dev/null; then
    timeout "${SAN_TIMEOUT:-300}" compute-sanitizer --tool memcheck --error-exitcode 3 "$GPUTEST" --gtest_filter='CudaKernels.*' \
      > "$OUTD/sanitize.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then ok "compute-sanitizer memcheck on the kernel tests ($(elapsed))"
    elif [ $rc -eq 124 ] && ! grep -q 'ERROR SUMMARY: [1-9]\|Invalid\|FAILED' "$OUTD/sanitize.log"; then
      info "compute-sanitizer memcheck: stopped at ${SAN_TIMEOUT:-300}s with no error so far ($(grep -c '^\[       OK \]' "$OUTD/sanitize.log") tests clean)"
    else bad "compute-sanitizer memcheck: rc $rc (see sanitize.log)"; fi
  else
    info "compute-sanitizer not found: memcheck skipped"
  fi
fi

# relerr A.npy B.npy -> max|a-b|/max|b| (nan when a has non-finite values or shapes differ)
relerr() {
  "$PY" - "$1" "$2" <<'PY'
import sys
try:
    import numpy as np
    a = np.load(sys.argv[1]).astype(np.float64); b = np.load(sys.argv[2]).astype(np.float64)
    ok = a.shape == b.shape and np.isfinite(a).all()
    print("%.3e" % (np.abs(a - b).max() / np.abs(b).max()) if ok else "nan")
except Exception as e:
    print("nan")
    print(f"relerr {sys.argv[1]} {sys.argv[2]}: {e}", file=sys.stderr)
PY
}
within() { "$PY" -c "import sys; x=float(sys.argv[1] or 'nan'); sys.exit(0 if x == x and x <= float(sys.argv[2]) else 1)" "$1" "$2"; }
# check LABEL OURS.npy REF.npy TOL [warn]: PASS/FAIL (or INFO when warn) on the rel err
check() {
  local e; e=$(relerr "$2" "$3" 2>> "$COMPARE")
  echo "$1: rel err $e (tol $4)" >> "$COMPARE"
  if within "$e" "$4"; then ok "$1: rel err $e <= $4"
  elif [ "${5:-}" = warn ]; then info "$1: rel err $e > $4 (HF bf16 rounds every activation)"
  else bad "$1: rel err $e > $4"; fi
}
# same_tokens LABEL A B: greedy token lists; A may stop early at EOS (a prefix of B is fine)
same_tokens() {
  echo "$1: $2 | $3" >> "$COMPARE"
  if [ -n "$2" ] && [[ "$3," == "$2,"* ]]; then ok "$1: greedy tokens identical ($2)"
  else info "$1: greedy tokens differ: $2 vs $3 (tiny random models have small margins; see compare.log)"; fi
}
prompt_for() {  # N VOCAB -> N comma-separated ids, deterministic
  "$PY" -c "import sys; n,v=map(int,sys.argv[1:]); print(','.join(str((i*37+11)%v) for i in range(n)))" "$1" "$2"
}

# ---------------------------------------------------------------- tiny / small
if has small; then
  for preset in ${PRESETS:-tiny small}; do
    W=$WORK/$preset
    rm -rf "$W"; mkdir -p "$W"
    export HF_HUB_CACHE=$W/hf STRATA_STORE=$W/store
    "$BIN" synth --arch mistral --preset $preset --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 -q \
      >> "$COMPARE" 2>&1 || { bad "$preset: synth failed"; continue; }
    "$BIN" compile "$ROOT/examples/solar-dus.yml" --name solar-dus -q >> "$COMPARE" 2>&1 || { bad "$preset: compile failed"; continue; }
    "$BIN" export solar-dus "$W/solar-hf" -q >> "$COMPARE" 2>&1 || { bad "$preset: export failed"; continue; }
    SNAP=$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1/snapshots/$(cat "$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1/refs/main")
    vocab=$([ $preset = tiny ] && echo 256 || echo 32000)
    PROMPT=$(prompt_for 80 $vocab)  # 80 tokens: several 32-key attention tiles
    jobs=()
    for v in base solar-dus; do
      if [ $v = base ]; then model=$SNAP; hf=$SNAP; else model=solar-dus; hf=$W/solar-hf; fi
      # The device under test writes $v-cuda.*, the CPU backend $v-cpu.*.
      for pair in "$DEV:cuda" "cpu:cpu"; do
        dev=${pair%%:*} out=${pair##*:}
        "$BIN" run "$model" --device $dev --tokens "$PROMPT" -n 16 --logits-out "$W/$v-$out.npy" --all-logits \
          > "$W/$v-$out.tok" 2>> "$COMPARE" || bad "$preset $v: strata run --device $dev failed"
      done
      jobs+=(--job "$hf:float32:$W/$v-hf32.npy:16" --job "$hf:bfloat16:$W/$v-hf16.npy:16")
      if [ $preset = tiny ]; then
        "$PY" "$ROOT/tests/ref/forward_ref.py" "$hf" --tokens "$PROMPT" --all-logits --out "$W/$v-ref.npy" --greedy 16 \
          > "$W/$v-ref.tok" 2>> "$COMPARE" || bad "$preset $v: forward_ref.py failed"
      fi
    done
    timeout 300 "$PY" "$ROOT/bench/hf_logits.py" --tokens "$PROMPT" "${jobs[@]}" > "$W/hf.tok" 2>> "$COMPARE" \
      || bad "$preset: hf_logits.py failed (see compare.log)"
    for v in base solar-dus; do
      check "$preset $v: cuda vs cpu" "$W/$v-cuda.npy" "$W/$v-cpu.npy" 2e-2
      same_tokens "$preset $v: cuda vs cpu" "$(cat "$W/$v-cuda.tok" 2>/dev/null)" "$(cat "$W/$v-cpu.tok" 2>/dev/null)"
      check "$preset $v: cuda vs transformers float32" "$W/$v-cuda.npy" "$W/$v-hf32.npy" 2e-2
      check "$preset $v: cuda vs transformers bfloat16" "$W/$v-cuda.npy" "$W/$v-hf16.npy" 5e-2 warn
      same_tokens "$preset $v: cuda vs transformers float32" "$(cat "$W/$v-cuda.tok" 2>/dev/null)" \
        "$(grep "^$W/$v-hf32.npy: " "$W/hf.tok" 2>/dev/null | sed 's/^[^ ]* //')"
      if [ $preset = tiny ]; then
        check "$preset $v: cuda vs float64 reference" "$W/$v-cuda.npy" "$W/$v-ref.npy" 2e-2
        same_tokens "$preset $v: cuda vs float64 reference" "$(cat "$W/$v-cuda.tok" 2>/dev/null)" "$(cat "$W/$v-ref.tok" 2>/dev/null)"
      fi
    done
    if [ $preset = tiny ]; then
      for dev in cpu $DEV; do
        "$BIN" bench solar-dus --device $dev --json --prefill 512 --decode 256 >> "$BENCHJ" 2>> "$BENCHL" \
          && ok "tiny solar-dus: strata bench --device $dev" || bad "tiny solar-dus: strata bench --device $dev failed"
      done
    fi
    info "$preset done ($(elapsed))"
    rm -rf "$W"
  done
fi

# ---------------------------------------------------------------- serve + eval
if has serve; then
  W=$WORK/serve
  rm -rf "$W"; mkdir -p "$W"
  export HF_HUB_CACHE=$W/hf STRATA_STORE=$W/store
  SERVEL=$OUTD/serve.log
  VOCAB_GGUF=${VOCAB_GGUF:-$ROOT/../shared/vocab/ggml-vocab-llama-spm.gguf}
  : > "$SERVEL"
  if "$BIN" synth --arch mistral --preset small --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 -q \
       --tokenizer llama-spm --vocab-gguf "$VOCAB_GGUF" >> "$SERVEL" 2>&1 &&
     printf 'models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\ndtype: bfloat16\n' > "$W/base.yml" &&
     "$BIN" compile "$W/base.yml" --name base -q >> "$SERVEL" 2>&1 &&
     "$BIN" compile "$ROOT/examples/solar-dus.yml" --name solar-dus -q >> "$SERVEL" 2>&1; then
    for dev in $DEV cpu; do
      "$BIN" serve --device $dev --port 0 --models base,solar-dus --max-batch 8 --ctx 512 2> "$W/serve-$dev.log" &
      spid=$!
      port=
      for i in $(seq 600); do
        port=$(sed -n 's/^strata serve: loading .* on port \([0-9][0-9]*\) .*/\1/p' "$W/serve-$dev.log")
        [ -n "$port" ] && break
        kill -0 $spid 2> /dev/null || break
        sleep 0.1
      done
      if [ -z "$port" ]; then
        bad "serve --device $dev: no port (see serve.log)"
      else
        timeout 120 "$PY" - "$port" "$W/serve-$dev.json" >> "$SERVEL" 2>&1 <<'PY' || bad "serve --device $dev: requests failed (see serve.log)"
import json, sys, time, urllib.request, concurrent.futures as cf
port, out = sys.argv[1], sys.argv[2]
base = "http://127.0.0.1:%s" % port
for _ in range(1200):
    try:
        if urllib.request.urlopen(base + "/health", timeout=5).status == 200: break
    except Exception: pass
    time.sleep(0.1)
def one(i):
    model = "base" if i % 2 == 0 else "solar-dus"
    body = {"model": model, "prompt": [(j * 37 + 11 * i + 5) % 32000 for j in range(40 + 7 * i)],
            "max_tokens": 16, "temperature": 0, "logprobs": 1, "ignore_eos": True}
    r = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    j = json.load(urllib.request.urlopen(r, timeout=100))
    return {"model": model, "tokens": j["choices"][0]["logprobs"]["tokens"], "usage": j["usage"]}
with cf.ThreadPoolExecutor(8) as ex:
    res = list(ex.map(one, range(8)))
models = json.load(urllib.request.urlopen(base + "/v1/models"))
metrics = urllib.request.urlopen(base + "/metrics").read().decode()
resident = [float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("strata_weight_resident_bytes")]
json.dump({"results": res, "models": models, "resident": resident[0] if resident else -1}, open(out, "w"))
print("served", len(res), "completions on port", port, "resident", resident)
PY
      fi
      kill -TERM $spid 2> /dev/null; wait $spid 2> /dev/null
      cat "$W/serve-$dev.log" >> "$SERVEL"
    done
    if [ -s "$W/serve-$DEV.json" ] && [ -s "$W/serve-cpu.json" ]; then
      while read -r verdict line; do
        case $verdict in PASS) ok "$line";; FAIL) bad "$line";; *) info "$line";; esac
      done < <("$PY" - "$W/serve-$DEV.json" "$W/serve-cpu.json" <<'PY'
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
n = sum(len(r["tokens"]) == 16 for r in g["results"])
print("PASS" if n == 8 else "FAIL", "serve (device): %d of 8 concurrent completions (base and solar-dus) with 16 tokens" % n)
same = sum(a["tokens"] == b["tokens"] for a, b in zip(g["results"], c["results"]))
print("PASS" if same == 8 else "INFO", "serve: %d of 8 completions token-identical between the device and cpu servers" % same)
m = {x["id"]: x for x in g["models"]["data"]}
base_bytes = m["base"].get("distinct_bytes", -1)
print("PASS" if 0 < g["resident"] <= base_bytes * 1.001 else "FAIL",
      "serve (device): one pool for base + solar-dus: %.1f MiB resident, base's distinct weights %.1f MiB" % (g["resident"] / 2**20, base_bytes / 2**20))
PY
)
    fi
    "$BIN" eval base solar-dus --file "$ROOT/README.md" --ctx 128 --chunks 4 --device $DEV --json -q > "$W/eval-$DEV.json" 2>> "$SERVEL" &&
    "$BIN" eval base solar-dus --file "$ROOT/README.md" --ctx 128 --chunks 4 --device cpu --json -q > "$W/eval-cpu.json" 2>> "$SERVEL" &&
    cat "$W/eval-$DEV.json" "$W/eval-cpu.json" >> "$SERVEL" &&
    "$PY" - "$W/eval-$DEV.json" "$W/eval-cpu.json" >> "$W/eval.verdict" 2>> "$SERVEL" <<'PY' || bad "eval --device $DEV failed (see serve.log)"
import json, sys
def ppl(p):
    j = json.load(open(p))
    return {r["variant"]: r["ppl"] for r in j["results"]}
g, c = ppl(sys.argv[1]), ppl(sys.argv[2])
for k in c:
    e = abs(g[k] - c[k]) / c[k]
    print("PASS" if e <= 1e-2 else "FAIL", "eval %s: perplexity device %.4f vs cpu %.4f (rel %.1e <= 1e-2)" % (k, g[k], c[k], e))
PY
    [ -s "$W/eval.verdict" ] && while read -r verdict line; do
      case $verdict in PASS) ok "$line";; FAIL) bad "$line";; *) info "$line";; esac
    done < "$W/eval.verdict"
  else
    bad "serve: synth/compile failed (see serve.log)"
  fi
  info "serve done ($(elapsed))"
  rm -rf "$W"
fi

# ---------------------------------------------------------------- mistral-7b
if has 7b; then
  W=$WORK/7b
  rm -rf "$W"; mkdir -p "$W"
  export HF_HUB_CACHE=$W/hf STRATA_STORE=$W/store
  if "$BIN" synth --arch mistral --preset "${BIG:-mistral-7b}" --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 -q >> "$BENCHL" 2>&1 &&
     "$BIN" compile "$ROOT/examples/solar-dus.yml" --name solar-dus -q >> "$BENCHL" 2>&1 &&
     printf 'models:\n  - model: mistralai/Mistral-7B-v0.1\nmerge_method: passthrough\ndtype: bfloat16\n' > "$W/base.yml" &&
     "$BIN" compile "$W/base.yml" --name base -q >> "$BENCHL" 2>&1; then
    info "7b synthesized and compiled ($(elapsed))"
    for v in base solar-dus; do
      "$BIN" bench $v --device $DEV --json --prefill 512 --decode 256 > "$W/$v.json" 2>> "$BENCHL"
      rc=$?
      cat "$W/$v.json" >> "$BENCHJ"
      if [ $rc -eq 0 ]; then
        ok "7b $v: bench $("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); g=lambda k: r.get(k, 0); print('load %.1f s, prefill %.0f tok/s, decode %.1f tok/s, VRAM peak %.2f GB (weights %.2f GB, KV %.2f GB), host RSS peak %.2f GB' % (g('load_s'), g('prefill_tokens_per_s'), g('decode_tokens_per_s'), g('peak_vram_bytes')/1e9, g('weight_bytes_device')/1e9, g('kv_cache_bytes')/1e9, g('host_peak_rss_bytes')/1e9))" "$W/$v.json")"
      else
        bad "7b $v: strata bench failed (rc $rc, see bench.log)"
      fi
    done
    if [ -s "$W/base.json" ] && [ -s "$W/solar-dus.json" ]; then
      while read -r verdict line; do
        if [ "$verdict" = PASS ]; then ok "$line"; else bad "$line"; fi
      done < <("$PY" - "$W/base.json" "$W/solar-dus.json" "$BENCHJ" <<'PY'
import json, sys
b, s = (json.load(open(p)) for p in sys.argv[1:3])
w = lambda r: r.get("weight_bytes_device", -1)
print(("PASS" if w(s) == w(b) and w(b) > 0 else "FAIL"),
      "7b: SOLAR-DUS (48 layers) device weight bytes %d == base (32 layers) %d" % (w(s), w(b)))
# The issue's targets: host peak RSS <= 1 GiB; peak VRAM <= distinct weight bytes x 1.02 + KV cache + 1 GiB.
for r, n in ((b, "base"), (s, "solar-dus")):
    print(("PASS" if r["host_peak_rss_bytes"] <= 1 << 30 else "FAIL"),
          "7b %s: host peak RSS %.2f GB <= 1 GiB (weights %.2f GB streamed)" % (n, r["host_peak_rss_bytes"] / 1e9, r.get("weight_bytes_read", 0) / 1e9))
    limit = w(r) * 1.02 + r.get("kv_cache_bytes", 0) + (1 << 30)
    print(("PASS" if 0 < r.get("peak_vram_bytes", 0) <= limit else "FAIL"),
          "7b %s: peak VRAM %.2f GB <= weights x 1.02 + KV + 1 GiB = %.2f GB" % (n, r.get("peak_vram_bytes", 0) / 1e9, limit / 1e9))
# Constant host memory: the 7B's peak RSS against the tiny model's (small part), when both ran.
tiny = None
for line in open(sys.argv[3]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("device") == "cuda" and 0 < r.get("weight_bytes_device", 0) < 100e6:
        tiny = r
if tiny:
    d = b["host_peak_rss_bytes"] - tiny["host_peak_rss_bytes"]
    print(("PASS" if d < 512 << 20 else "FAIL"),
          "host peak RSS 7b base %.2f GB vs tiny %.2f GB: +%.0f MB < 512 MiB for %.1f GB more weights (staging is 256 MiB)"
          % (b["host_peak_rss_bytes"] / 1e9, tiny["host_peak_rss_bytes"] / 1e9, d / 1e6,
             (b["weight_bytes_device"] - tiny["weight_bytes_device"]) / 1e9))
PY
)
    fi
    if [ "$HF7B" = 1 ]; then
      SNAP=$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1/snapshots/$(cat "$HF_HUB_CACHE/models--mistralai--Mistral-7B-v0.1/refs/main")
      PROMPT=$(prompt_for 64 32000)
      "$BIN" run base --device $DEV --tokens "$PROMPT" -n 16 --logits-out "$W/cuda.npy" --all-logits > "$W/cuda.tok" 2>> "$COMPARE"
      timeout 240 "$PY" "$ROOT/bench/hf_logits.py" --tokens "$PROMPT" --job "$SNAP:bfloat16:$W/hf16.npy:16" > "$W/hf.tok" 2>> "$COMPARE"
      if [ -s "$W/hf16.npy" ]; then
        check "7b base: cuda vs transformers bfloat16" "$W/cuda.npy" "$W/hf16.npy" 5e-2 warn
        same_tokens "7b base: cuda vs transformers bfloat16" "$(cat "$W/cuda.tok")" "$(sed 's/^[^ ]* //' "$W/hf.tok")"
      else
        bad "7b base: transformers run failed (see compare.log)"
      fi
    fi
  else
    bad "7b: synth/compile failed (see bench.log)"
  fi
  info "7b done ($(elapsed))"
  rm -rf "$W"
fi

say "done in $(elapsed): $npass passed, $nfail failed"
[ $nfail -eq 0 ]
