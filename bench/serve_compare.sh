#!/usr/bin/env bash
# Side-by-side serving benchmark: strata serve against llama.cpp's llama-server, same weights,
# same thread count, one server at a time. Run with --help; the help text is the documentation.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/serve_compare.sh [options]

Throughput: for each client count C in --concurrency it starts one server, waits for
GET /health = 200, sends --warmup requests and then the measured load with bench/serve_load.py
(C clients sending streaming requests back to back, temperature 0, max_tokens M, distinct
seeded prompts), reads the server's memory, stops it, and does the same with the other server
(which one goes first alternates from one C to the next):

  strata serve --store STORE --models BASE --host 127.0.0.1 --port P --threads T
               --kv-memory KV --max-batch C --ctx CTX
  llama-server -m GGUF_DIR/BASE-bf16.gguf -a BASE --host 127.0.0.1 --port P -t T -tb T
               --parallel C -c C*CTX   (requests carry "cache_prompt": false; the server's
               --no-cache-prompt too where this build has it)

BASE is the first of --variants. Memory: after the load, VmRSS and VmHWM from /proc/PID/status,
Rss, Pss, Pss_Anon, Pss_File from /proc/PID/smaps_rollup.

Memory scenario (--mem-concurrency clients, --mem-requests requests per model, rotating):
  strata, one process serving BASE alone
  strata, one process serving every variant of --variants plus --be-variant (if in the store)
  llama-server, one process per model (llama-server serves one model): each GGUF in turn,
    same load, its memory read; the table gives each and their sum. The GGUFs are distinct
    files, so running them one at a time gives the same RSS as running them side by side
    (which a 7B + 7B-DUS pair would not fit in RAM to do).

Output: the markdown table to stdout and to --out (default
bench/results/serve-PRESET-DATE.md); each run's serve_load JSON, memory, server log and
command line under --raw-dir (default /tmp/serve-compare-PRESET-DATE).

