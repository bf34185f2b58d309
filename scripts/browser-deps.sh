#!/usr/bin/env bash
# The admin's browser tests (tests/browser) drive a headless Chromium through chromedriver,
# both from the system's packages: no browser is ever downloaded. Install them on Debian as
# root when they are missing; elsewhere say what to install.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "browser-deps: installing chromium and chromium-driver"
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
    exit 0
fi
echo "browser-deps: the admin's browser tests need Chromium and its driver at /usr/bin/chromium and /usr/bin/chromedriver" >&2
echo "  (Debian/Ubuntu: sudo apt-get install chromium chromium-driver); without them tests/browser is skipped" >&2
exit 1
