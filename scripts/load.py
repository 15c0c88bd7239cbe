#!/usr/bin/env python3
"""`python -m app.cli load`, as a script (see app/cli/load.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["load", *sys.argv[1:]]))
