#!/usr/bin/env bash
# Installs everything the tests need: Debian's chromium (tests/test_docs_browser.py drives it through Playwright,
# which is told to use it: Playwright's own browser downloads are never needed) and requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi
python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt
