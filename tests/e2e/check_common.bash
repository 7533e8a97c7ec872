# Sourced by end-to-end scripts that count their checks: ok/bad print one
# PASS/FAIL line each (bad with the tail of a log), the script ends with
# `echo "$passed passed, $failed failed"; [[ $failed == 0 ]]`.
passed=0
failed=0
ok() {
  passed=$((passed + 1))
  echo "PASS $1"
}
bad() {
  failed=$((failed + 1))
  echo "FAIL $1"
  [[ -n ${2:-} ]] && sed -e 's/^/    /' "$2" | tail -n 30
  return 0
}

# json_get FILE PYEXPR: evaluates PYEXPR with j = the JSON in FILE ($PY, else /usr/bin/python3).
json_get() { "${PY:-/usr/bin/python3}" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
