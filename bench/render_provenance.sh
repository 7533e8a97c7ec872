#!/usr/bin/env bash
# Renders the provenance and diff pictures to PNG in headless Chromium: the 48-layer
# SOLAR DUS, the 80-layer bench/plans/provenance-80.yml, and a diff, over tiny synthetic models.
# usage: bench/render_provenance.sh [STRATA_BIN] [OUT_DIR]   (defaults: build/strata, docs/img)
# Not run in CI (Chromium is heavy); CI tests the SVG itself (tests/compiler/diff_test.cc).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/build/strata}")
OUT=$(mkdir -p "${2:-$ROOT/docs/img}" && realpath "${2:-$ROOT/docs/img}")
[ -x "$BIN" ] || { echo "no strata binary at $BIN: build it first (cmake --build build)" >&2; exit 1; }

# chromium renders; pngquant makes the PNGs small enough for docs/img (< 300 KB).
for pkg in chromium pngquant; do
  command -v $pkg >/dev/null && continue
  [ "$(id -u)" = 0 ] || { echo "$pkg is missing: run 'apt-get install -y $pkg' as root" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y $pkg >/dev/null
done

WORK=$(mktemp -d /tmp/strata-render.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_CACHE=$WORK/hf
STORE=$WORK/store
# Distinct seeds: the two models share no weights, as two real models would not.
"$BIN" synth --preset tiny --hf-cache "$HF_HUB_CACHE" --as mistralai/Mistral-7B-v0.1 --seed 1 --quiet >/dev/null
"$BIN" synth --preset tiny --hf-cache "$HF_HUB_CACHE" --as openchat/openchat-3.5-0106 --seed 2 --quiet >/dev/null
for plan in "$ROOT/examples/solar-dus.yml" "$ROOT/examples/block-expansion-40.yml" \
            "$ROOT/bench/plans/provenance-80.yml"; do
  "$BIN" compile "$plan" --store "$STORE" --quiet >/dev/null
done

"$BIN" show solar-dus --store "$STORE" --html "$WORK/solar-dus.html" >/dev/null
"$BIN" show provenance-80 --store "$STORE" --html "$WORK/provenance-80.html" >/dev/null
"$BIN" diff block-expansion-40 provenance-80 --store "$STORE" --html "$WORK/diff.html" >/dev/null

# Renders page $1 to $2 at 1400 px wide, as tall as $3.
shoot() {
  local profile
  profile=$(mktemp -d "$WORK/profile.XXXXXX")
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --screenshot="$2" --window-size="1400,$3" \
    "file://$1" >/dev/null 2>&1
  [ -s "$2" ] || { echo "chromium wrote no screenshot for $1" >&2; exit 1; }
  pngquant --quality=65-95 --speed 1 --strip --force --output "$2" "$2"
  echo "$2: $(stat -c %s "$2") bytes"
}
shoot "$WORK/solar-dus.html" "$OUT/provenance-solar-dus.png" 1500
shoot "$WORK/provenance-80.html" "$OUT/provenance-80.png" 1900
shoot "$WORK/diff.html" "$OUT/diff-block-expansion-vs-80.png" 1900
