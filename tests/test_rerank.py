"""Re-ranking (app.index.rerank): αQE, DBA and its incremental update, the held-out split, the search hook."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from app.index.rerank import (
    DbaParams,
    RerankOptions,
    affected_rows,
    augment,
    augment_update,
    expand_queries,
    expand_query,
    normalise,
    top_k,
)
from app.metrics import heldout
from app.metrics.heldout import RerankVariant, evaluate_variants, heldout_split
from app.service.requery import requery


def clusters(n: int = 600, d: int = 32, k: int = 12, noise: float = 0.9, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    lab = rng.integers(0, k, n)
    x = normalise(centres[lab] + noise * rng.normal(size=(n, d)))
    return x, [(f"c{int(c)}",) for c in lab]


def test_expand_query_by_hand():
    q = np.array([1.0, 0.0, 0.0], np.float32)
    nb = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    got = expand_query(q, nb, np.array([0.5, -0.2]), alpha=2.0)  # weights 0.25 and 0 (negative sims weigh nothing)
    want = np.array([1.0, 0.25, 0.0]) / np.hypot(1.0, 0.25)
    assert np.allclose(got, want, atol=1e-6)
    batch = expand_queries(q[None], nb, np.array([[0, 1]]), np.array([[0.5, -0.2]]), 2, 2.0)
    assert np.allclose(batch[0], want, atol=1e-6)


def test_top_k_masks_excludes_and_orders():
    x, _ = clusters(50)
    mask = np.ones(50, bool)
    mask[7] = False
    sims, ids = top_k(x[:3], x, 5, mask=mask, exclude=np.array([0, -1, 2]))
    full = x[:3] @ x.T
    full[:, 7] = -np.inf
    full[0, 0] = full[2, 2] = -np.inf
    assert ids.tolist() == np.argsort(-full, axis=1, kind="stable")[:, :5].tolist()
    assert np.all(np.diff(sims, axis=1) <= 0) and 7 not in ids


def test_dba_is_its_own_plus_neighbours_weighted():
    x, _ = clusters(40, d=8)
    aug, th = augment(x, None, DbaParams(n=3, alpha=3.0))
    for i in (0, 5, 39):
        s = x @ x[i]
        nb = np.argsort(-s)[:3]
        assert nb[0] == i
        want = normalise((np.clip(s[nb], 0, None) ** 3) @ x[nb])
        assert np.allclose(aug[i], want, atol=1e-5)
        assert th[i] == pytest.approx(s[nb[-1]], abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_dba_equals_a_full_rebuild(seed):
    """Adds and deletes in any mix: the rows recomputed by the threshold rule give the full result."""
    rng = np.random.default_rng(seed)
    x, labels = clusters(700, seed=seed)
    before = np.ones(700, bool)
    before[600:] = False  # rows 600.. arrive later
    before[rng.choice(600, 20, replace=False)] = False  # tombstones from earlier changes
    p = DbaParams(n=4, alpha=3.0)
    aug, th = augment(x[:600], before[:600], p)
    after = before.copy()
    after[600:640] = True  # added
    after[rng.choice(np.flatnonzero(before), 15, replace=False)] = False  # deleted
    got, got_th, rows = augment_update(x, aug, th, before[:600], after, p)
    full, full_th = augment(x, after, p)
    assert len(rows) < after.sum() / 2  # not a full recompute
    assert np.abs(got[after] - full[after]).max() < 1e-5
    assert np.allclose(got_th[after], full_th[after], atol=1e-5)
    # and the evaluation over it matches (queries: the valid rows, leave-one-out, DBA'd database)
    live = np.flatnonzero(after)
    lab = [labels[i] for i in live]
    a = evaluate_variants(got[live], lab, split="loo", variants=[RerankVariant("aqe", qe_n=2)])
    b = evaluate_variants(full[live], lab, split="loo", variants=[RerankVariant("aqe", qe_n=2)])
    for key in ("precision_at_5", "map_at_10"):
        assert abs(a["variants"]["aqe"][key] - b["variants"]["aqe"][key]) <= 0.002


def test_affected_rows_are_exactly_those_whose_neighbours_change():
    x, _ = clusters(300, seed=4)
    live = np.ones(300, bool)
    live[250:] = False
    p = DbaParams(n=3)
    _, th = augment(x, live, p)
    add = np.arange(250, 260)
    hit = set(affected_rows(x, th, live, add).tolist())
    after = live.copy()
    after[add] = True
    _, ids_before = top_k(x[:250], x, 3, mask=live)
    _, ids_after = top_k(x[:250], x, 3, mask=after)
    changed = {i for i in range(250) if set(ids_before[i]) != set(ids_after[i])}
    assert changed and changed <= hit


def test_heldout_split_every_fifth_of_each_class():
    labels = [("a",)] * 12 + [("b",)] * 6 + [("c",)] * 3
    q, db = heldout_split(labels)
    assert q.tolist() == [4, 9, 16]
    assert sorted(q.tolist() + db.tolist()) == list(range(21)) and not set(q) & set(db)


def test_heldout_queries_never_reach_the_database_or_its_augmentation(monkeypatch):
    x, labels = clusters(300, seed=5)
    q, _ = heldout_split(labels)
    seen = []
    real = heldout.augment

    def spy(db, live, params):
        seen.append(np.asarray(db).copy())
        return real(db, live, params)

    monkeypatch.setattr(heldout, "augment", spy)
    r = evaluate_variants(x, labels, split="heldout", variants=[RerankVariant("plain"), RerankVariant("d", dba_n=3, qe_n=2)])
    assert r["queries"] == len(q) and r["database"] == 300 - len(q)
    (db,) = seen
    assert len(db) == 300 - len(q)
    assert not np.any(np.isclose(db @ x[q].T, 1.0, atol=1e-6))  # no query vector among them
    for m in r["variants"].values():
        assert set(m) >= {"precision_at_5", "map_at_10"} and 0.0 <= m["precision_at_5"] <= 1.0


def test_expansion_helps_on_clustered_data():
    """Not a fixed number: on clean clusters αQE and DBA+αQE do not lose to plain search."""
    x, labels = clusters(800, noise=1.6, seed=6)
    r = evaluate_variants(x, labels, split="heldout", variants=[RerankVariant("plain"), RerankVariant("aqe", qe_n=3),
                                                                RerankVariant("dba", dba_n=3, qe_n=2)])["variants"]
    assert r["aqe"]["map_at_10"] > r["plain"]["map_at_10"]
    assert r["dba"]["map_at_10"] > r["plain"]["map_at_10"]


# -- the search hook --------------------------------------------------------------------------


class _ExactStore:
    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = 0

    def search(self, queries, k):
        self.calls += 1
        s = queries @ self.vectors.T
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, ids, axis=1), ids


def test_requery_expands_and_reorders():
    # q; A is its nearest; B1..B3 sit next to A; C is nearer q than the Bs but away from A.
    q = normalise(np.array([1.0, 0, 0, 0]))
    a = normalise(np.array([1.0, 0.5, 0, 0]))
    bs = normalise(np.array([[0.7, 0.8, 0.05 * i, 0] for i in range(3)]))
    c = normalise(np.array([0.75, 0, 0, 0.66]))
    vectors = np.vstack([a, bs, c, normalise(np.array([0, 0, 1.0, 1.0]))]).astype(np.float32)
    store = _ExactStore(vectors)
    col = SimpleNamespace(vectors=vectors, store=store, lock=threading.Lock(), live_mask=np.ones(len(vectors), bool))
    raw = vectors @ q
    first = np.argsort(-raw, kind="stable")[:6]
    assert first.tolist()[:2] == [0, 4]  # plain: A, then C
    ids, scores = requery(col, q, [int(i) for i in first], raw[first], 4, 6, RerankOptions(qe_n=1, qe_alpha=1.0))
    assert ids[0] == 0 and set(ids) == {0, 1, 2, 3}  # C falls below the Bs (it was second)
    assert np.all(scores >= vectors[ids] @ q - 1e-6) and np.all(np.diff(scores) <= 0) and store.calls == 1
    live = np.ones(len(vectors), bool)
    live[1] = False  # a deleted row is never a hit
    col.live_mask = live
    ids, _ = requery(col, q, [0, 4, 2, 3], raw[[0, 4, 2, 3]], 4, 6, RerankOptions(qe_n=1, qe_alpha=1.0))
    assert 1 not in ids


def test_rerank_options_off():
    assert not RerankOptions.off().enabled and RerankOptions().enabled


@pytest.mark.slow
def test_evaluate_cli_heldout_json(small_collection):
    import json
    import subprocess
    import sys
    from pathlib import Path

    config, _, data = small_collection
    root = Path(__file__).resolve().parent.parent
    base = [sys.executable, str(root / "scripts" / "evaluate.py"), "--collection", "folder", "--name", "shapes",
            "--data", str(data), "--weights", "untrained", "--indexes", str(config.indexes_dir),
            "--features", str(config.features_dir), "--split", "heldout", "--json"]
    runs = [subprocess.run(base + extra, capture_output=True, text=True, timeout=300, cwd=root)
            for extra in ([], ["--no-rerank"])]
    for out in runs:
        assert out.returncode == 0, out.stderr
    on, off = (json.loads(out.stdout) for out in runs)
    assert on["split"] == "heldout" and on["queries"] == 4 and on["database"] == 20  # 4 classes x 6: one each
    # a folder collection's search path uses the unsupervised whitening (folder names are not categories)
    assert on["default"] == heldout.PCA_NAME == heldout.default_variant("folder") != heldout.DEFAULT_NAME
    assert set(on["variants"]) >= {"plain", heldout.DEFAULT_NAME, heldout.PCA_NAME}
    for m in on["variants"].values():
        assert {"precision_at_5", "map_at_10"} <= set(m)
    assert off["default"] == "plain" and list(off["variants"]) == ["plain"]
    assert off["variants"]["plain"] == on["variants"]["plain"]
