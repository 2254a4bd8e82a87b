#!/usr/bin/env bash
# Install Debian's Chromium (and its chromedriver) for the studio's browser test (tests/test_studio_browser.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. Never fails the build: where the browser cannot
# be installed (not root and no sudo, no apt, no package mirror) it says why and the browser test skips with a reason.
# Playwright's own browser download (`playwright install`) is never used: the test launches this system browser.
set -uo pipefail

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: apt-get not found; the studio browser test will be skipped" >&2
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "install-browser: need root (or passwordless sudo) to apt-get install chromium; browser test will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null; }; then
    echo "install-browser: apt-get install chromium failed; the studio browser test will be skipped" >&2
fi
exit 0
