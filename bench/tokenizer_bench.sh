#!/usr/bin/env bash
# Tokenizer throughput (issue 7): builds bench/tokenizer_bench.cc against an
# existing build's libraries and runs it on ~10 MB of generated text.
# usage: bench/tokenizer_bench.sh [BUILD_DIR] [VOCAB_DIR] [MEGABYTES]
# Prints one line per tokenizer; paste them into bench/RESULTS.md with the commit and machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath "${1:-$ROOT/build}")
VOCAB=$(realpath "${2:-$ROOT/../shared/vocab}")
MB=${3:-10}
for lib in runtime/libstrata_runtime.a formats/libstrata_formats.a; do
  [[ -f $BUILD/$lib ]] || { echo "no $BUILD/$lib: build strata first (cmake --build $BUILD --target strata)" >&2; exit 1; }
done
BIN=$BUILD/tokenizer_bench
${CXX:-c++} -O2 -std=c++20 -I"$ROOT/formats/include" -I"$ROOT/runtime/include" "$ROOT/bench/tokenizer_bench.cc" \
  "$BUILD/runtime/libstrata_runtime.a" "$BUILD/formats/libstrata_formats.a" -lxxhash -lzstd -lpthread -o "$BIN"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB RAM; strata $(git -C "$ROOT" rev-parse --short HEAD)"
/usr/bin/time -f "peak_rss %M KiB, wall %e s" "$BIN" "$VOCAB" "$MB"
