#!/usr/bin/env python3
"""`python -m app.cli bench`, as a script (see app/cli/bench.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
