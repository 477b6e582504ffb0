#!/usr/bin/env bash
# Installs everything the tests need: Debian's chromium (tests/test_docs_browser.py drives it through Playwright,
# which is told to use it: Playwright's own browser downloads are never needed), requirements.txt, and the npm
# tools pinned in tests/npm/package-lock.json (pnpm, the second npm client the npm tests drive, and Verdaccio, the
# reference registry of tests/npm_clients.py and bench/bench_npm.py), installed by `npm ci` with the machine's
# node and npm into tests/npm/node_modules. For the OCI tests: Debian's docker-registry (distribution, the
# reference registry of tests/oci_registry.py) and skopeo (a client tests/test_oci_clients.py drives); the oras
# Python SDK comes with requirements.txt. Debian's redis-server: the Redis DEPOT_CACHE_URL's tests run against.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
[ -x /usr/bin/skopeo ] || missing+=(skopeo)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)  # DEPOT_CACHE_URL's tests (tests/test_shared_cache.py)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt
if command -v npm >/dev/null; then
  (cd tests/npm && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "install.sh: no npm on this machine: the npm client tests will fail (they need node, npm, pnpm)" >&2
fi
