#!/usr/bin/env bash
# Prepares ONE device call of the GPU checks (issue 16): builds the CUDA backend for
# Hopper here (the device machine has no Debian packages and no network) and stages
# what travels in .gpu/ (git-ignored through .git/info/exclude; ~22 MB of the 64 MiB):
#   .gpu/build/strata, .gpu/build/tests/gpu_test   RPATH $ORIGIN/lib and $ORIGIN/../lib
#   .gpu/build/lib/   the shared libraries Debian has no .a for (Boost.ProgramOptions,
#                     yaml-cpp, xxHash, TBB); libstdc++ is the device image's (newer)
#   .gpu/vocab/       a real tokenizer for the serve/eval part (../shared does not travel)
#   .gpu/run.sh       a copy of bench/gpu_device_run.sh; .gpu/source_dir this checkout's path
# Then, with the device tool: run(command="BUDGET=500 bash .gpu/run.sh", carry=[".gpu"], timeout_s=560)
#
# usage: bench/gpu_stage.sh [BUILD_DIR]     (default build-gpu; needs nvcc, cmake, ninja, patchelf)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-gpu}
command -v patchelf > /dev/null || { echo "gpu_stage.sh: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
[ -f ../shared/vocab/ggml-vocab-llama-spm.gguf ] || { echo "gpu_stage.sh: needs ../shared/vocab/ggml-vocab-llama-spm.gguf" >&2; exit 1; }
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DSTRATA_BENCH=OFF "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc" > /dev/null
cmake --build "$BUILD" -j"$(nproc)" --target strata gpu_test
mkdir -p .git/info
grep -qx '/.gpu/' .git/info/exclude 2> /dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/build/tests .gpu/build/lib .gpu/vocab
cp "$BUILD/strata" .gpu/build/ && cp "$BUILD/tests/gpu_test" .gpu/build/tests/
ldd "$BUILD/strata" "$BUILD/tests/gpu_test" | awk '/=> \/.*(boost|yaml|xxhash|tbb)/ {print $3}' | sort -u \
  | xargs -r cp -L -t .gpu/build/lib/
# DT_RPATH (not RUNPATH): it also serves the executable's dlopen of libcublas.so.13
for b in .gpu/build/strata .gpu/build/tests/gpu_test; do patchelf --force-rpath --set-rpath '$ORIGIN/lib:$ORIGIN/../lib' "$b"; done
pwd > .gpu/source_dir   # STRATA_SOURCE_DIR compiled into gpu_test: run.sh links it to the device's copy
cp ../shared/vocab/ggml-vocab-llama-spm.gguf .gpu/vocab/
cp bench/gpu_device_run.sh .gpu/run.sh
du -sh .gpu