options (the environment variable in brackets sets the default):
  --preset NAME         small | mistral-7b (default small) [PRESET]
  --strata BIN          strata binary (default /work/main/build/strata) [STRATA]
  --store DIR           strata store (default /tmp/bench-store) [STORE]
  --llama-bin DIR       directory with llama-server (default /tmp/llama.cpp/build/bin) [LLAMA_BIN]
  --llama-commit SHA    llama.cpp commit for the report (default: git of LLAMA_BIN/../.., else
                        unknown) [LLAMA_COMMIT]
  --gguf-dir DIR        GGUFs, named VARIANT-bf16.gguf (default /tmp/gguf) [GGUF_DIR]
  --variants A,B        variants (first = the throughput model; default: small,small-dus or
                        mistral-7b,mistral-7b-dus) [VARIANTS]
  --be-variant NAME     block-expansion variant for the memory scenario (default PRESET-be;
                        "none" to leave it out) [BE_VARIANT]
  --concurrency LIST    client counts (default 1,4,16,64; 7B: 1,4,16) [CONCURRENCY]
  --requests-per-client N  measured requests = max(N*C, --min-requests) (default 2; 7B: 1) [RPC]
  --min-requests N      (default 4; 7B: 2) [MIN_REQUESTS]
  --warmup N            warm-up requests before each measured load (default 2; 7B: 1) [WARMUP]
  --max-tokens M        max_tokens per request (default 32; 7B: 16) [MAX_TOKENS]
  --prompt-tokens N     approximate prompt tokens (words) (default 32) [PROMPT_TOKENS]
  --endpoint E          completions | chat (default completions) [ENDPOINT]
  --threads N           threads of both servers (default 2) [THREADS]
  --ctx N               context per sequence / slot (default 256) [CTX]
  --kv-memory SIZE      strata serve --kv-memory (default auto: C * CTX * KV bytes per token
                        of all the process's models, +1/8, as NNNM) [KV_MEMORY]
  --mem-concurrency N   clients in the memory scenario (default 4) [MEM_CONCURRENCY]
  --mem-requests N      requests per model in the memory scenario (default 4; 7B: 2) [MEM_REQUESTS]
  --only WHAT           throughput | memory (default: both) [ONLY]
  --servers LIST        strata,llama (default both) [SERVERS]
  --port N              first port of the servers; each run takes the next (default 8190) [PORT]
  --ready-timeout S     seconds for /health to answer 200 (default 300; 7B: 1800) [READY_TIMEOUT]
  --strata-args ARGS    extra strata serve arguments (word-split) [STRATA_ARGS]
  --llama-args ARGS     extra llama-server arguments (word-split), e.g. "--poll 0" [LLAMA_ARGS]
  --out FILE            markdown report (default bench/results/serve-PRESET-DATE.md) [OUT]
  --raw-dir DIR         raw results (default /tmp/serve-compare-PRESET-DATE) [RAW_DIR]
  -h, --help            this help

Defaults keep the small preset to a few minutes on 2 cores (C=64: 128 requests of 32 tokens)
and the 7B preset under about 25 minutes. On a shared machine llama.cpp's spinning threads
suffer more than blocking ones when cores are oversubscribed: the report logs the load average
around every run; compare figures from a quiet machine, or pass --llama-args "--poll 0" and say so.

The block-expansion variant (examples/block-expansion-40.yml: 8 copies of the last layer with
o_proj and down_proj scaled to 0, 40 layers that compute what the 32 do) over the preset's
source model:
  sed 's#openchat/openchat-3.5-0106#/tmp/models/small#' examples/block-expansion-40.yml \
      > /tmp/small-be.yml
  build/strata compile /tmp/small-be.yml --name small-be --store /tmp/bench-store
(7B: the source directory of `strata show mistral-7b`, name mistral-7b-be). Its GGUF for
llama-server, if wanted (llama.cpp's converter needs its Python requirements):
  build/strata export small-be /tmp/small-be-hf --store /tmp/bench-store
  python3 /tmp/llama.cpp/convert_hf_to_gguf.py /tmp/small-be-hf --outtype bf16 \
      --outfile /tmp/gguf/small-be-bf16.gguf
Without the variant, strata serves the --variants only; without its GGUF, llama-server's sum
covers the GGUFs found; the report says which.

examples:
  bench/serve_compare.sh                                  # small preset, everything
  bench/serve_compare.sh --preset mistral-7b
  bench/serve_compare.sh --servers llama --only throughput --concurrency 1,4
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=$ROOT/bench/serve_load.py

PRESET=${PRESET:-small}
STRATA=${STRATA:-/work/main/build/strata}
STORE=${STORE:-/tmp/bench-store}
LLAMA_BIN=${LLAMA_BIN:-/tmp/llama.cpp/build/bin}
LLAMA_COMMIT=${LLAMA_COMMIT:-}
GGUF_DIR=${GGUF_DIR:-/tmp/gguf}
VARIANTS=${VARIANTS:-}
BE_VARIANT=${BE_VARIANT:-}
CONCURRENCY=${CONCURRENCY:-}
RPC=${RPC:-}
MIN_REQUESTS=${MIN_REQUESTS:-}
WARMUP=${WARMUP:-}
MAX_TOKENS=${MAX_TOKENS:-}
PROMPT_TOKENS=${PROMPT_TOKENS:-32}
ENDPOINT=${ENDPOINT:-completions}
THREADS=${THREADS:-2}
CTX=${CTX:-256}
KV_MEMORY=${KV_MEMORY:-auto}
MEM_CONCURRENCY=${MEM_CONCURRENCY:-4}
MEM_REQUESTS=${MEM_REQUESTS:-}
ONLY=${ONLY:-}
SERVERS=${SERVERS:-strata,llama}
PORT=${PORT:-8190}
READY_TIMEOUT=${READY_TIMEOUT:-}
STRATA_ARGS=${STRATA_ARGS:-}
LLAMA_ARGS=${LLAMA_ARGS:-}
OUT=${OUT:-}
RAW_DIR=${RAW_DIR:-}

die() { echo "serve_compare.sh: $*" >&2; exit 2; }
need_arg() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --preset) need_arg "$@"; PRESET=$2; shift 2 ;;
    --strata) need_arg "$@"; STRATA=$2; shift 2 ;;
    --store) need_arg "$@"; STORE=$2; shift 2 ;;
    --llama-bin) need_arg "$@"; LLAMA_BIN=$2; shift 2 ;;
    --llama-commit) need_arg "$@"; LLAMA_COMMIT=$2; shift 2 ;;
    --gguf-dir) need_arg "$@"; GGUF_DIR=$2; shift 2 ;;
    --variants) need_arg "$@"; VARIANTS=$2; shift 2 ;;
    --be-variant) need_arg "$@"; BE_VARIANT=$2; shift 2 ;;
    --concurrency) need_arg "$@"; CONCURRENCY=$2; shift 2 ;;
    --requests-per-client) need_arg "$@"; RPC=$2; shift 2 ;;
    --min-requests) need_arg "$@"; MIN_REQUESTS=$2; shift 2 ;;
    --warmup) need_arg "$@"; WARMUP=$2; shift 2 ;;
    --max-tokens) need_arg "$@"; MAX_TOKENS=$2; shift 2 ;;
    --prompt-tokens) need_arg "$@"; PROMPT_TOKENS=$2; shift 2 ;;
    --endpoint) need_arg "$@"; ENDPOINT=$2; shift 2 ;;
    --threads) need_arg "$@"; THREADS=$2; shift 2 ;;
    --ctx) need_arg "$@"; CTX=$2; shift 2 ;;
    --kv-memory) need_arg "$@"; KV_MEMORY=$2; shift 2 ;;
    --mem-concurrency) need_arg "$@"; MEM_CONCURRENCY=$2; shift 2 ;;
    --mem-requests) need_arg "$@"; MEM_REQUESTS=$2; shift 2 ;;
    --only) need_arg "$@"; ONLY=$2; shift 2 ;;
    --servers) need_arg "$@"; SERVERS=$2; shift 2 ;;
    --port) need_arg "$@"; PORT=$2; shift 2 ;;
    --ready-timeout) need_arg "$@"; READY_TIMEOUT=$2; shift 2 ;;
    --strata-args) need_arg "$@"; STRATA_ARGS=$2; shift 2 ;;
    --llama-args) need_arg "$@"; LLAMA_ARGS=$2; shift 2 ;;
    --out) need_arg "$@"; OUT=$2; shift 2 ;;
    --raw-dir) need_arg "$@"; RAW_DIR=$2; shift 2 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

