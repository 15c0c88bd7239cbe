#!/usr/bin/env python3
"""Build a collection: embed its images into features/ and save a tuned faiss index in indexes/.

    python scripts/build_index.py --collection caltech101 --data data/caltech101
    python scripts/build_index.py --collection caltech101 --data data/caltech101 --model efficientnet-lite0
    python scripts/build_index.py --collection folder --data ~/Pictures --name my-photos

Resumable: if it is interrupted, run the same command again and it continues.
(``python -m app.cli build`` takes the same options.)
"""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
