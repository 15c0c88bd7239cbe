#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned dependencies into it. Idempotent and quick when
# nothing changed. Usage: scripts/setup.sh [--tests]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found. Install Python 3.10+ (Debian/Ubuntu: apt-get install python3 python3-venv)." >&2
    exit 2
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: Python 3.10 or newer is needed ($("$python" --version))." >&2
    exit 2
fi
if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv"
    "$python" -m venv .venv || {
        echo "error: could not create a virtualenv. On Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 2
    }
fi

reqs=(-r requirements.txt)
[[ "${1:-}" == "--tests" ]] && reqs+=(-r tests/requirements.txt)
stamp=".venv/.installed-$(cat requirements.txt pyproject.toml ${1:+tests/requirements.txt} | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    echo "==> installing Python packages (first run: torch is a large download)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "${reqs[@]}"
    # this project itself, editable: the console commands (reverse-image-search, ris) and scripts/*.py
    .venv/bin/python -m pip install --quiet --no-deps -e .
    touch "$stamp"
fi
