#!/usr/bin/env python3
"""`python -m app.cli bench-scale`, as a script (see app/cli/bench_scale.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench-scale", *sys.argv[1:]]))
