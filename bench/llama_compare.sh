#!/usr/bin/env bash
# Side-by-side CPU benchmark of strata against llama.cpp on the same weights.
# Run with --help for usage; the help text below is the documentation.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/llama_compare.sh [options] NAME=GGUF [NAME=GGUF ...]

Benchmarks strata variants (NAME, in the strata store) against llama.cpp on the same weights
converted to GGUF (GGUF, e.g. a BF16 GGUF written by llama.cpp's convert_hf_to_gguf.py from
`strata export NAME DIR`). For every model and every repetition it runs, alternating which of
the two goes first:

  prefill + decode  strata bench NAME --warm --prefill P --decode D --threads T --json
                    llama-bench -m GGUF -p P -n D -t T -r 1 -o json
                    (prefill tok/s at each length in P, each from position 0; decode tok/s over
                    D tokens at batch 1; one process each, so its peak RSS covers both)
  batched decode    strata bench NAME --warm --prefill PP --decode 0 --batch B --batch-prompt PP
                      --batch-steps TG --threads T --json
                    llama-batched-bench -m GGUF -c C -npp PP -ntg TG -npl B -t T
                      (C = max(2048, largest B * (PP + TG)))
                    (PP,TG = --batch-tokens, default 16,32: each of the B sequences gets a
                    PP-token prompt and then decodes TG tokens; the figure is the aggregate
                    decode tok/s of the B sequences decoding together: strata's
                    "batched"[].tokens_per_s, llama.cpp's S_TG = speed_tg)
  peak RSS          /usr/bin/time -f %M around every process above, in MiB

and reports the median over the repetitions. A markdown table (model, metric, strata, llama.cpp,
strata/llama.cpp) goes to stdout and to OUT/results.md; OUT/summary.json has the medians and
every sample; OUT/raw/ has each process's JSON output, log and /usr/bin/time output.

Without `strata bench --batch` (older strata) the batched rows say so and the others are filled.
A process that fails or passes --timeout is recorded as missing (see its log) and the run goes
on. The 1- and 5-minute load averages are logged around every process: on a shared machine
llama.cpp's spinning worker threads suffer far more than blocking ones when cores are
oversubscribed (at -t 2 on 2 busy cores, pp64 fell from ~200 to ~45 tok/s), so compare figures
only from a quiet machine, or pass --llama-args "--poll 0" and say so.

options:
  --strata BIN        strata binary (default: build/strata)
  --store DIR         strata store (default: $STRATA_STORE, else strata's default)
  --llama-bin DIR     directory with llama-bench and llama-batched-bench
                      (default: $LLAMA_CPP_BIN, else /tmp/llama.cpp/build/bin)
  --llama-commit SHA  llama.cpp commit to record in the report (default: unknown)
  --out DIR           raw results and reports (default: bench/results/llama_compare-DATE)
  --reps N            repetitions, median reported (default 3)
  --threads N         threads for both (default 2)
  --prefill LIST      prefill lengths (default 16,128,512)
  --decode N          decoded tokens at batch 1 (default 64)
  --batch LIST        sequence counts for batched decode (default 1,4,16; "none" to skip)
  --batch-tokens PP,TG  prompt and decoded tokens per sequence, batched decode (default 16,32)
  --llama-args ARGS   extra arguments for llama-bench and llama-batched-bench (word-split)
  --timeout S         per-process limit in seconds (default 3600)
  --report-only       measure nothing: rebuild the table from an earlier run's --out DIR
                      (its options and models are read from DIR/params)
  -h, --help          this help

example (small preset and its SOLAR-DUS, after converting both exports to GGUF):
  bench/llama_compare.sh --strata build/strata --store /tmp/bench-store \
      --llama-bin /tmp/llama.cpp/build/bin --llama-commit c392e50 \
      small=/tmp/gguf/small-bf16.gguf small-dus=/tmp/gguf/small-dus-bf16.gguf
  # 7B: few repetitions, shorter prompts (the output header says what was run)
  bench/llama_compare.sh --store /tmp/bench-store --reps 1 --prefill 16,128 --decode 16 \
      --batch 1,4 --batch-tokens 16,16 mistral-7b=/tmp/gguf/mistral-7b-bf16.gguf
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STRATA=$ROOT/build/strata
STORE=${STRATA_STORE:-}
LLAMA_BIN=${LLAMA_CPP_BIN:-/tmp/llama.cpp/build/bin}
LLAMA_COMMIT=unknown
OUT=""
REPS=3
THREADS=2
PREFILL=16,128,512
DECODE=64
BATCH=1,4,16
BATCH_TOKENS=16,32
LLAMA_ARGS=""
TIMEOUT=3600
PAIRS=()
REPORT_ONLY=0

die() { echo "llama_compare.sh: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --strata) need_arg "$@"; STRATA=$2; shift 2 ;;
    --store) need_arg "$@"; STORE=$2; shift 2 ;;
    --llama-bin) need_arg "$@"; LLAMA_BIN=$2; shift 2 ;;
    --llama-commit) need_arg "$@"; LLAMA_COMMIT=$2; shift 2 ;;
    --out) need_arg "$@"; OUT=$2; shift 2 ;;
    --reps) need_arg "$@"; REPS=$2; shift 2 ;;
    --threads) need_arg "$@"; THREADS=$2; shift 2 ;;
    --prefill) need_arg "$@"; PREFILL=$2; shift 2 ;;
    --decode) need_arg "$@"; DECODE=$2; shift 2 ;;
    --batch) need_arg "$@"; BATCH=$2; shift 2 ;;
    --batch-tokens) need_arg "$@"; BATCH_TOKENS=$2; shift 2 ;;
    --llama-args) need_arg "$@"; LLAMA_ARGS=$2; shift 2 ;;
    --timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
    --report-only) REPORT_ONLY=1; shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *=*) PAIRS+=("$1"); shift ;;
    *) die "expected NAME=GGUF, got '$1' (see --help)" ;;
  esac
