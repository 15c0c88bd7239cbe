#!/usr/bin/env bash
# Download and install the demo collections into <repo>/data (or --data DIR).
# Thin wrapper around `python -m app.cli download datasets ...`; see app/cli/download.py.
set -euo pipefail

usage() {
    cat >&2 <<'USAGE'
usage: ./data_download.sh caltech101|voc2012|all [more names...] [--data DIR] [--delete-archives]

  caltech101   Caltech-101 (about 130 MB download)
  voc2012      PASCAL VOC 2012 trainval (about 2 GB download)
  all          both
  --data DIR   data folder (default: <repo>/data)
  --delete-archives  remove the downloaded archives from <data>/.downloads once installed

Interrupted downloads resume where they stopped when run again.
USAGE
    exit "${1:-2}"
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$repo/.venv/bin/python" ]]; then
    python="$repo/.venv/bin/python"
else
    python="$(command -v python3 || true)"
    [[ -n "$python" ]] || { echo "error: python3 not found (create .venv first)" >&2; exit 2; }
fi

names=()
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        caltech101|voc2012|all) names+=("$1"); shift ;;
        --data)
            [[ $# -ge 2 && -n "$2" ]] || usage
            extra+=(--data "$2"); shift 2 ;;
        --data=?*) extra+=(--data "${1#--data=}"); shift ;;
        --delete-archives) extra+=("$1"); shift ;;
        -h|--help) usage 0 ;;
        *) echo "error: unknown argument: $1" >&2; usage ;;
    esac
done
[[ ${#names[@]} -gt 0 ]] || usage

# Keep the caller's working directory (a relative --data stays relative to it).
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m app.cli download datasets "${names[@]}" ${extra[@]+"${extra[@]}"}
