#!/usr/bin/env python3
"""`python -m app.cli evaluate`, as a script (see app/cli/evaluate.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
