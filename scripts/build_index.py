#!/usr/bin/env python3
"""Build a collection: embed its images into features/ and save a tuned faiss index in indexes/.

    python scripts/build_index.py --collection caltech101 --data data/caltech101
    python scripts/build_index.py --collection caltech101 --data data/caltech101 --model efficientnet-lite0
    python scripts/build_index.py --collection folder --data ~/Pictures --name my-photos

Resumable: if it is interrupted, run the same command again and it continues.
(``python -m app.cli build`` takes the same options.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import add_build_args, cmd_build, run  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    return run(cmd_build, make_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
