"""Index recall after churn: in place it drifts, the retrain rule (app.index.faiss_update) catches it.

Seeded generated vectors: 1,000 clustered points in an 8-d subspace of R^64; the churn removes 30% of
them and adds as many whose clusters lie half in new directions (drift the trained PCA never saw)."""

from __future__ import annotations

import numpy as np
import pytest

from app.index.faiss_index import IndexConfig, set_search_params, train_index
from app.index.faiss_store import save_index
from app.index.faiss_update import add_rows, remove_rows, retrain_decision, sample_recall
from app.service.reindex import update_index

CONFIG = IndexConfig("PCAR16,IVF16,PQ8np,Refine(SQ8)", nprobe=16, k_factor=8)


def drifting_vectors(seed: int, n_old: int = 1000, n_new: int = 300, d: int = 64, latent: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]

    def make(n: int, dims: slice) -> np.ndarray:
        centres = rng.normal(size=(20, latent))
        z = centres[rng.integers(0, 20, n)] + rng.normal(scale=0.35, size=(n, latent))
        x = z @ basis[:, dims].T + rng.normal(scale=0.02, size=(n, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return np.concatenate([make(n_old, slice(0, latent)), make(n_new, slice(latent // 2, latent // 2 + latent))])


def recall(index, x: np.ndarray, live: np.ndarray) -> float:
    set_search_params(index, CONFIG)
    return sample_recall(lambda q, k: index.search(np.ascontiguousarray(q), k), x, live, queries=len(live))


def trained(tmp_path, x: np.ndarray):
    """The index over the first 1,000 vectors, saved with its manifest (as a build leaves it)."""
    index = train_index(x[:1000], CONFIG)
    index.add(x[:1000])
    manifest = save_index(index, tmp_path, "c", {"weights_id": "w", "factory": CONFIG.factory,
                                                 "nprobe": CONFIG.nprobe, "k_factor": CONFIG.k_factor,
                                                 "tuning": {"fixed": True}, "trained_count": 1000})
    return index, manifest


@pytest.mark.parametrize("seed", [0, 1])
def test_30_percent_churn_drifts_in_place_and_the_rule_retrains(tmp_path, seed):
    x = drifting_vectors(seed)
    index, manifest = trained(tmp_path, x)
    before = recall(index, x, np.arange(1000))
    removed = np.sort(np.random.default_rng(seed).choice(1000, 300, replace=False))
    live = np.setdiff1d(np.arange(1300), removed)
    new_ids = np.arange(1000, 1300)

    remove_rows(index, removed)  # what an update without the rule would serve
    add_rows(index, x[new_ids], new_ids)
    in_place = recall(index, x, live)

    upd = update_index(tmp_path, manifest, x, live, removed, new_ids)
    assert upd.decision.retrain and upd.fields == {"trained_count": 1000, "updates_since_training": 0}
    retrained = recall(upd.index, x, live)
    assert before >= 0.95 and retrained >= 0.95, (before, retrained)
    assert in_place < 0.92 and retrained > in_place + 0.05, (in_place, retrained)
    _, found = upd.index.search(x[new_ids[:5]], 1)
    assert found[:, 0].tolist() == new_ids[:5].tolist()  # the new vectors are there under their own ids
    assert not set(removed.tolist()) & set(upd.index.search(x[removed[:20]], 10)[1].ravel().tolist())


def test_a_small_change_stays_in_place_and_keeps_recall(tmp_path):
    x = drifting_vectors(2, n_new=10)
    index, manifest = trained(tmp_path, x)
    removed, new_ids = np.array([3, 500]), np.arange(1000, 1010)
    live = np.setdiff1d(np.arange(1010), removed)
    upd = update_index(tmp_path, manifest, x, live, removed, new_ids)
    assert not upd.decision.retrain and upd.decision.measured_recall is None  # 12 updates: under 2%, not measured
    assert upd.fields == {"updates_since_training": 12}
    assert recall(upd.index, x, live) >= 0.95


def test_the_rule_measures_between_the_thresholds():
    calls = []

    def measure(value):
        return lambda: calls.append(value) or value

    assert not retrain_decision(1000, 20, measure(0.5)).retrain and calls == []  # 2%: not even measured
    assert retrain_decision(1000, 501, measure(0.99)).retrain and calls == []  # over 50%: retrain regardless
    assert retrain_decision(1000, 100, measure(0.955)).retrain  # under target + margin
    assert not retrain_decision(1000, 100, measure(0.97)).retrain
    assert calls == [0.955, 0.97]
