#!/usr/bin/env python3
"""Speed benchmark: query and build paths next to the model's bare PyTorch forward, with PASS/FAIL targets.

    python scripts/bench.py --data data/caltech101
    python scripts/bench.py --data data/caltech101 --model efficientnet-lite0
    python scripts/bench.py --data data/caltech101 --indexes /tmp/ix --features /tmp/ft --limit 1000 --json

Needs a built caltech101 collection in --indexes/--features; builds what is missing (a --limit
sample when given). If voc2012 is not built, a Caltech101 sample named voc2012-substitute is built
as the second collection for the start-up and memory figures (the output says so).
"""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
