#!/usr/bin/env python3
"""Learned (supervised) whitening for re-ranking (app/index/learned_whiten.py), measured on vectors saved
by scripts/extract_mirror.py (keys ``plain`` and ``labels``).

    python scripts/learned_whiten_study.py runs/lite0_mirror.npz validation   # the grid, on a split of the database only
    python scripts/learned_whiten_study.py runs/lite0_mirror.npz heldout [--dim 128 --shrink 0.1]
    python scripts/learned_whiten_study.py runs/lite0_mirror.npz churn        # a kept whitening vs a refit
    python scripts/learned_whiten_study.py runs/lite0_mirror.npz unseen       # queries of labels it never saw

* ``validation``: the held-out split's database is split again the same way (every 5th item of each class
  is a validation query); each configuration is learned on the rest (vectors and labels) and measured
  there, never on the held-out queries. One line per configuration, best P@5 last.
* ``heldout``: the given configuration next to the unsupervised default, on the held-out split (the
  whitening learned from the database rows and their labels only).
* ``churn``: part of the database arrives after the whitening was learned (kept, DBA exact in its space,
  as an incremental add does) vs the whitening learned again on the whole database: a random share of
  the items, and whole labels the whitening never saw (a new folder).
* ``unseen``: ``--labels`` labels (seeded) are left out of the learned whitening's training rows (their
  items stay in the database and its DBA): P@5 and mAP@10 of the queries of those labels and of the
  others, against the unsupervised whitening (learned on the whole database) and plain search. What a
  query of a kind of photo the collection's labels never taught gets.

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
    from app.index.learned_whiten import LearnedWhitenParams
    from app.index.whiten import WhitenParams
    from app.metrics.heldout import RerankVariant, evaluate_variants, heldout_split

    _, db = heldout_split(labels)
    sub, sub_labels = raw[db], [labels[i] for i in db]  # the held-out queries are not here at all
    variants = [RerankVariant("pca (unsupervised) dba n=5 aqe n=3", qe_n=3, dba_n=5, whiten=WhitenParams())]
    for dim, shrink, fp in itertools.product((64, 96, 128, 160, 192, 256), (0.02, 0.05, 0.1, 0.2, 0.5, 2.0), (0.5, 1.0)):
        variants.append(RerankVariant(f"learned dim={dim} shrink={shrink} fp={fp} dba n=5 aqe n=3", qe_n=3, dba_n=5,
                                      whiten=LearnedWhitenParams(dim=dim, shrink=shrink, feature_power=fp)))
    r = evaluate_variants(sub, sub_labels, variants=variants)["variants"]
    rows = [{"variant": k, "p5": m["precision_at_5"], "map10": m["map_at_10"]} for k, m in r.items()]
    return sorted(rows, key=lambda x: (x["p5"], x["map10"]))


def heldout(raw: np.ndarray, labels: list, args) -> dict:
    from app.index.learned_whiten import LearnedWhitenParams
    from app.metrics.heldout import DEFAULT_VARIANTS, PCA_NAME, RerankVariant, evaluate_variants

    lw = LearnedWhitenParams(dim=args.dim, shrink=args.shrink, feature_power=args.feature_power)
    variants = [v for v in DEFAULT_VARIANTS if v.name in ("plain", PCA_NAME)] + [
        RerankVariant("learned", whiten=lw),
        RerankVariant("learned + dba n=5 + aqe n=3", qe_n=3, dba_n=5, whiten=lw),
        RerankVariant("learned + dba n=5 + aqe n=3, raw index (product)", qe_n=3, dba_n=5, product=True,
                      copies_first=True, whiten=lw)]
    return evaluate_variants(raw, labels, variants=variants)["variants"]


def _kept_vs_refit(raw, labels, live, early, variant) -> dict:
    from app.index.learned_whiten import LearnedWhitenParams, fit_space, needs_relearn
    from app.index.rerank import augment
    from app.metrics.heldout import evaluate_variants

    stale = fit_space(raw[early], LearnedWhitenParams(), [labels[i] for i in np.flatnonzero(early)])
    aug, _ = augment(stale.apply(raw), live)  # what incremental adds give: exact DBA in the kept space
    a = evaluate_variants(raw, labels, variants=variant, augmented=aug, whitening=stale)["variants"][variant[0].name]
    b = evaluate_variants(raw, labels, variants=variant)["variants"][variant[0].name]  # learned on the whole database
    params = LearnedWhitenParams()
    relearns = needs_relearn(stale, params, [labels[i] for i in np.flatnonzero(live)]) \
        or int(live.sum() - early.sum()) > params.refit_churn * stale.rows
    return {"added": int(live.sum() - early.sum()), "a_change_relearns": bool(relearns), "kept_whitening": a, "refit": b,
            "p5_diff": round(a["precision_at_5"] - b["precision_at_5"], 4),
            "map10_diff": round(a["map_at_10"] - b["map_at_10"], 4)}


def churn(raw: np.ndarray, labels: list, seed: int = 0) -> list[dict]:
    from app.metrics.heldout import DEFAULT_NAME, DEFAULT_VARIANTS, heldout_split

    variant = [v for v in DEFAULT_VARIANTS if v.name == DEFAULT_NAME]
    _, db = heldout_split(labels)
    live = np.isin(np.arange(len(raw)), db)
    rng = np.random.default_rng(seed)
    out = []
    for share in (0.05, 0.1, 0.25):
        early = live.copy()
        early[db[rng.random(len(db)) < share]] = False
        out.append({"kind": "random items", "share": share, **_kept_vs_refit(raw, labels, live, early, variant)})
    names = sorted({lab[0] for lab in labels})
    for count in (5, 10, 20):
        new = set(rng.choice(names, count, replace=False).tolist())
        early = live & np.array([lab[0] not in new for lab in labels])
        out.append({"kind": "new labels", "labels": count, "share": round(1 - early.sum() / live.sum(), 4),
                    **_kept_vs_refit(raw, labels, live, early, variant)})
    return out


def unseen(raw: np.ndarray, labels: list, count: int, seed: int = 0) -> dict:
    from app.index.learned_whiten import LearnedWhitenParams, fit_learned
    from app.index.rerank import augment
    from app.index.whiten import WhitenParams, fit
    from app.metrics.heldout import DEFAULT_NAME, DEFAULT_VARIANTS, _relevant, heldout_split, rank, rank_product
    from app.metrics.retrieval import ranking_metrics

    (v,) = [v for v in DEFAULT_VARIANTS if v.name == DEFAULT_NAME]
    q_pos, db_pos = heldout_split(labels)
    names = sorted({lab[0] for lab in labels})
    left_out = set(np.random.default_rng(seed).choice(names, count, replace=False).tolist())
    train = np.array([i for i in db_pos if labels[i][0] not in left_out])
    spaces = {"learned, those labels left out": fit_learned(raw[train], [labels[i] for i in train], LearnedWhitenParams()),
              "learned on the whole database": fit_learned(raw[db_pos], [labels[i] for i in db_pos], LearnedWhitenParams()),
              "unsupervised (pca)": fit(raw[db_pos], WhitenParams())}
    n_rel = _relevant(labels, q_pos, db_pos)
    tuples = [tuple(lab) for lab in labels]
    is_unseen = np.array([labels[i][0] in left_out for i in q_pos])
    base, queries = raw[db_pos], raw[q_pos]
    ranked = {"plain": rank(queries, base, type(v)("plain"), db_ids=db_pos, self_pos=None)}
    for name, w in spaces.items():
        aug, _ = augment(w.apply(base))
        ranked[name] = rank_product(queries, base, aug, v, db_ids=db_pos, self_pos=None,
                                    spaced=(w.apply(queries), w.apply(base)))
    out: dict = {"left_out_labels": sorted(left_out), "queries_of_left_out": int(is_unseen.sum())}
    for name, r in ranked.items():
        out[name] = {part: ranking_metrics(r[mask].tolist(), q_pos[mask], tuples, n_rel)
                     for part, mask in (("left-out labels", is_unseen), ("other labels", ~is_unseen))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz")
    p.add_argument("what", choices=("validation", "heldout", "churn", "unseen"))
    p.add_argument("--labels", type=int, default=20, help="unseen: how many labels to leave out")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--shrink", type=float, default=0.1)
    p.add_argument("--feature-power", type=float, default=0.5)
    args = p.parse_args(argv)
    raw, labels = _load(args.npz)
    if args.what == "validation":
        for row in validation(raw, labels):
            print(f"{row['variant']:58s} P@5 {row['p5']:.4f}  mAP@10 {row['map10']:.4f}", flush=True)
    elif args.what == "heldout":
        print(json.dumps(heldout(raw, labels, args), indent=2))
    elif args.what == "unseen":
        print(json.dumps(unseen(raw, labels, args.labels), indent=2))
    else:
        print(json.dumps(churn(raw, labels), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