case $PRESET in
  small)
    : "${VARIANTS:=small,small-dus}" "${CONCURRENCY:=1,4,16,64}" "${RPC:=2}" "${MIN_REQUESTS:=4}"
    : "${WARMUP:=2}" "${MAX_TOKENS:=32}" "${MEM_REQUESTS:=4}" "${READY_TIMEOUT:=300}" ;;
  mistral-7b)
    : "${VARIANTS:=mistral-7b,mistral-7b-dus}" "${CONCURRENCY:=1,4,16}" "${RPC:=1}"
    : "${MIN_REQUESTS:=2}" "${WARMUP:=1}" "${MAX_TOKENS:=16}" "${MEM_REQUESTS:=2}"
    : "${READY_TIMEOUT:=1800}" ;;
  *) die "--preset: small or mistral-7b, got '$PRESET'" ;;
esac
: "${BE_VARIANT:=$PRESET-be}"
posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"; }
[[ $CONCURRENCY =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--concurrency: a list like 1,4,16"
posint --requests-per-client "$RPC"; posint --min-requests "$MIN_REQUESTS"
posint --max-tokens "$MAX_TOKENS"; posint --prompt-tokens "$PROMPT_TOKENS"
posint --threads "$THREADS"; posint --ctx "$CTX"; posint --port "$PORT"
BASE_PORT=$PORT RUN_INDEX=0  # next_port moves PORT on by one per run
posint --mem-concurrency "$MEM_CONCURRENCY"; posint --mem-requests "$MEM_REQUESTS"
posint --ready-timeout "$READY_TIMEOUT"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup must be a number"
case $ENDPOINT in completions|chat) ;; *) die "--endpoint: completions or chat" ;; esac
case $ONLY in ""|throughput|memory) ;; *) die "--only: throughput or memory" ;; esac
DO_STRATA=0 DO_LLAMA=0
for s in ${SERVERS//,/ }; do
  case $s in strata) DO_STRATA=1 ;; llama) DO_LLAMA=1 ;; *) die "--servers: strata,llama" ;; esac
done
if [ $(( PROMPT_TOKENS + MAX_TOKENS + 64 )) -gt "$CTX" ]; then
  die "--ctx $CTX is too small for ~$PROMPT_TOKENS prompt + $MAX_TOKENS new tokens (+64 slack)"
