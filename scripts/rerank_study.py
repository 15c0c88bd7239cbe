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
    from app.metrics.heldout import DEFAULT_VARIANTS, MIRROR_VARIANTS, RerankVariant, evaluate_variants, format_variants

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz")
    p.add_argument("--split", nargs="+", default=["heldout", "loo"])
    p.add_argument("--grid", action="store_true")
    p.add_argument("--no-krecip", action="store_true")
    p.add_argument("--incremental-check", action="store_true",
                   help="DBA kept up to date by adds and deletes vs a full recompute, on the held-out split")
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
                        variants.append(RerankVariant(f"{pre}dba n={dba_n} a={a} + aqe n={qe_n} a={a}", qe_n=qe_n,
                                                qe_alpha=a, dba_n=dba_n, dba_alpha=a, mirror_db=mirror))
            for dba_n, qe_n in ((3, 2), (5, 3), (7, 3)):
                variants.append(RerankVariant(f"{pre}dba n={dba_n} + aqe n={qe_n} + k-reciprocal", qe_n=qe_n, dba_n=dba_n,
                                        mirror_db=mirror, krecip=True))
    if args.incremental_check:
        print(json.dumps(incremental_check(data["plain"], labels), indent=2))
        return 0
    out = {}
    for split in args.split:
        r = evaluate_variants(data["plain"], labels, split=split, variants=variants, mirror=data["mirror"])
        out[split] = r
        if not args.json:
            print(format_variants(r), "\n", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


def incremental_check(raw: np.ndarray, labels: list, seed: int = 0) -> dict:
    """Database rows of the held-out split: 5% arrive later (added), then 2% of the rest are deleted.
    The augmentation kept up to date by app.index.rerank.augment_update vs one computed afresh."""
    import time

    from app.index.rerank import DbaParams, augment, augment_update, normalise
    from app.metrics.heldout import DEFAULT_VARIANTS, UNWHITENED_NAME, evaluate_variants, heldout_split

    raw = normalise(raw)
    rng = np.random.default_rng(seed)
    _, db = heldout_split(labels)
    n = len(raw)
    late = db[rng.random(len(db)) < 0.05]
    before = np.isin(np.arange(n), db)  # the queries are never in the database, nor in its augmentation
    before[late] = False
    params = DbaParams()
    aug, th = augment(raw, before, params)
    after = before.copy()
    after[late] = True
    gone = rng.choice(np.flatnonzero(before), int(0.02 * len(db)), replace=False)
    after[gone] = False
    t = time.perf_counter()
    inc, _, rows = augment_update(raw, aug, th, before, after, params)
    inc_s = time.perf_counter() - t
    t = time.perf_counter()
    full, _ = augment(raw, after, params)
    full_s = time.perf_counter() - t
    variant = [v for v in DEFAULT_VARIANTS if v.name == UNWHITENED_NAME]  # raw-space DBA (see whiten_study.py)
    a = evaluate_variants(raw, labels, variants=variant, augmented=inc, live=after)["variants"][UNWHITENED_NAME]
    b = evaluate_variants(raw, labels, variants=variant, augmented=full, live=after)["variants"][UNWHITENED_NAME]
    return {"added": int(len(late)), "deleted": int(len(gone)), "database": int(after[db].sum()),
            "rows_recomputed": int(len(rows)), "incremental_s": round(inc_s, 2), "full_s": round(full_s, 2),
            "max_abs_vector_diff": float(np.abs(inc[after] - full[after]).max()),
            "incremental": a, "full_rebuild": b,
            "diff": {k: round(abs(a[k] - b[k]), 4) for k in ("precision_at_5", "map_at_10")}}


if __name__ == "__main__":
    sys.exit(main())
