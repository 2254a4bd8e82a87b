#!/usr/bin/env bash
# Install Debian's Chromium (and its chromedriver) for the studio's browser test (tests/test_studio_browser.py).
# Idempotent: does nothing when /usr/bin/chromium is already there. A failed apt-get fails this script (and so
# `make test`): a browser test that then skipped would hide the failure. Where installing is impossible by design
# (no apt-get, not root and no passwordless sudo) it says why and exits 0, so the browser test skips with a reason;
# under CI=true that is an error too, since CI can install the browser.
# Playwright's own browser download (`playwright install`) is never used: the test launches this system browser.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi

cannot_install() {
    if [[ ${CI:-} == "true" ]]; then
        echo "install-browser: $1; CI=true needs the browser: failing" >&2
        exit 1
    fi
    echo "install-browser: $1; the studio browser test will skip" >&2
    exit 0
}

if ! command -v apt-get >/dev/null 2>&1; then
    cannot_install "apt-get not found"
fi
if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    cannot_install "need root (or passwordless sudo) to apt-get install chromium"
fi
export DEBIAN_FRONTEND=noninteractive
# apt's own messages stay visible: when it fails, they say why (no mirror, no space, a held package).
if ! "${SUDO[@]}" apt-get update -qq; then
    echo "install-browser: apt-get update failed (see above)" >&2
    exit 1
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core; then
    echo "install-browser: apt-get install chromium failed (see above)" >&2
    exit 1
fi
if [[ ! -x /usr/bin/chromium ]]; then
    echo "install-browser: apt-get succeeded but /usr/bin/chromium is missing" >&2
    exit 1
fi