fi
IFS=, read -r -a VARS <<< "$VARIANTS"
[ ${#VARS[@]} -ge 1 ] || die "--variants: at least one"
BASE=${VARS[0]}
command -v python3 > /dev/null || die "python3 is needed"
command -v curl > /dev/null || die "curl is needed (for /health)"
[ -f "$LOAD" ] || die "$LOAD not found"
if [ $DO_STRATA = 1 ]; then
  [ -x "$STRATA" ] || die "strata binary not found: $STRATA (--strata)"
  STRATA=$(realpath "$STRATA")
  "$STRATA" serve --help > /dev/null 2>&1 || die "$STRATA has no working 'serve' command"
fi
if [ $DO_LLAMA = 1 ]; then
  [ -x "$LLAMA_BIN/llama-server" ] || die "$LLAMA_BIN/llama-server not found (--llama-bin)"
  [ -f "$GGUF_DIR/$BASE-bf16.gguf" ] || die "$GGUF_DIR/$BASE-bf16.gguf not found (--gguf-dir)"
fi

DATE=$(date +%Y-%m-%d)
: "${OUT:=$ROOT/bench/results/serve-$PRESET-$DATE.md}"
: "${RAW_DIR:=/tmp/serve-compare-$PRESET-$DATE}"
if [ -e "$RAW_DIR" ]; then RAW_DIR=$RAW_DIR-$(date +%H%M%S); fi
mkdir -p "$RAW_DIR" "$(dirname "$OUT")"
RUNS=$RAW_DIR/runs.tsv
: > "$RUNS"
log() { echo "[serve_compare $(date +%H:%M:%S)] $*" >&2; }

# The store's layer counts (strata ls), for the automatic KV budget.
declare -A LAYERS=()
if [ $DO_STRATA = 1 ]; then
  while read -r name _ layers _; do
    [[ $layers =~ ^[0-9]+$ ]] && LAYERS[$name]=$layers
  done < <("$STRATA" ls --store "$STORE" 2>/dev/null | tail -n +2)
  for v in "${VARS[@]}"; do
    [ -n "${LAYERS[$v]:-}" ] || die "variant $v is not in the store $STORE (strata ls)"
  done
fi
HAVE_BE=0
if [ "$BE_VARIANT" != none ] && [ -n "${LAYERS[$BE_VARIANT]:-}" ]; then HAVE_BE=1; fi
# K+V bytes per token and layer at 16 bits: small 4 KV heads x 64, Mistral-7B 8 KV heads x 128.
case $PRESET in small) KV_LAYER_BYTES=1024 ;; mistral-7b) KV_LAYER_BYTES=4096 ;; esac

kv_for() {  # kv_for SEQS MODEL... -> strata --kv-memory value
  if [ "$KV_MEMORY" != auto ]; then echo "$KV_MEMORY"; return; fi
  local seqs=$1 layers=0 m; shift
  for m in "$@"; do layers=$(( layers + ${LAYERS[$m]:-48} )); done
  local bytes=$(( seqs * CTX * layers * KV_LAYER_BYTES ))
  bytes=$(( bytes + bytes / 8 ))
  echo "$(( (bytes + 1048575) / 1048576 ))M"
}

LLAMA_CACHE_FLAG=""
if [ $DO_LLAMA = 1 ] && "$LLAMA_BIN/llama-server" --help 2>&1 | grep -q -- '--no-cache-prompt'; then
  LLAMA_CACHE_FLAG=--no-cache-prompt
fi

