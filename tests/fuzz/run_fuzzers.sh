#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in a clang tree (build-fuzz/ at the
# repository root: STRATA_FUZZ=ON, ASan + UBSan, CUDA/tests/bench off, only the
# libraries the targets link) and runs them.
#
#   run_fuzzers.sh [--ci] [--runs N] [TARGET...]
#       CI mode (the default; ctest's fuzz.seeded): each target replays its
#       regressions (tests/fuzz/regressions/TARGET/), then runs -runs=N
#       (default 20000) -seed=1 over its seed corpus (tests/fuzz/corpus/TARGET/).
#       Deterministic; new inputs go to a scratch dir that is wiped each run.
#   run_fuzzers.sh --hours H | --seconds S [--keep-going] [TARGET...]
#       Long mode: S seconds (or H hours) per target, one after the other, on
#       one core. New corpus entries accumulate in build-fuzz/corpus/TARGET/,
#       findings (crash-*, leak-*, oom-*, timeout-*, slow-unit-*) go to bench/fuzz-findings/TARGET/
#       (git-ignored), logs to build-fuzz/logs/. --keep-going: fork mode that
#       keeps fuzzing past findings (libFuzzer -fork=1 -ignore_crashes=1 ...).
#   run_fuzzers.sh --build-only
#
# TARGET: safetensors model_config plan node gguf tokenizer serve_request (default: all).
# Exit status: 0 clean, 1 a target found something (or a regression fails) or the
# build failed, 2 bad usage, 77 skipped: no clang/libFuzzer (an error instead when
# CI=true). Env: STRATA_FUZZ_CC/STRATA_FUZZ_CXX (default clang/clang++; CC and CXX
# are left alone, they name the main build's compiler), STRATA_FUZZ_JOBS (build
# jobs, default nproc), STRATA_FUZZ_BUILD (default <repo>/build-fuzz).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${STRATA_FUZZ_BUILD:-$root/build-fuzz}"
all_targets=(safetensors model_config plan node gguf tokenizer serve_request)

mode=ci runs=20000 seconds="" keep_going=0 build_only=0 targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) mode=ci ;;
    --runs) runs="${2:?--runs needs a number}"; shift ;;
    --runs=*) runs="${1#*=}" ;;
    --seconds|-max_total_time) mode=long; seconds="${2:?$1 needs a number}"; shift ;;
    --seconds=*|-max_total_time=*) mode=long; seconds="${1#*=}" ;;
    --hours) mode=long; seconds="$(awk -v h="${2:?--hours needs a number}" 'BEGIN { printf "%d", h * 3600 }')"; shift ;;
    --hours=*) mode=long; seconds="$(awk -v h="${1#*=}" 'BEGIN { printf "%d", h * 3600 }')" ;;
    --keep-going) keep_going=1 ;;
    --build-only) build_only=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "run_fuzzers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "run_fuzzers.sh: unknown target \"$t\" (targets: ${all_targets[*]})" >&2; exit 2; }
done
[[ "$runs" =~ ^[0-9]+$ ]] || { echo "run_fuzzers.sh: --runs wants a number, got \"$runs\"" >&2; exit 2; }
if [ "$mode" = long ]; then
  [[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "run_fuzzers.sh: --seconds/--hours wants a positive duration" >&2; exit 2; }
fi

# --- toolchain: clang with libFuzzer, else skip (77), or fail in CI ---------------
cc="${STRATA_FUZZ_CC:-clang}" cxx="${STRATA_FUZZ_CXX:-clang++}"
missing_toolchain() {
  if [ "${CI:-}" = true ]; then
    echo "run_fuzzers.sh: FAIL: $1 (CI=true: the fuzz targets must run; bash scripts/install-deps.sh installs clang and libclang-rt-14-dev)" >&2
    exit 1
  fi
  echo "run_fuzzers.sh: SKIP: $1; install clang and libclang-rt-14-dev (bash scripts/install-deps.sh) to run the fuzz targets" >&2
  exit 77
}
command -v "$cxx" >/dev/null 2>&1 && command -v "$cc" >/dev/null 2>&1 || missing_toolchain "$cxx/$cc not found"
"$cxx" --version 2>/dev/null | grep -qi clang || missing_toolchain "$cxx is not clang"
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$probe_dir/p.cc"
"$cxx" -fsanitize=fuzzer,address,undefined "$probe_dir/p.cc" -o "$probe_dir/p" >"$probe_dir/log" 2>&1 ||
  missing_toolchain "$cxx cannot link -fsanitize=fuzzer,address,undefined ($(head -c 300 "$probe_dir/log"))"

# --- configure and build ----------------------------------------------------------
jobs="${STRATA_FUZZ_JOBS:-$(nproc)}"
# -O1 with line tables: fast to compile, symbolized reports. No -DNDEBUG, so
# assert()s (nlohmann's JSON_ASSERT included) stay armed.
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DSTRATA_FUZZ=ON -DSTRATA_CUDA=OFF -DSTRATA_TESTS=OFF -DSTRATA_BENCH=OFF -DSTRATA_ASAN=OFF -DSTRATA_TSAN=OFF \
  >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; echo "run_fuzzers.sh: configuring $build failed" >&2; exit 1; }
