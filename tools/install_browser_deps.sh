#!/usr/bin/env bash
# Browser dependencies of the web demo's end-to-end test (tests/test_web_demo.py):
#   * Debian's chromium at /usr/bin/chromium (apt-get), and
#   * the `playwright` Python package, which drives that chromium through executable_path.
# Playwright's own browser download (`playwright install`) is never run: only registry packages are used.
# Idempotent: each step is skipped when its result is already there.  Exits non-zero, saying why, on failure.
#
#   bash tools/install_browser_deps.sh          # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail

PYTHON="${PYTHON:-python}"
CHROMIUM=/usr/bin/chromium

fail() { echo "install_browser_deps: ERROR: $*" >&2; exit 1; }
say() { echo "install_browser_deps: $*"; }

# ---- chromium (Debian package) ----
if [ -x "$CHROMIUM" ]; then
    say "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        fail "$CHROMIUM is missing and this user is not root and has no sudo: install the Debian package 'chromium' by hand"
    fi
    command -v apt-get >/dev/null 2>&1 || fail "$CHROMIUM is missing and apt-get is not available (not a Debian-like system): install chromium by hand"
    say "installing the Debian packages chromium and fonts-dejavu-core (page text in screenshots) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q || fail "apt-get update failed"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core || fail "apt-get install chromium fonts-dejavu-core failed"
    [ -x "$CHROMIUM" ] || fail "apt-get installed chromium but $CHROMIUM does not exist"
    say "installed chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
fi

# ---- playwright (Python package only) ----
command -v "$PYTHON" >/dev/null 2>&1 || fail "python interpreter '$PYTHON' not found (set PYTHON=...)"
if "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    say "playwright already installed: $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
else
    say "installing the Python package playwright with pip (no browser download)"
    "$PYTHON" -m pip install -q playwright || fail "pip install playwright failed"
    "$PYTHON" -c "import playwright.sync_api" || fail "playwright was installed but cannot be imported"
    say "installed playwright $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))')"
fi
say "done: chromium at $CHROMIUM, playwright for $("$PYTHON" -c 'import sys; print(sys.executable)')"
