#!/usr/bin/env bash
# Installs the Debian 12 packages strata builds and tests with. Run as root.
# Skips apt entirely when everything is already installed.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config git
  libboost-iostreams-dev libboost-program-options-dev
  libxxhash-dev libzstd-dev libtbb-dev libyaml-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy python3-yaml time
  python3-jinja2  # tests only: tests/ref/jinja_render.py, the reference renderer of chat templates
  curl  # tests only: tests/e2e/serve_*.sh talk to strata serve over HTTP
  bible-kjv  # tests only: the fixture's corpus (King James Bible), for the tokenizer round trip
  clang libclang-rt-14-dev llvm-14  # tests/fuzz: libFuzzer + ASan/UBSan runtimes, llvm-symbolizer for reports
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
