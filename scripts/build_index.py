#!/usr/bin/env python3
"""`python -m app.cli build`, as a script (see app/cli/build.py, or `--help`)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
