#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run runs exactly this):
#   1. mypy on the engine, the stores and the Service (mypy.ini);
#   2. the whole pytest suite with generated code (the default);
#   3. the whole suite again with DEPOT_CODEGEN=off: pipelines, templates and normalizers run interpreted, so
#      each executor is checked against the other.
# Arguments are passed to both pytest runs (e.g. scripts/test.sh tests/test_codegen.py -x).
set -uo pipefail
cd "$(dirname "$0")/.."

run_pytest() {  # pytest's exit 5 (no test collected) is a failure here
  "$@"
  local status=$?
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    return 1
  fi
  return "$status"
}

echo "== mypy (engine, stores, service)"
mypy || exit 1
echo "== pytest, generated code"
run_pytest pytest "$@" || exit 1
echo "== pytest, DEPOT_CODEGEN=off"
DEPOT_CODEGEN=off run_pytest pytest "$@" || exit 1
