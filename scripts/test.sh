#!/usr/bin/env bash
# Set up, lint (ruff) and run the whole test suite (slow and browser tests included).
# Installs Debian's chromium for the browser tests when it is missing (needs root or sudo).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" -x
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh --tests

if [[ ! -x /usr/bin/chromium && "${SKIP_BROWSER_TESTS:-0}" != "1" ]]; then
    echo "==> installing Debian's chromium for the browser tests"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "error: /usr/bin/chromium is missing and neither root nor sudo is available to install it." >&2
        echo "       Install the 'chromium' package, or set SKIP_BROWSER_TESTS=1 to skip the browser tests." >&2
        exit 2
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

echo "==> the object detector (a no-op once cached); its real-model tests then run, not skip"
.venv/bin/python -m app.cli detector install
export RIS_REQUIRE_DETECTOR=1

echo "==> ruff check (pyflakes, isort, bugbear: pyproject.toml)"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
