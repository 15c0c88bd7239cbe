#!/usr/bin/env python3
"""Whitening for re-ranking (app/index/whiten.py), measured on vectors saved by scripts/extract_mirror.py.

    python scripts/whiten_study.py runs/lite0_mirror.npz validation   # the grid, on a split of the database only
    python scripts/whiten_study.py runs/lite0_mirror.npz heldout [--dim 256 --power 0.1 --dba-n 5 --qe-n 3]
    python scripts/whiten_study.py runs/lite0_mirror.npz churn        # a stale whitening vs a refit

* ``validation``: the held-out split's database is split again the same way (every 5th item of each class
  is a validation query); every configuration of the grid is learned and measured there, never on the
  held-out queries. Prints one line per configuration, best P@5 last.
* ``heldout``: the given configuration (the search path's product variant) on the held-out split.
* ``churn``: a share of the database arrives after the whitening was learned (the whitening kept, DBA
  exact in its space, as an incremental add does) vs the whitening learned again on the whole database.

Exact search; measurement only.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

import numpy as np


def _load(path: str):
    from app.index.rerank import normalise

    data = np.load(path)
    return normalise(data["plain"]), [tuple(str(s).split("|")) for s in data["labels"]]


def validation(raw: np.ndarray, labels: list) -> list[dict]:
    from app.index.whiten import WhitenParams
    from app.metrics.heldout import RerankVariant, evaluate_variants, heldout_split

    _, db = heldout_split(labels)
    sub = raw[db]
    sub_labels = [labels[i] for i in db]  # the held-out queries are not here at all
    rows = []
    for dim, power in ((128, 0.1), (256, 0.0), (256, 0.1), (256, 0.2), (384, 0.1), (1280, 0.0), (1280, 0.5)):
        wp = WhitenParams(dim=dim, power=power)
        variants = [RerankVariant(f"dim={dim} power={power} dba n={dn} a={da} aqe n={qn}", qe_n=qn, dba_n=dn,
                                  dba_alpha=da, whiten=wp)
                    for (dn, da), qn in itertools.product(((5, 3.0), (7, 3.0), (10, 3.0), (5, 1.0)), (2, 3, 5))]
        r = evaluate_variants(sub, sub_labels, variants=variants)["variants"]
        rows += [{"variant": k, "p5": m["precision_at_5"], "map10": m["map_at_10"]} for k, m in r.items()]
    return sorted(rows, key=lambda x: (x["p5"], x["map10"]))


def heldout(raw: np.ndarray, labels: list, args) -> dict:
    from app.index.whiten import WhitenParams
    from app.metrics.heldout import RerankVariant, evaluate_variants

    v = RerankVariant("whitened product", qe_n=args.qe_n, dba_n=args.dba_n, product=True, copies_first=True,
                      whiten=WhitenParams(dim=args.dim, power=args.power))
    return evaluate_variants(raw, labels, variants=[v])["variants"][v.name]


def churn(raw: np.ndarray, labels: list, seed: int = 0) -> list[dict]:
    from app.index.rerank import augment
    from app.index.whiten import WhitenParams, fit
    from app.metrics.heldout import DEFAULT_NAME, DEFAULT_VARIANTS, evaluate_variants, heldout_split

    variant = [v for v in DEFAULT_VARIANTS if v.name == DEFAULT_NAME]
    _, db = heldout_split(labels)
    live = np.isin(np.arange(len(raw)), db)
    rng = np.random.default_rng(seed)
    out = []
    for share in (0.05, 0.1, 0.25, 0.5):
        late = db[rng.random(len(db)) < share]
        early = live.copy()
        early[late] = False
        stale = fit(raw[early], WhitenParams())
        aug, _ = augment(stale.apply(raw), live)  # what incremental adds give: exact DBA in the kept space
        a = evaluate_variants(raw, labels, variants=variant, augmented=aug, whitening=stale)["variants"][DEFAULT_NAME]
        b = evaluate_variants(raw, labels, variants=variant)["variants"][DEFAULT_NAME]  # refit on the whole database
        out.append({"added_share": share, "added": int(len(late)), "kept_whitening": a, "refit": b,
                    "p5_diff": round(a["precision_at_5"] - b["precision_at_5"], 4),
                    "map10_diff": round(a["map_at_10"] - b["map_at_10"], 4)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz")
    p.add_argument("what", choices=("validation", "heldout", "churn"))
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--power", type=float, default=0.1)
    p.add_argument("--dba-n", type=int, default=5)
    p.add_argument("--qe-n", type=int, default=3)
    args = p.parse_args(argv)
    raw, labels = _load(args.npz)
    if args.what == "validation":
        for row in validation(raw, labels):
            print(f"{row['variant']:50s} P@5 {row['p5']:.4f}  mAP@10 {row['map10']:.4f}", flush=True)
    elif args.what == "heldout":
        print(json.dumps(heldout(raw, labels, args), indent=2))
    else:
        print(json.dumps(churn(raw, labels), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