start=$SECONDS
nice -n 10 cmake --build "$build" --target strata_fuzzers -j "$jobs" ||
  { echo "run_fuzzers.sh: building the fuzz targets failed" >&2; exit 1; }
echo "run_fuzzers.sh: fuzz targets built in $((SECONDS - start)) s ($build/fuzz)"
[ "$build_only" = 1 ] && exit 0

# --- run ------------------------------------------------------------------------
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
if ! command -v llvm-symbolizer >/dev/null 2>&1 && [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  for sym in "$(dirname "$(readlink -f "$(command -v "$cxx")")")/llvm-symbolizer" /usr/lib/llvm-14/bin/llvm-symbolizer; do
    [ -x "$sym" ] && { export ASAN_SYMBOLIZER_PATH="$sym"; break; }
  done
fi

# Inputs longer than -max_len are cut when loaded, so it covers every seed and regression.
max_len_for() {
  local t="$1" n
  case "$t" in
    gguf|tokenizer) n=16384 ;;
    *) n=4096 ;;
  esac
  local f s
  for f in "$here/corpus/$t"/* "$here/regressions/$t"/*; do
    [ -f "$f" ] || continue
    s=$(stat -c %s "$f")
    [ "$s" -gt "$n" ] && n=$s
  done
  echo "$n"
}

failed=() summary=()
for t in "${targets[@]}"; do
  bin="$build/fuzz/${t}_fuzz"
  seeds="$here/corpus/$t"
  regress="$here/regressions/$t"
  dict="$here/dict/$t.dict"
  opts=(-max_len="$(max_len_for "$t")" -rss_limit_mb=2048 -print_final_stats=1 -print_funcs=0)
  [ -f "$dict" ] && opts+=(-dict="$dict")
  if [ "$mode" = ci ]; then
    findings="$build/ci-findings/$t"
    rm -rf "$findings" && mkdir -p "$findings"
    opts+=(-timeout=20 -artifact_prefix="$findings/")
    # Every past finding first, each input once.
    shopt -s nullglob
    reg=("$regress"/*)
    shopt -u nullglob
    if [ ${#reg[@]} -gt 0 ]; then
      echo "== $t: ${#reg[@]} regression input(s)"
      if ! "$bin" "${opts[@]}" "${reg[@]}" >"$findings/regressions.log" 2>&1; then
        tail -n 60 "$findings/regressions.log" >&2
        echo "run_fuzzers.sh: $t: a regression input fails again ($findings/regressions.log)" >&2
        failed+=("$t")
        continue
      fi
    fi
    scratch="$build/ci-corpus/$t"
    rm -rf "$scratch" && mkdir -p "$scratch"
    echo "== $t: -runs=$runs -seed=1 over $(ls "$seeds" | wc -l) seed(s)"
    start=$SECONDS
    if "$bin" "${opts[@]}" -seed=1 -runs="$runs" "$scratch" "$seeds" >"$findings/fuzz.log" 2>&1; then
      execs=$(grep -ho 'stat::number_of_executed_units: [0-9]*' "$findings/fuzz.log" | awk '{print $2}' || true)
      summary+=("$t: ${execs:-?} execs in $((SECONDS - start)) s, clean")
    else
      tail -n 60 "$findings/fuzz.log" >&2
      echo "run_fuzzers.sh: $t: FINDING (input in $findings/, log $findings/fuzz.log)" >&2
      failed+=("$t")
    fi
  else
    findings="$root/bench/fuzz-findings/$t"
    mkdir -p "$findings" "$build/corpus/$t" "$build/logs"
    # bench/fuzz-findings/ is scratch: a self-ignoring .gitignore keeps it out of git.
    [ -f "$root/bench/fuzz-findings/.gitignore" ] || printf '*\n' >"$root/bench/fuzz-findings/.gitignore"
    before=$(find "$findings" -type f | wc -l)
    opts+=(-timeout=25 -max_total_time="$seconds" -artifact_prefix="$findings/")
    [ "$keep_going" = 1 ] && opts+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    log="$build/logs/$t.log"
    echo "== $t: ${seconds} s, corpus $build/corpus/$t, findings $findings/, log $log"
    start=$SECONDS
    rc=0
    # Regressions stay out: an open one would stop a run that does not --keep-going.
    "$bin" "${opts[@]}" "$build/corpus/$t" "$seeds" >"$log" 2>&1 || rc=$?
    after=$(find "$findings" -type f | wc -l)
    if [ "$keep_going" = 1 ]; then  # fork mode: the last status line "#EXECS: cov: ..."
      execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#' || true)
    else
      execs=$(grep -ho 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' || true)
    fi
    line="$t: $((SECONDS - start)) s, ${execs:-?} execs, $((after - before)) new finding(s), corpus $(ls "$build/corpus/$t" | wc -l) files"
    summary+=("$line")
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
      tail -n 40 "$log" >&2
      failed+=("$t")
    fi
  fi
done

echo "== summary"
for s in "${summary[@]}"; do echo "  $s"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_fuzzers.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "run_fuzzers.sh: all clean"
