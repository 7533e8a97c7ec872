# Sourced by tests and benchmarks that run the example plans over the trained
# fixture (tests/fixtures/kjv, scripts/fixture/train_fixture.py).

# link_fixture_cache FIXTURE HF_DIR ID...: a Hugging Face cache in HF_DIR where
# every model id resolves to FIXTURE (refs/main -> a snapshot of symlinks), so
# the example plans apply to the fixture verbatim.
link_fixture_cache() {
  local fixture hf id dir f
  fixture=$(cd "$1" && pwd)
  hf=$2
  shift 2
  for id in "$@"; do
    dir="$hf/models--${id//\//--}"
    mkdir -p "$dir/refs" "$dir/snapshots/fixture"
    printf fixture >"$dir/refs/main"
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
      ln -sf "$fixture/$f" "$dir/snapshots/fixture/$f"
    done
  done
}

# plan_model_ids PLAN...: the model ids the plans name, one per line.
plan_model_ids() {
  local py=${STRATA_PYTHON3:-/usr/bin/python3} root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  "$py" "$root/tests/ref/mergekit_ref.py" models "$@"
}
