#!/usr/bin/env python3
"""`python -m app.cli bench-ui`, as a script (see app/cli/bench_ui.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench-ui", *sys.argv[1:]]))
