#!/usr/bin/env bash
# GGUF files into the store (`strata compile FILE.gguf`), timed against the
# floor of reading the file once, and what they cost in new blobs.
#
#   bench/gguf_import.sh --strata build/strata --store DIR NAME=FILE.gguf...
#
# Each FILE is imported as NAME (--force) twice: the first run with the file
# dropped from the page cache where possible (vmtouch -e, else `dd
# iflag=nocache`), the second with the source cache warm. The floor is one
# sequential read of the file (`cat FILE > /dev/null`, page cache dropped the
# same way). Prints one markdown row per file: size, wall s and peak RSS of
# the import, blobs and bytes it wrote, the floor, and the second run.
set -euo pipefail

STRATA=build/strata STORE=
pairs=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --strata) STRATA=$2; shift 2 ;;
  --store) STORE=$2; shift 2 ;;
  *=*) pairs+=("$1"); shift ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
  esac
done
[[ -n $STORE && ${#pairs[@]} -gt 0 ]] || { sed -n 2,13p "$0"; exit 2; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

drop() {  # evicts FILE from the page cache (posix_fadvise DONTNEED through dd)
  dd if="$1" iflag=nocache count=0 status=none 2>/dev/null || true
  dd of="$1" oflag=nocache conv=notrunc,fdatasync count=0 status=none 2>/dev/null || true
}
secs() { /usr/bin/python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }

echo "| file | size | import s | peak RSS | new blobs (bytes) | read floor s | again s (read) |"
echo "|---|---|---|---|---|---|---|"
for p in "${pairs[@]}"; do
  name=${p%%=*} f=${p#*=}
  size=$(stat -c %s "$f")
  drop "$f"
  t0=$(date +%s.%N)
  cat "$f" >/dev/null
  t1=$(date +%s.%N)
  floor=$(secs "$t0" "$t1")
  drop "$f"
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$OUT/$name.rss" "$STRATA" compile "$f" --name "$name" --force --json --store "$STORE" \
    --quiet >"$OUT/$name.json"
  t1=$(date +%s.%N)
  "$STRATA" compile "$f" --name "$name" --json --store "$STORE" --quiet >"$OUT/$name-2.json"
  t2=$(date +%s.%N)
  /usr/bin/python3 - "$OUT/$name.json" "$OUT/$name-2.json" "$OUT/$name.rss" "$f" "$size" "$(secs "$t0" "$t1")" \
    "$floor" "$(secs "$t1" "$t2")" <<'PY'
import json, os, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rss = int(open(sys.argv[3]).read().split()[-1]) / 1024
gb = lambda n: "%.3f GB" % (n / 1e9)
print("| %s | %s | %s | %.0f MiB | %d (%s) | %s | %s (%s) |" % (
    os.path.basename(sys.argv[4]), gb(int(sys.argv[5])), sys.argv[6], rss, a["blobs_written"],
    gb(a["blob_bytes_written"]), sys.argv[7], sys.argv[8], gb(b["bytes_read"])))
PY
done
echo "raw outputs: $OUT" >&2