SERVER_PID="" SERVER_TAG=""
cleanup() {  # stops the server this script started, records its exit status
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    # stderr off while reaping: bash's "Aborted" job notice for llama-server, which calls
    # std::terminate on its way out after SIGTERM (its exit status is in TAG.exit).
    exec 3>&2 2>/dev/null
    kill "$SERVER_PID" || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" || break; sleep 0.2; done
    kill -9 "$SERVER_PID" || true
    local rc=0
    wait "$SERVER_PID" || rc=$?
    exec 2>&3 3>&-
    [ -n "$SERVER_TAG" ] && echo "$rc" > "$RAW_DIR/$SERVER_TAG.exit"
  fi
  SERVER_PID="" SERVER_TAG=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%d", b - a}'; }
health() { curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$PORT/health" || true; }

# Each run on a port of its own (called before its command line is built): the last run's
# connections may hold its port in TIME_WAIT for a minute, which blocks a new bind when
# the old server did not set SO_REUSEADDR on them (llama-server's).
next_port() { PORT=$((BASE_PORT + RUN_INDEX)); RUN_INDEX=$((RUN_INDEX + 1)); }

start_server() {  # start_server TAG CMD... : starts, waits for /health 200, or dies
  local tag=$1; shift
  cleanup
  if [ "$(health)" != 000 ]; then die "something already answers on port $PORT (--port)"; fi
  printf '%q ' "$@" > "$RAW_DIR/$tag.cmd"; echo >> "$RAW_DIR/$tag.cmd"
  log "$tag: $*"
  "$@" > "$RAW_DIR/$tag.log" 2>&1 &
  SERVER_PID=$! SERVER_TAG=$tag
  local t0 code
  t0=$(date +%s.%N)
  while :; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
      SERVER_PID=""
      echo "serve_compare.sh: $tag: the server exited (status $rc) before /health answered 200;" \
           "last lines of $RAW_DIR/$tag.log:" >&2
      tail -n 20 "$RAW_DIR/$tag.log" >&2
      exit 1
    fi
    code=$(health)
    [ "$code" = 200 ] && break
    if [ "$(elapsed "$t0")" -ge "$READY_TIMEOUT" ]; then
      echo "serve_compare.sh: $tag: /health did not answer 200 within ${READY_TIMEOUT}s" \
           "(last: $code); last lines of $RAW_DIR/$tag.log:" >&2
      tail -n 20 "$RAW_DIR/$tag.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  local ready
  ready=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  echo "$ready" > "$RAW_DIR/$tag.ready_s"
  log "$tag: ready after ${ready}s (pid $SERVER_PID)"
}

read_mem() {  # read_mem TAG : the running server's memory, kB, as JSON
  local pid=$SERVER_PID
  { awk '/^(VmRSS|VmHWM):/ {gsub(":","",$1); printf "\"%s\": %s, ", $1, $2}' "/proc/$pid/status"
    awk '/^(Rss|Pss|Pss_Anon|Pss_File|Pss_Shmem):/ {gsub(":","",$1); printf "\"%s\": %s, ", $1, $2}' \
        "/proc/$pid/smaps_rollup" 2>/dev/null || true
    # strata: the KV memory its models touched and its weight pool (/metrics), kB
    curl -s -m 5 "http://127.0.0.1:$PORT/metrics" 2>/dev/null | awk '
      /^strata_kv_peak_bytes/ {kv += $2; seen = 1}
      /^strata_weight_resident_bytes/ {w = $2}
      END {if (seen) printf "\"KvPeak\": %d, \"Weights\": %d, ", kv / 1024, w / 1024}' || true
  } | sed 's/^/{/; s/, $/}/' > "$RAW_DIR/$tag.mem.json"
  echo >> "$RAW_DIR/$tag.mem.json"
}

run_load() {  # run_load TAG CLIENTS REQUESTS MODELS [serve_load args]
  local tag=$1 clients=$2 requests=$3 models=$4; shift 4
  local la0 la1
  la0=$(cut -d' ' -f1-2 /proc/loadavg)
  log "$tag: $clients clients, $requests requests (+$WARMUP warm-up), models $models"
  if ! python3 "$LOAD" --url "http://127.0.0.1:$PORT" --model "$models" \
      --concurrency "$clients" --requests "$requests" --warmup "$WARMUP" \
      --max-tokens "$MAX_TOKENS" --prompt-tokens "$PROMPT_TOKENS" --endpoint "$ENDPOINT" \
      --label "$tag" --json "$@" > "$RAW_DIR/$tag.load.json" 2> "$RAW_DIR/$tag.load.err"; then
    log "$tag: serve_load failed: $(tail -n 3 "$RAW_DIR/$tag.load.err" | tr '\n' ' ')"
  fi
  la1=$(cut -d' ' -f1-2 /proc/loadavg)
  grep -v '^serve_load' "$RAW_DIR/$tag.load.err" | tail -n 1 >&2 || true
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "$tag: the server died during the load (see $RAW_DIR/$tag.log)"
    echo '{}' > "$RAW_DIR/$tag.mem.json"
  else
    read_mem "$tag"
  fi
  echo "$la0" > "$RAW_DIR/$tag.loadavg"; echo "$la1" >> "$RAW_DIR/$tag.loadavg"
}

strata_cmd() {  # strata_cmd SEQS MODEL...
  local seqs=$1; shift
  local models; models=$(IFS=,; echo "$*")
  # shellcheck disable=SC2086
  echo "$STRATA" serve --store "$STORE" --models "$models" --host 127.0.0.1 --port "$PORT" \
    --threads "$THREADS" --kv-memory "$(kv_for "$seqs" "$@")" --max-batch "$seqs" --ctx "$CTX" \
    $STRATA_ARGS
}
llama_cmd() {  # llama_cmd SEQS MODEL
  local seqs=$1 model=$2
  # shellcheck disable=SC2086
  echo "$LLAMA_BIN/llama-server" -m "$GGUF_DIR/$model-bf16.gguf" -a "$model" --host 127.0.0.1 \
    --port "$PORT" -t "$THREADS" -tb "$THREADS" --parallel "$seqs" -c "$(( seqs * CTX ))" \
    $LLAMA_CACHE_FLAG $LLAMA_ARGS
}

# Every path and argument above is free of spaces, so word-splitting these is safe.
run_strata() {  # run_strata SECTION TAG CLIENTS REQUESTS SEQS MODEL...
  local section=$1 tag=$2 clients=$3 requests=$4 seqs=$5; shift 5
  local models; models=$(IFS=,; echo "$*")
  # shellcheck disable=SC2046
  next_port
  start_server "$tag" $(strata_cmd "$seqs" "$@")
  run_load "$tag" "$clients" "$requests" "$models"
  cleanup
  printf '%s\t%s\t%s\t%s\t%s\n' "$section" strata "$clients" "$models" "$tag" >> "$RUNS"
}
run_llama() {  # run_llama SECTION TAG CLIENTS REQUESTS SEQS MODEL
  local section=$1 tag=$2 clients=$3 requests=$4 seqs=$5 model=$6
  # shellcheck disable=SC2046
  next_port
  start_server "$tag" $(llama_cmd "$seqs" "$model")
  run_load "$tag" "$clients" "$requests" "$model" --no-cache-prompt
  cleanup
  printf '%s\t%s\t%s\t%s\t%s\n' "$section" llama "$clients" "$model" "$tag" >> "$RUNS"
}

{
  echo "PRESET=$PRESET"; echo "STRATA=$STRATA"; echo "STORE=$STORE"; echo "LLAMA_BIN=$LLAMA_BIN"
  echo "GGUF_DIR=$GGUF_DIR"; echo "VARIANTS=$VARIANTS"; echo "BE_VARIANT=$BE_VARIANT"
  echo "HAVE_BE=$HAVE_BE"; echo "CONCURRENCY=$CONCURRENCY"; echo "RPC=$RPC"
  echo "MIN_REQUESTS=$MIN_REQUESTS"; echo "WARMUP=$WARMUP"; echo "MAX_TOKENS=$MAX_TOKENS"
  echo "PROMPT_TOKENS=$PROMPT_TOKENS"; echo "ENDPOINT=$ENDPOINT"; echo "THREADS=$THREADS"
  echo "CTX=$CTX"; echo "KV_MEMORY=$KV_MEMORY"; echo "MEM_CONCURRENCY=$MEM_CONCURRENCY"
  echo "MEM_REQUESTS=$MEM_REQUESTS"; echo "SERVERS=$SERVERS"; echo "LLAMA_ARGS=$LLAMA_ARGS"
  echo "STRATA_ARGS=$STRATA_ARGS"; echo "LLAMA_CACHE_FLAG=$LLAMA_CACHE_FLAG"
  echo "STRATA_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "LLAMA_COMMIT=${LLAMA_COMMIT:-$(git -C "$LLAMA_BIN/../.." rev-parse --short HEAD 2>/dev/null \
    || echo unknown)}"
  echo "START=$(date -Iseconds)"
  echo "MACHINE=$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
} > "$RAW_DIR/params"

# --- throughput ---
if [ "$ONLY" != memory ]; then
  i=0
  for c in ${CONCURRENCY//,/ }; do
    n=$(( c * RPC )); [ "$n" -ge "$MIN_REQUESTS" ] || n=$MIN_REQUESTS
    order="strata llama"; [ $(( i % 2 )) = 1 ] && order="llama strata"
    for s in $order; do
      if [ "$s" = strata ] && [ $DO_STRATA = 1 ]; then
        run_strata throughput "tp-strata-c$c" "$c" "$n" "$c" "$BASE"
      elif [ "$s" = llama ] && [ $DO_LLAMA = 1 ]; then
        run_llama throughput "tp-llama-c$c" "$c" "$n" "$c" "$BASE"
      fi
    done
    i=$(( i + 1 ))
  done
fi

# --- memory: several variants in one strata process against one llama-server per model ---
if [ "$ONLY" != throughput ]; then
  MC=$MEM_CONCURRENCY
  MEM_MODELS=("${VARS[@]}")
  [ $HAVE_BE = 1 ] && MEM_MODELS+=("$BE_VARIANT")
  if [ $DO_STRATA = 1 ]; then
    run_strata memory mem-strata-base "$MC" "$MEM_REQUESTS" "$MC" "$BASE"
    if [ ${#MEM_MODELS[@]} -gt 1 ]; then
      run_strata memory mem-strata-all "$MC" $(( MEM_REQUESTS * ${#MEM_MODELS[@]} )) "$MC" \
        "${MEM_MODELS[@]}"
    fi
  fi
  if [ $DO_LLAMA = 1 ]; then
    LL_MODELS=("${VARS[@]}")
    [ "$BE_VARIANT" != none ] && LL_MODELS+=("$BE_VARIANT")
    for m in "${LL_MODELS[@]}"; do
      if [ -f "$GGUF_DIR/$m-bf16.gguf" ]; then
        run_llama memory "mem-llama-$m" "$MC" "$MEM_REQUESTS" "$MC" "$m"
      else
        log "no $GGUF_DIR/$m-bf16.gguf: llama-server's memory sum leaves $m out"
        printf '%s\t%s\t%s\t%s\t%s\n' memory llama-missing "$MC" "$m" - >> "$RUNS"
      fi
    done
  fi
fi
echo "END=$(date -Iseconds)" >> "$RAW_DIR/params"

# --- report ---
python3 - "$RAW_DIR" "$OUT" <<'PY'
import json, os, sys
raw, out = sys.argv[1], sys.argv[2]
params = {}
for line in open(os.path.join(raw, "params")):
    k, _, v = line.rstrip("\n").partition("=")
    params[k] = v
runs = [l.rstrip("\n").split("\t") for l in open(os.path.join(raw, "runs.tsv")) if l.strip()]

def load(tag, kind):
    try:
        with open(os.path.join(raw, "%s.%s.json" % (tag, kind))) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}

def f1(x):
    return "-" if x is None else ("%.1f" % x)

def mib(kb):
    return "-" if kb is None else "%.1f" % (kb / 1024.0)

def readfile(tag, ext):
    try:
        return open(os.path.join(raw, "%s.%s" % (tag, ext))).read().strip()
    except OSError:
        return ""

name = {"strata": "strata serve", "llama": "llama-server"}
L = []
L.append("# strata serve vs llama-server (%s preset)" % params["PRESET"])
L.append("")
L.append("- date: %s to %s" % (params.get("START"), params.get("END")))
L.append("- machine: %s" % params.get("MACHINE"))
L.append("- strata: %s (commit %s), store %s" % (params["STRATA"], params["STRATA_COMMIT"],
                                                 params["STORE"]))
L.append("- llama.cpp: %s (commit %s), GGUFs %s/VARIANT-bf16.gguf, extra args: %s%s" % (
    params["LLAMA_BIN"], params["LLAMA_COMMIT"], params["GGUF_DIR"],
    params["LLAMA_ARGS"] or "none",
    "; requests carry cache_prompt: false" + (" and the server runs --no-cache-prompt"
                                              if params["LLAMA_CACHE_FLAG"] else "")))
L.append("- load (bench/serve_load.py): /v1/%s, streaming, temperature 0, ~%s-word prompts "
         "(distinct, seeded), max_tokens %s, %s warm-up request(s) excluded; threads %s for both; "
         "context %s per sequence (llama-server -c = clients x %s, strata --ctx %s --max-batch "
         "clients)" % (params["ENDPOINT"], params["PROMPT_TOKENS"], params["MAX_TOKENS"],
                       params["WARMUP"], params["THREADS"], params["CTX"], params["CTX"],
                       params["CTX"]))
L.append("- tok/s: completion tokens of all measured requests / wall time from the first send to "
         "the last done; TTFT: send to first content chunk; ITL: gaps between content chunks "
         "(per token); memory in MiB after the load: VmRSS (status), Rss and Pss (smaps_rollup)")
L.append("")
tp = [r for r in runs if r[0] == "throughput"]
if tp:
    L.append("## Throughput: %s" % tp[0][3])
    L.append("")
    L.append("| server | clients | requests | aggregate tok/s | TTFT p50 / p99 ms | "
             "ITL p50 / p99 ms | errors | VmRSS MiB | Rss MiB | Pss MiB |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for section, server, clients, models, tag in sorted(tp, key=lambda r: (int(r[2]), r[1] != "strata")):
        s, m = load(tag, "load"), load(tag, "mem")
        if not s:
            L.append("| %s | %s | - | failed (see %s/%s.load.err) | | | | | | |" % (
                name[server], clients, raw, tag))
            continue
        L.append("| %s | %s | %d | %.1f | %s / %s | %s / %s | %d | %s | %s | %s |" % (
            name[server], clients, s["requests"], s["tokens_per_s"],
            f1(s["ttft_ms"]["p50"]), f1(s["ttft_ms"]["p99"]),
            f1(s["itl_ms"]["p50"]), f1(s["itl_ms"]["p99"]), s["errors"],
            mib(m.get("VmRSS")), mib(m.get("Rss")), mib(m.get("Pss"))))
    L.append("")
    notes = []
    for section, server, clients, models, tag in tp:
        s = load(tag, "load")
        if s and s.get("completion_tokens_mean") is not None and \
                s["completion_tokens_mean"] < int(params["MAX_TOKENS"]):
            notes.append("%s at %s clients: %.1f completion tokens per request on average "
                         "(below max_tokens: EOS)" % (name[server], clients,
                                                      s["completion_tokens_mean"]))
        if s and s.get("error_kinds"):
            for k, n in s["error_kinds"].items():
                notes.append("%s at %s clients: %d x %s" % (name[server], clients, n, k))
    for n in notes:
        L.append("- " + n)
    if notes:
        L.append("")
mem = [r for r in runs if r[0] == "memory"]
if mem:
    L.append("## Memory: several variants served at once")
    L.append("")
    L.append("%s clients, %s requests per model (rotating across the process's models), then the "
             "memory of the server; MiB." % (params["MEM_CONCURRENCY"], params["MEM_REQUESTS"]))
    L.append("")
    L.append("| server | models | processes | VmRSS | VmHWM | Rss | Pss | Pss anon | weight pool | KV touched | tok/s | errors |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    sums = {}
    llama_rows, missing = [], []
    for section, server, clients, models, tag in mem:
        if server == "llama-missing":
            missing.append(models)
            continue
        s, m = load(tag, "load"), load(tag, "mem")
        row = "| %s | %s | 1 | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            name[server], models.replace(",", ", "), mib(m.get("VmRSS")), mib(m.get("VmHWM")),
            mib(m.get("Rss")), mib(m.get("Pss")), mib(m.get("Pss_Anon")),
            mib(m.get("Weights")) if m.get("Weights") is not None else "-",
            mib(m.get("KvPeak")) if m.get("KvPeak") is not None else "-",
            f1(s.get("tokens_per_s")), s.get("errors", "-"))
        L.append(row)
        if server == "llama":
            llama_rows.append(models)
            for k in ("VmRSS", "VmHWM", "Rss", "Pss", "Pss_Anon"):
                if m.get(k) is not None:
                    sums[k] = sums.get(k, 0) + m[k]
    if len(llama_rows) > 1:
        L.append("| llama-server, sum | %s | %d | %s | %s | %s | %s | %s | | | | |" % (
            ", ".join(llama_rows), len(llama_rows), mib(sums.get("VmRSS")),
            mib(sums.get("VmHWM")), mib(sums.get("Rss")), mib(sums.get("Pss")),
            mib(sums.get("Pss_Anon"))))
    L.append("")
    L.append("- strata's weight pool and KV touched come from its /metrics "
             "(strata_weight_resident_bytes; the sum of strata_kv_peak_bytes over its models)")
    if params.get("HAVE_BE") != "1" and params.get("BE_VARIANT") != "none" and \
            any(r[1] == "strata" for r in mem):
        L.append("- the block-expansion variant %s is not in the store: strata served the "
                 "variants above only (see bench/serve_compare.sh --help to compile it)" %
                 params["BE_VARIANT"])
    if missing:
        L.append("- no GGUF for %s: llama-server's sum covers %s only" % (
            ", ".join(missing), ", ".join(llama_rows) or "nothing"))
    if llama_rows:
        L.append("- llama-server serves one model per process: each GGUF ran alone, in turn, under "
                 "the same load; the GGUFs share no file pages, so the sum is what the processes "
                 "side by side would hold")
    L.append("")
L.append("<details><summary>commands, readiness, load average</summary>")
L.append("")
for section, server, clients, models, tag in runs:
    if tag == "-":
        continue
    la = readfile(tag, "loadavg").split("\n")
    L.append("- %s: `%s` (ready after %ss; load average 1/5 min before %s, after %s)" % (
        tag, readfile(tag, "cmd"), readfile(tag, "ready_s") or "?", la[0] if la else "?",
        la[1] if len(la) > 1 else "?"))
L.append("")
L.append("raw results: %s" % raw)
L.append("</details>")
text = "\n".join(L) + "\n"
with open(out, "w") as f:
    f.write(text)
sys.stdout.write(text)
PY
log "report: $OUT (raw: $RAW_DIR)"
