#!/usr/bin/env bash
# End-to-end: `strata demo` on the trained fixture.
#
#   demo.sh STRATA_BIN PROJECT_ROOT
#
# The demo exits 0; every variant writes text; the fixture's text is made of the
# corpus's words (at least 90% of its words occur in the held-out split); the
# block expansion writes exactly the base's text (its appended layers are
# transparent) and the eval table marks it "same"; the temporary store is gone.
set -euo pipefail
STRATA=$1
ROOT=$2
PY=${STRATA_PYTHON3:-/usr/bin/python3}
T=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
TMPDIR=$T "$STRATA" demo >"$T/out" 2>&1 || { echo "FAIL strata demo exited $?"; tail -n 40 "$T/out"; exit 1; }
"$PY" - "$T/out" "$ROOT/tests/fixtures/kjv/heldout.txt" <<'EOF'
import re, sys
out = open(sys.argv[1]).read()
vocab = set(re.findall(r"[A-Za-z]+", open(sys.argv[2]).read()))
texts = {k: v.strip() for k, v in re.findall(r"^-- ([\w.-]+):\n(.*?)(?=^-- |^== )", out, re.M | re.S)}
fail = []
want = {"kjv", "block-expansion-40", "solar-dus", "idus-8layer", "idus-1layer", "mistral-instruct-v0.3-dus"}
if set(texts) != want:
    fail.append(f"text from {sorted(texts)}, expected {sorted(want)}")
base = texts.get("kjv", "")
words = re.findall(r"[A-Za-z]+", base)
known = sum(w in vocab for w in words)
print(f"kjv wrote {len(words)} words, {known} of them in the held-out text: {base[:160]!r}")
if len(words) < 20 or known < 0.9 * len(words):
    fail.append("the fixture's text is not made of the corpus's words")
if texts.get("block-expansion-40") != base:
    fail.append("block-expansion-40 wrote other text than the base")
if not re.search(r"^block-expansion-40 +40 .* same ", out, re.M):
    fail.append("the eval table does not mark block-expansion-40 as the same as the base")
if "strata eval" not in out or "bits/byte" not in out:
    fail.append("no eval table")
for f in fail:
    print("FAIL " + f)
if fail:
    print(out[-3000:])
    sys.exit(1)
print("PASS strata demo: corpus-like text, block expansion transparent, eval table")
EOF
left=$(find "$T" -mindepth 1 -maxdepth 1 -name 'strata-demo-*' | wc -l)
[[ $left == 0 ]] || { echo "FAIL the demo left $left temporary directories"; exit 1; }
