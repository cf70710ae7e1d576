#!/usr/bin/env bash
# Installs what tests/e2e/test_browser.py needs: Debian's chromium (only when /usr/bin/chromium is
# missing) and the npm packages of tests/browser (pomelo 2.2.7 for its browser client,
# playwright-core to drive Chromium). Idempotent: run it as often as you like.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
cd "$here"
npm install --no-package-lock --no-audit --no-fund --loglevel=error >/dev/null
echo "browser test deps: $(/usr/bin/chromium --version 2>/dev/null), node $(node --version), playwright-core $(node -p 'require("playwright-core/package.json").version'), pomelo $(node -p 'require("pomelo/package.json").version')"
