#!/usr/bin/env python3
"""`python -m app.cli evaluate-duplicates`, as a script (see app/cli/evaluate_duplicates.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate-duplicates", *sys.argv[1:]]))
