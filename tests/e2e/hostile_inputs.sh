#!/usr/bin/env bash
# Hostile inputs at the command line (the hardening issue): FIFOs never hang a
# command or the store lock, signals leave nothing behind, corrupt blobs and
# bad config.json values fail cleanly with exit 1 (never an abort).
# usage: hostile_inputs.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1
T=$(mktemp -d)
trap 'umount "$T/mnt" 2>/dev/null; rm -rf "$T"' EXIT
export HF_HUB_CACHE=$T/hf STRATA_STORE=$T/store
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }
# expect NAME CODE PATTERN -- command...: exit code CODE within 20 s and stderr matching PATTERN.
expect() {
  local name=$1 code=$2 pattern=$3; shift 4
  local err rc
  err=$(timeout 20 "$@" 2>&1 >/dev/null); rc=$?
  if [ "$rc" -eq 124 ]; then bad "$name: hung (killed after 20 s)"; return; fi
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code: $err"; return; fi
  if ! grep -qE -- "$pattern" <<< "$err"; then bad "$name: message does not match /$pattern/: $err"; return; fi
  ok "$name"
}
plan_for() { printf 'models:\n  - model: %s\nmerge_method: passthrough\n' "$1" > "$2"; }

"$BIN" synth --preset tiny --layers 4 --hf-cache "$HF_HUB_CACHE" --as org/base --quiet > /dev/null
SNAP=$(echo "$HF_HUB_CACHE"/models--org--base/snapshots/*)
plan_for org/base "$T/base.yml"
"$BIN" compile "$T/base.yml" --quiet > /dev/null || bad "compile of the base failed"

# --- FIFOs: refused at once, the store lock never held while waiting --------
mkdir -p "$T/fifo-st" "$T/fifo-cfg"
cp -L "$SNAP/config.json" "$T/fifo-st/" && mkfifo "$T/fifo-st/model.safetensors"
cp -L "$SNAP/model.safetensors" "$T/fifo-cfg/" && mkfifo "$T/fifo-cfg/config.json"
plan_for "$T/fifo-st" "$T/fifo-st.yml"
plan_for "$T/fifo-cfg" "$T/fifo-cfg.yml"
expect "FIFO as model.safetensors" 1 "model.safetensors: it is a FIFO" -- "$BIN" compile "$T/fifo-st.yml"
expect "FIFO as config.json" 1 "config.json: it is a FIFO" -- "$BIN" compile "$T/fifo-cfg.yml"
mkdir -p "$T/dir-st/model.safetensors" && cp -L "$SNAP/config.json" "$T/dir-st/"
plan_for "$T/dir-st" "$T/dir-st.yml"
expect "directory as model.safetensors" 1 "model.safetensors: it is a directory" -- "$BIN" compile "$T/dir-st.yml"
ln -s loop-b "$T/loop-a" && ln -s loop-a "$T/loop-b"
expect "symlink loop as the plan" 1 "symbolic link loop" -- "$BIN" compile "$T/loop-a"
# A gc running meanwhile is never stuck behind a compile that waits on a FIFO.
expect "gc is not blocked" 0 "" -- "$BIN" gc --dry-run

# A blob replaced by a FIFO: run, export and diff refuse it at once.
BLOB=$(find "$STRATA_STORE/blobs" -type f -size +8k | head -1)
cp --preserve=mode "$BLOB" "$T/blob.bak" && rm -f "$BLOB" && mkfifo "$BLOB"
expect "run with a FIFO blob" 1 "is a FIFO" -- "$BIN" run base --tokens 1,2,3 -n 2
expect "export with a FIFO blob" 1 "is a FIFO" -- "$BIN" export base "$T/out-fifo"
[ ! -e "$T/out-fifo" ] && ok "nothing exported" || bad "export left $T/out-fifo"
expect "verify names the FIFO" 1 "" -- "$BIN" verify --quiet
rm -f "$BLOB" && cp --preserve=mode "$T/blob.bak" "$BLOB"

# --- corrupt blobs: one flipped byte fails export and run, naming the blob ---
chmod u+w "$BLOB"
printf '\x7f' | dd of="$BLOB" bs=1 seek=100 conv=notrunc status=none
H=$(basename "$BLOB")
expect "export of a corrupt blob" 1 "blob $H is corrupt" -- "$BIN" export base "$T/out-corrupt"
[ ! -e "$T/out-corrupt" ] && ok "no checkpoint with corrupt bytes" || bad "export wrote $T/out-corrupt"
expect "run of a corrupt blob" 1 "blob $H is corrupt" -- "$BIN" run base --tokens 1,2,3 -n 2
# The context is checked before any weight is read (or hashed).
expect "context before weights" 1 "past the model's context" -- "$BIN" run base --tokens 1,2,3 -n 100000000
rm -f "$BLOB" && cp --preserve=mode "$T/blob.bak" "$BLOB"
expect "run again once repaired" 0 "" -- "$BIN" run base --tokens 1,2,3 -n 2

# --- permissions: said as such, never "missing" or a raw library message ------
# As root every file is readable, so the checks run as nobody.
# A copy of the binary in $T: the checkout may sit where nobody cannot reach.
AS=()
NB=$BIN
if [ "$(id -u)" -eq 0 ]; then
  AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  NB=$T/strata-as-nobody && cp "$BIN" "$NB" && chmod 755 "$NB"
fi
chmod 755 "$T" && chmod -R a+rX "$STRATA_STORE"
chmod 000 "$BLOB"
expect "unreadable blob: run says permission denied" 1 "blobs/.*: permission denied" -- "${AS[@]}" "$NB" run base --tokens 1,2 -n 1
chmod 444 "$BLOB" && chmod 700 "$(dirname "$BLOB")"
expect "unreadable directory: verify" 1 "cannot list .*ermission denied" -- "${AS[@]}" "$NB" verify --quick
expect "unreadable directory: gc" 1 "cannot list .*ermission denied" -- "${AS[@]}" "$NB" gc --dry-run
chmod 755 "$(dirname "$BLOB")"

# --- config.json with wrong types or nonsense: refused at compile, exit 1 ------
badcfg() {  # badcfg NAME PYTHON_EDIT PATTERN
  mkdir -p "$T/cfg-$1" && cp -L "$SNAP/model.safetensors" "$T/cfg-$1/"
  python3 -c "import json,sys; c=json.load(open('$SNAP/config.json')); $2; json.dump(c, open('$T/cfg-$1/config.json','w'))"
  plan_for "$T/cfg-$1" "$T/cfg-$1.yml"
  expect "config $1 at compile" 1 "$3" -- "$BIN" compile "$T/cfg-$1.yml"
  expect "config $1 at run" 1 "$3" -- "$BIN" run "$T/cfg-$1" --tokens 1,2 -n 1
}
badcfg theta-str "c['rope_theta']='abc'" '"rope_theta" is "abc"'
badcfg theta-zero "c['rope_theta']=0" '"rope_theta" is 0'
badcfg eps-neg "c['rms_norm_eps']=-1e-6" '"rms_norm_eps"'
badcfg tie-str "c['tie_word_embeddings']='yes'" '"tie_word_embeddings"'
badcfg act "c['hidden_act']='gelu'" 'hidden_act "gelu" is not supported'
badcfg rope-str "c['rope_scaling']='linear'" '"rope_scaling" is "linear"'
badcfg layers-huge "c['num_hidden_layers']=10**18" 'from 1 to 65536'
badcfg arch-str "c['architectures']='MistralForCausalLM'" 'must be a list naming the model class'
# No lm_head while tie_word_embeddings is false: refused, not tied silently.
mkdir -p "$T/nohead"
python3 - "$SNAP" "$T/nohead" <<'EOF'
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
raw = open(src + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
meta = hdr.pop("__metadata__", None)
hdr.pop("lm_head.weight")
out, off, new = b"", 0, {}
for k, v in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    b = data[v["data_offsets"][0]:v["data_offsets"][1]]
    new[k] = dict(v, data_offsets=[off, off + len(b)]); out += b; off += len(b)
if meta: new["__metadata__"] = meta
h = json.dumps(new).encode(); h += b" " * (-len(h) % 8)
open(dst + "/model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + out)
c = json.load(open(src + "/config.json")); c["tie_word_embeddings"] = False
json.dump(c, open(dst + "/config.json", "w"))
EOF
plan_for "$T/nohead" "$T/nohead.yml"
expect "no lm_head, not tied" 1 'has no "lm_head.weight" but its config.json says tie_word_embeddings: false' -- "$BIN" compile "$T/nohead.yml"

# --- signals: an interrupted export leaves nothing, a killed one is cleaned up ---
"$BIN" synth --preset small --layers 6 --hf-cache "$HF_HUB_CACHE" --as org/big --quiet > /dev/null
plan_for org/big "$T/big.yml"
"$BIN" compile "$T/big.yml" --quiet > /dev/null || bad "compile of org/big failed"
interrupt_export() {  # interrupt_export SIGNAL EXPECTED_CODE
  "$BIN" export big "$T/out-sig" --quiet 2> "$T/sig.err" &
  local pid=$! i
  for i in $(seq 1 500); do
    compgen -G "$T/.out-sig.strata-export.*" > /dev/null && break
    sleep 0.01
  done
  kill -"$1" "$pid"
  wait "$pid"; local rc=$?
  if [ "$rc" -ne "$2" ]; then bad "SIG$1 during export: exit $rc, expected $2 ($(cat "$T/sig.err"))"; return; fi
  grep -q "interrupted" "$T/sig.err" && ok "SIG$1 during export says so" || bad "SIG$1: $(cat "$T/sig.err")"
  if compgen -G "$T/.out-sig*" > /dev/null || [ -e "$T/out-sig" ]; then bad "SIG$1 left $(ls -a "$T" | grep out-sig)"
  else ok "SIG$1 during export left nothing"; fi
}
interrupt_export INT 130
interrupt_export TERM 143
# kill -9 cannot be caught: the next export to the same place removes the leftovers.
"$BIN" export big "$T/out-sig" --quiet &
pid=$!
for i in $(seq 1 500); do compgen -G "$T/.out-sig.strata-export.*" > /dev/null && break; sleep 0.01; done
kill -9 "$pid"; wait "$pid" 2>/dev/null
compgen -G "$T/.out-sig.strata-export.*" > /dev/null && ok "kill -9 leaves a temporary" || bad "no temporary after kill -9 (export too fast?)"
"$BIN" export base "$T/out-sig" --quiet > /dev/null || bad "export after kill -9 failed"
compgen -G "$T/.out-sig.strata-export.*" > /dev/null && bad "stale temporary of a killed export was kept" || ok "stale temporary removed by the next export"

# --- a mount point as OUTDIR: an empty one is written into, a full one refused up front ---
mkdir -p "$T/mnt"
if mount -t tmpfs none "$T/mnt" 2>/dev/null; then
  expect "export into an empty mount point" 0 "" -- "$BIN" export base "$T/mnt" --quiet
  [ -f "$T/mnt/model.safetensors" ] && ok "written inside the mount point" || bad "nothing in the mount point"
  expect "--force on a full mount point" 1 "is a mount point and not empty" -- "$BIN" export base "$T/mnt" --force
  compgen -G "$T/.mnt.strata-export.*" > /dev/null && bad "a temporary was left beside the mount point" || ok "nothing written aside"
  umount "$T/mnt"
else
  echo "skip: cannot mount a tmpfs here (not root?): mount-point cases not run"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
