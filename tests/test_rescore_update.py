"""Incremental changes with the compact index kinds the re-scoring tuner picks (8-bit PQ and 4-bit fast-scan
IVF codes under a PCAR), and the retrain rule measuring recall after re-scoring, as the searcher searches."""

from __future__ import annotations

import numpy as np
import pytest

from app.index.faiss_index import IndexConfig, set_search_params, train_index
from app.index.faiss_store import save_index
from app.index.faiss_update import add_rows, fill_index, remove_rows, sample_recall
from app.index.rescore import rescored_search
from app.service.reindex import update_index
from tests.test_churn import drifting_vectors

KINDS = ("PCAR16,IVF16,PQ8x4fs", "PCAR16,IVF16,PQ8np")
R = 50


@pytest.mark.parametrize("factory", KINDS)
def test_add_and_remove_in_place(factory):
    x = drifting_vectors(3, n_new=40)
    config = IndexConfig(factory, nprobe=8)
    holes = np.array([10, 200, 640])
    live = np.setdiff1d(np.arange(1000), holes)
    index = fill_index(train_index(x[:1000], config), x[:1000], live)
    set_search_params(index, config)
    new_ids = np.arange(1000, 1040)
    add_rows(index, x[new_ids], new_ids)
    removed = np.array([5, 77, 1003])
    assert remove_rows(index, removed) == 3
    assert index.ntotal == 1000 - 3 + 40 - 3

    search = rescored_search(index, x, R)
    _, found = search(x[new_ids], 1)
    kept_new = [i for i in new_ids if i not in removed]
    assert all(f == i for f, i in zip(found[:, 0], new_ids, strict=True) if i in kept_new)
    _, near = search(x[np.concatenate([holes, removed])], 10)
    assert not set(near.ravel().tolist()) & set(holes.tolist() + removed.tolist())  # never a deleted id


@pytest.mark.parametrize("factory", KINDS)
def test_the_retrain_rule_measures_recall_after_rescoring(tmp_path, factory):
    x = drifting_vectors(4, n_new=100)
    config = IndexConfig(factory, nprobe=16)
    index = train_index(x[:1000], config)
    index.add(x[:1000])
    manifest = save_index(index, tmp_path, "c", {
        "weights_id": "w", "factory": factory, "nprobe": 16, "k_factor": 1, "trained_count": 1000,
        "tuning": {"target_recall_at_5": 0.5, "max_ms_per_query": 5.0, "rescore_candidates": R}})
    removed = np.arange(0, 100)  # 20% churn: between the thresholds, so the rule measures
    new_ids = np.arange(1000, 1100)
    live = np.setdiff1d(np.arange(1100), removed)
    upd = update_index(tmp_path, manifest, x, live, removed, new_ids)
    assert not upd.decision.retrain and upd.decision.measured_recall is not None  # measured, kept in place
    rescored = sample_recall(rescored_search(upd.index, x, R), x, live)
    alone = sample_recall(lambda q, k: upd.index.search(np.ascontiguousarray(q), k), x, live)
    assert upd.decision.measured_recall == pytest.approx(rescored)  # the re-scored notion, as searched
    assert rescored > alone