done
if [ $REPORT_ONLY = 1 ]; then
  if [ -z "$OUT" ] || [ ! -f "$OUT/params" ]; then
    die "--report-only needs --out DIR of an earlier run"
  fi
  PAIRS=()
  while IFS= read -r line; do
    case $line in
      REPS=*) REPS=${line#*=} ;;
      PREFILL=*) PREFILL=${line#*=} ;;
      DECODE=*) DECODE=${line#*=} ;;
      BATCH=*) BATCH=${line#*=} ;;
      BATCH_TOKENS=*) BATCH_TOKENS=${line#*=} ;;
      MODEL=*) PAIRS+=("${line#*=}") ;;
    esac
  done < "$OUT/params"
fi
[ ${#PAIRS[@]} -gt 0 ] || { usage >&2; exit 2; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive integer"
[[ $DECODE =~ ^[1-9][0-9]*$ ]] || die "--decode must be a positive integer"
[[ $PREFILL =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--prefill must be a comma-separated list of lengths"
[[ $BATCH == none || $BATCH =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--batch must be a list of counts or none"
[[ $BATCH_TOKENS =~ ^[1-9][0-9]*,[1-9][0-9]*$ ]] || die "--batch-tokens must be PP,TG"
BATCH_PP=${BATCH_TOKENS%,*} BATCH_TG=${BATCH_TOKENS#*,}
[ -x "$STRATA" ] || die "strata binary not found: $STRATA"
STRATA=$(realpath "$STRATA")
TOOLS=(llama-bench)
[ "$BATCH" != none ] && TOOLS+=(llama-batched-bench)  # --batch none needs only llama-bench
for tool in "${TOOLS[@]}"; do
  [ -x "$LLAMA_BIN/$tool" ] || die "$LLAMA_BIN/$tool not found (build llama.cpp, or pass --llama-bin)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is needed for peak RSS (apt-get install time)"
command -v python3 > /dev/null || die "python3 is needed to read the JSON results"
for pair in "${PAIRS[@]}"; do
  gguf=${pair#*=}
  [ -f "$gguf" ] || die "GGUF not found: $gguf"
done
STORE_ARGS=()
[ -n "$STORE" ] && STORE_ARGS=(--store "$STORE")
read -r -a EXTRA <<< "$LLAMA_ARGS"
OUT=${OUT:-$ROOT/bench/results/llama_compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/raw"
# llama-batched-bench's context must hold every sequence's prompt and decoded tokens
MAX_B=$(tr ',' '\n' <<< "${BATCH/none/1}" | sort -n | tail -1)
BATCH_CTX=$(( MAX_B * (BATCH_PP + BATCH_TG) > 2048 ? MAX_B * (BATCH_PP + BATCH_TG) : 2048 ))

HAVE_BATCH=1
if [ $REPORT_ONLY = 1 ]; then
  HAVE_BATCH=$(cat "$OUT/strata_has_batch" 2>/dev/null || echo 1)
elif [ "$BATCH" != none ] && ! "$STRATA" bench --help 2>&1 | grep -q -- '--batch-steps'; then
  HAVE_BATCH=0
  echo "note: $STRATA has no 'bench --batch': strata's batched rows are left empty" >&2
fi
if [ $REPORT_ONLY = 0 ]; then
  echo "$HAVE_BATCH" > "$OUT/strata_has_batch"
  { printf '%s\n' "REPS=$REPS" "PREFILL=$PREFILL" "DECODE=$DECODE" "BATCH=$BATCH" \
      "BATCH_TOKENS=$BATCH_TOKENS"; printf 'MODEL=%s\n' "${PAIRS[@]}"; } > "$OUT/params"
fi

loadavg() { cut -d' ' -f1,2 /proc/loadavg; }
# measure TAG CMD...: runs CMD under /usr/bin/time and timeout; stdout to raw/TAG.json, stderr
# to raw/TAG.log, peak RSS (KiB) to raw/TAG.rss; logs load averages; never fails the script.
measure() {
  local tag=$1; shift
  local rc=0 before start
  before=$(loadavg) start=$(date +%T)
  /usr/bin/time -f %M -o "$OUT/raw/$tag.rss" timeout "$TIMEOUT" "$@" \
    > "$OUT/raw/$tag.json" 2> "$OUT/raw/$tag.log" || rc=$?
  printf '%s\tstart=%s\tend=%s\trc=%s\tload_before=%s\tload_after=%s\t%s\n' "$tag" "$start" \
    "$(date +%T)" "$rc" "$before" "$(loadavg)" "$*" \
    >> "$OUT/runs.tsv"
  printf '  %-40s rc=%s load %s -> %s\n' "$tag" "$rc" "$before" "$(loadavg)" >&2
  [ $rc -eq 0 ] || echo "  warning: $tag failed (rc $rc, see $OUT/raw/$tag.log)" >&2
}

# run_all: every measurement, logged to OUT/setup.txt, OUT/runs.tsv and OUT/raw/
run_all() {
  STRATA_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  # read-only check: tracked files differ from HEAD (the binary may hold local changes)
  git -C "$ROOT" diff-index --quiet HEAD -- 2>/dev/null || STRATA_REV+=" + local changes"
  {
    echo "date: $(date -Iseconds)"
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "strata: $STRATA (commit $STRATA_REV), store ${STORE:-default}"
    echo "llama.cpp: $LLAMA_BIN (commit $LLAMA_COMMIT), extra args: ${LLAMA_ARGS:-none}"
    echo "reps: $REPS, threads: $THREADS, prefill: $PREFILL, decode: $DECODE, batch: $BATCH (prompt,decode per sequence: $BATCH_TOKENS)"
    echo "models: ${PAIRS[*]}"
  } | tee "$OUT/setup.txt" >&2

  for pair in "${PAIRS[@]}"; do
    name=${pair%%=*} gguf=${pair#*=}
    echo "== $name ($gguf)" >&2
    for rep in $(seq 1 "$REPS"); do
      s_pd=(measure "$name.strata.pd.r$rep" "$STRATA" bench "$name" "${STORE_ARGS[@]}" --warm
            --prefill "$PREFILL" --decode "$DECODE" --threads "$THREADS" --json)
      l_pd=(measure "$name.llama.pd.r$rep" "$LLAMA_BIN/llama-bench" -m "$gguf" -p "$PREFILL"
            -n "$DECODE" -t "$THREADS" -r 1 -o json "${EXTRA[@]}")
      s_b=(measure "$name.strata.batch.r$rep" "$STRATA" bench "$name" "${STORE_ARGS[@]}" --warm
           --prefill "$BATCH_PP" --decode 0 --batch "$BATCH" --batch-prompt "$BATCH_PP"
           --batch-steps "$BATCH_TG" --threads "$THREADS" --json)
      l_b=(measure "$name.llama.batch.r$rep" "$LLAMA_BIN/llama-batched-bench" -m "$gguf" -c "$BATCH_CTX"
           -npp "$BATCH_PP" -ntg "$BATCH_TG" -npl "$BATCH" -t "$THREADS" --output-format jsonl "${EXTRA[@]}")
      if [ $((rep % 2)) -eq 1 ]; then first=strata; else first=llama; fi
      if [ $first = strata ]; then "${s_pd[@]}"; "${l_pd[@]}"; else "${l_pd[@]}"; "${s_pd[@]}"; fi
      if [ "$BATCH" != none ]; then
        if [ "$HAVE_BATCH" = 1 ]; then
          if [ $first = strata ]; then "${s_b[@]}"; "${l_b[@]}"; else "${l_b[@]}"; "${s_b[@]}"; fi
        else
          "${l_b[@]}"
        fi
      fi
    done
  done
}

[ $REPORT_ONLY = 1 ] || run_all
python3 - "$OUT" "$REPS" "$PREFILL" "$DECODE" "$BATCH" "$HAVE_BATCH" "${PAIRS[@]}" <<'PY'
import json, os, statistics, sys

out, reps, prefill, decode, batch, have_batch = sys.argv[1:7]
pairs = sys.argv[7:]
reps, decode, have_batch = int(reps), int(decode), have_batch == "1"
prefill = [int(x) for x in prefill.split(",")]
batch = [] if batch == "none" else [int(x) for x in batch.split(",")]
raw = os.path.join(out, "raw")

def load(tag):
    """(parsed stdout or None, peak RSS MiB or None) of one measured process."""
    path = os.path.join(raw, tag)
    rss = None
    try:
        rss = int(open(path + ".rss").read().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        text = open(path + ".json").read()
    except OSError:
        return None, rss
    try:
        return json.loads(text), rss
    except ValueError:
        pass
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return (rows or None), rss

def strata_pd(d):
    r = {}
    for p in d.get("prefill", []):
        r[f"prefill {p['tokens']} tok/s"] = p["tokens_per_s"]
    if "decode_tokens_per_s" in d:
        r[f"decode {decode} tok/s"] = d["decode_tokens_per_s"]
    return r

def llama_pd(d):
    r = {}
    for t in d:
        if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
            r[f"prefill {t['n_prompt']} tok/s"] = t["avg_ts"]
        elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
            r[f"decode {t['n_gen']} tok/s"] = t["avg_ts"]
    return r

def strata_batch(d):
    return {f"batched {b['sequences']} seq tok/s": b["tokens_per_s"] for b in d.get("batched", [])}

def llama_batch(d):
    return {f"batched {b['pl']} seq tok/s": b["speed_tg"] for b in d if "speed_tg" in b}

metrics = [f"prefill {p} tok/s" for p in prefill] + [f"decode {decode} tok/s"]
metrics += [f"batched {b} seq tok/s" for b in batch]
metrics += ["peak RSS, prefill+decode (MiB)"] + (["peak RSS, batched (MiB)"] if batch else [])

summary, lines = {}, []
notes = set()
for pair in pairs:
    name = pair.split("=", 1)[0]
    samples = {"strata": {m: [] for m in metrics}, "llama.cpp": {m: [] for m in metrics}}
    for rep in range(1, reps + 1):
        # strata prints one JSON object; llama-bench a JSON list, llama-batched-bench JSON lines
        for tool, key, shape, pd_f, b_f in (("strata", "strata", dict, strata_pd, strata_batch),
                                            ("llama.cpp", "llama", list, llama_pd, llama_batch)):
            d, rss = load(f"{name}.{key}.pd.r{rep}")
            if isinstance(d, shape):
                got = pd_f(d)
                for m, v in got.items():
                    if m in samples[tool]:
                        samples[tool][m].append(v)
                if got and rss is not None:
                    samples[tool]["peak RSS, prefill+decode (MiB)"].append(rss)
            if not batch:
                continue
            d, rss = load(f"{name}.{key}.batch.r{rep}")
            if tool == "strata" and isinstance(d, dict) and "batched" not in d:
                notes.add("strata bench printed no \"batched\" results")
                continue
            if isinstance(d, shape):
                got = b_f(d)
                for m, v in got.items():
                    if m in samples[tool]:
                        samples[tool][m].append(v)
                if got and rss is not None:
                    samples[tool]["peak RSS, batched (MiB)"].append(rss)
    summary[name] = {"samples": samples, "median": {}}
    for m in metrics:
        med = {t: (statistics.median(samples[t][m]) if samples[t][m] else None) for t in samples}
        summary[name]["median"][m] = med
        def cell(t):
            v, n = med[t], len(samples[t][m])
            if v is None:
                if t == "strata" and "batched" in m and not have_batch:
                    return "n/a (no bench --batch)"
                return "missing"
            s = f"{v:.2f}" if v < 10 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
            return s + (f" (n={n})" if n != reps else "")
        s, l = med["strata"], med["llama.cpp"]
        ratio = f"{s / l:.2f}x" if s is not None and l else ""
        lines.append(f"| {name} | {m} | {cell('strata')} | {cell('llama.cpp')} | {ratio} |")

setup = open(os.path.join(out, "setup.txt")).read().strip().splitlines()
md = ["# strata vs llama.cpp (CPU)", ""] + [f"- {s}" for s in setup]
md += [f"- figures: medians of {reps} repetition(s), one process each; (n=K) marks a cell "
       f"with K successful samples; ratio = strata / llama.cpp (above 1: strata faster, or "
       f"more memory for the RSS rows)"]
md += [f"- note: {n}" for n in sorted(notes)]
md += ["", "| model | metric | strata | llama.cpp | strata/llama.cpp |", "|---|---|---|---|---|"]
md += lines
text = "\n".join(md) + "\n"
open(os.path.join(out, "results.md"), "w").write(text)
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(text, end="")
PY
echo "raw results and logs: $OUT" >&2
