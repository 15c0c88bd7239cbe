#!/usr/bin/env python3
"""The table of re-ranking variants on vectors saved by scripts/extract_mirror.py (plain and mirrored).

    python scripts/rerank_study.py runs/lite0_mirror.npz [--split heldout loo] [--grid] [--json]

Exact search; see app/metrics/heldout.py for the splits and the variants. ``--grid`` adds a small
sweep of DBA n and αQE n/alpha. Measurement only.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from app.metrics.heldout import DEFAULT_VARIANTS, MIRROR_VARIANTS, Variant, evaluate_variants, format_variants

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz")
    p.add_argument("--split", nargs="+", default=["heldout", "loo"])
    p.add_argument("--grid", action="store_true")
    p.add_argument("--no-krecip", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    data = np.load(args.npz)
    labels = [tuple(str(s).split("|")) for s in data["labels"]]
    variants = list(DEFAULT_VARIANTS) + list(MIRROR_VARIANTS)
    if args.no_krecip:
        variants = [v for v in variants if not v.krecip]
    if args.grid:
        for mirror in (False, True):
            for dba_n in (0, 2, 3, 4, 5, 7):
                for qe_n in (0, 1, 2, 3, 5):
                    for a in (1.0, 3.0):
                        pre = "mirror db + " if mirror else ""
                        variants.append(Variant(f"{pre}dba n={dba_n} a={a} + aqe n={qe_n} a={a}", qe_n=qe_n,
                                                qe_alpha=a, dba_n=dba_n, dba_alpha=a, mirror_db=mirror))
            for dba_n, qe_n in ((3, 2), (5, 3), (7, 3)):
                variants.append(Variant(f"{pre}dba n={dba_n} + aqe n={qe_n} + k-reciprocal", qe_n=qe_n, dba_n=dba_n,
                                        mirror_db=mirror, krecip=True))
    out = {}
    for split in args.split:
        r = evaluate_variants(data["plain"], labels, split=split, variants=variants, mirror=data["mirror"])
        out[split] = r
        if not args.json:
            print(format_variants(r), "\n", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
