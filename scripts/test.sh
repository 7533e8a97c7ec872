#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole CPU test suite (GPU tests
# carry the label `gpu` and are left out; they skip by themselves without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build -LE gpu --output-on-failure -j"$(nproc)"
