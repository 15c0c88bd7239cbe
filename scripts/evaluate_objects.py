#!/usr/bin/env python3
"""`python -m app.cli evaluate-objects`, as a script (see app/cli/evaluate_objects.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate-objects", *sys.argv[1:]]))
