#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run runs exactly this):
#   1. mypy on the engine, the stores and the Service (mypy.ini);
#   2. the whole pytest suite with generated code (the default);
#   3. the whole suite again with DEPOT_CODEGEN=off: pipelines, templates and normalizers run interpreted, so
#      each executor is checked against the other.
# Each pytest run spreads the suite over one worker process per core (pytest-xdist, -n auto: two on the 2-core
# VM). --dist worksteal hands the tests out singly and lets an idle worker take tests queued for a busy one, so
# a file of long tests does not hold one worker while the other waits. Every test keeps to its own temp dirs,
# child processes and ports (each server is given a free one by the OS), so no test needs an order or a worker.
# Arguments are passed to both pytest runs after these options, so they win (e.g. scripts/test.sh
# tests/test_codegen.py -x; `-n 0` runs serially, `-n 3` uses three workers).
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
PARALLEL=(-n auto --dist worksteal)
echo "== pytest, generated code"
run_pytest pytest "${PARALLEL[@]}" "$@" || exit 1
echo "== pytest, DEPOT_CODEGEN=off"
DEPOT_CODEGEN=off run_pytest pytest "${PARALLEL[@]}" "$@" || exit 1
