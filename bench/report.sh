# Sourced by the GPU-machine scripts (gpu_check.sh, gpu_bench.sh): verdict
# lines that go to stdout and to $SUMMARY, their counts, and the time since
# sourcing. The caller sets SUMMARY (emptied here) first.
: > "$SUMMARY"
npass=0 nfail=0
say() { echo "$*" | tee -a "$SUMMARY"; }
ok() { say "PASS $*"; npass=$((npass + 1)); }
bad() { say "FAIL $*"; nfail=$((nfail + 1)); }
info() { say "INFO $*"; }
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 ))s; }
