#!/usr/bin/env python3
"""Retrieval quality of a collection (leave-one-out mAP@10, mHR@10, P@5; exact and ANN) and its index.

    python scripts/evaluate.py --data data/caltech101
    python scripts/evaluate.py --data data/caltech101 --sweep          # + the index sweep table
    python scripts/evaluate.py --collection voc2012 --data data/voc2012 --queries 2000 --json

Uses the built features and index of the collection; builds them from --data when missing.
"""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
