#!/usr/bin/env bash
# bench/gpu_bench.sh dry-run on the CPU (DEV=cpu PRESET=tiny): the plumbing of
# the GPU benchmark (synth, compile, strata bench, exports, decode bytes, the
# table and its checks) without a GPU. Asserts the table's 6 rows, the new
# `strata bench --json` keys, and decode_weight_bytes_per_token against bytes
# worked out here from a tiny model's safetensors header.
# usage: gpu_bench_dryrun.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

# HF rows only where torch is importable; a tiny run is quick either way.
DEV=cpu PRESET=tiny PREFILLS=16,32 DECODE=8 WORK=$T/work PYTHON=$PY \
  bash "$ROOT/bench/gpu_bench.sh" "$(dirname "$BIN")" "$T/out" > "$T/run.log" 2>&1
rc=$?
cat "$T/run.log"
[ $rc -eq 0 ] && ok "gpu_bench.sh DEV=cpu exits 0" || bad "gpu_bench.sh DEV=cpu: rc $rc"
[ -d "$T/work" ] && bad "WORK left behind" || ok "WORK removed"

rows=$(grep -cE '^\| (strata|HF) \| (base|SOLAR DUS|block-exp 40) \|' "$T/out/table.md" 2>/dev/null)
[ "$rows" = 6 ] && ok "table.md has 6 rows" || bad "table.md has ${rows:-no} rows, want 6"
grep -q 'prefill tok/s @16 | prefill tok/s @32' "$T/out/table.md" && ok "table columns for both prefill lengths" \
  || bad "table.md lacks the prefill columns"
n=$(grep -c '' "$T/out/strata.jsonl" 2>/dev/null)
[ "$n" = 3 ] && ok "strata.jsonl has 3 runs" || bad "strata.jsonl has ${n:-no} lines, want 3"
grep -q '^PASS decode bytes: block-exp with elision' "$T/out/summary.txt" && ok "summary: block-exp bytes check passed" \
  || bad "summary lacks the block-exp bytes PASS"

# The tiny base's header, synthesized again (deterministic), gives the expected bytes per token.
"$BIN" synth --preset tiny --out "$T/tiny" -q > /dev/null || bad "synth tiny"
"$PY" - "$T/tiny/model.safetensors" "$T/out/strata.jsonl" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    h = json.loads(f.read(n))
size = lambda k: h[k]["data_offsets"][1] - h[k]["data_offsets"][0]
layer = sum(size(k) for k in h if k.startswith("model.layers.0."))
rest = size("model.norm.weight") + size("lm_head.weight") + size("model.embed_tokens.weight") // h["model.embed_tokens.weight"]["shape"][0]
want = {"base": 32 * layer + rest, "solar-dus": 48 * layer + rest, "block-expansion-40": 32 * layer + rest}
runs = {r["variant"]: r for r in map(json.loads, open(sys.argv[2]))}
bad = 0
for v, w in want.items():
    r = runs.get(v, {})
    got = r.get("decode_weight_bytes_per_token")
    print(("ok" if got == w else "FAIL") + f": {v}: decode_weight_bytes_per_token {got}, header bytes {w}")
    bad += got != w
    keys = ["prefill", "prefill_s", "prefill_tokens_per_s", "ttft_cold_s", "ttft_warm_s", "decode_tokens_per_s"]
    missing = [k for k in keys if k not in r]
    lens = [p.get("tokens") for p in r.get("prefill", [])]
    good = not missing and lens == [16, 32] and r["prefill_s"] == r["prefill"][0]["seconds"] and r["ttft_cold_s"] >= r["load_s"] > 0
    print(("ok" if good else "FAIL") + f": {v}: keys (missing {missing}), prefill lengths {lens}, ttft_cold_s >= load_s")
    bad += not good
sys.exit(1 if bad else 0)
PY
[ $? -eq 0 ] && ok "strata bench JSON: new keys, bytes per token from the header" || bad "strata bench JSON (see above)"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
