"""The recall-targeted index tuner, on seeded synthetic vectors of two kinds.

* ``spread``: clustered Gaussian data with a slowly decaying spectrum (like real CNN features);
* ``collapsed``: nearly rank-collapsed vectors (a dominant mean direction, ~99% of the centred
  variance in 8 directions), like the untrained network's.

Each test checks the choice on *fresh* queries drawn from the same distribution, not only on the
tuner's own held-out sample.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.index.faiss_index import search
from app.index.rescore import RESCORE_CHOICES, recall_by_r, rescored_search
from app.index.tune import candidates, exact_topk, is_ivfpq, ivf_nlist, recall_at_k, tune


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def spread(n: int, d: int = 256, clusters: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(d))
    centers = rng.standard_normal((clusters, d)) * spectrum
    labels = rng.integers(0, clusters, n)
    return _unit(centers[labels] + 0.35 * rng.standard_normal((n, d)) * spectrum)


def collapsed(n: int, d: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    strong = rng.standard_normal((n, 8)) * np.array([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2])
    weak = rng.standard_normal((n, d - 9)) * 0.03 / np.sqrt(1.0 + np.arange(d - 9) / 8.0)
    return _unit(4.0 * basis[:, 0] + strong @ basis[:, 1:9].T + weak @ basis[:, 9:].T)


KINDS = {"spread": spread, "collapsed": collapsed}


def _fresh_recall(index, collection: np.ndarray, queries: np.ndarray, r: int) -> float:
    """recall@5 as the searcher gets it: the index's top ``r`` re-scored exactly from the vectors."""
    truth = exact_topk(collection, queries, 5)
    return recall_at_k(rescored_search(index, collection, r)(queries, 5)[1], truth)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("target", [0.95, 0.8])
def test_choice_meets_the_target_and_is_the_smallest_passing(kind, target):
    data = KINDS[kind](3200, seed=1)
    vectors, fresh = data[:3000], data[3000:]
    index, report = tune(vectors, target_recall=target)

    assert report.target_met, report.to_json()
    chosen = report.chosen
    assert chosen is not None and chosen.recall_at_5 >= target and chosen.ms_per_query <= 1.0
    assert is_ivfpq(chosen.factory) and chosen.rescore in RESCORE_CHOICES and report.rescore == chosen.rescore
    passing = [t for t in report.trials if t.passes(target, 1.0) and is_ivfpq(t.factory)]
    assert chosen.index_bytes == min(t.index_bytes for t in passing)
    assert index.ntotal == len(vectors)
    # Fresh queries from the same distribution: the target holds up to sampling noise (200 x 5 pairs).
    assert _fresh_recall(index, vectors, fresh, chosen.rescore) >= target - 0.03
    assert report.final_bytes < report.flat_bytes
    json.dumps(report.to_json())  # what the manifest stores


def test_rank_collapsed_vectors_get_a_small_pca_space():
    vectors = collapsed(3000, seed=2)
    _, report = tune(vectors)
    assert report.target_met
    assert report.chosen.factory.startswith("PCAR")
    assert report.fraction_of_flat < 0.15


def test_failures_prune_dominated_candidates():
    _, report = tune(spread(3000, seed=3), target_recall=0.95)
    tried = {t.factory for t in report.trials}
    for line in report.skipped:
        if "dominated by" in line:
            assert line.split(":")[0] not in tried


def test_unreachable_target_is_reported_as_not_met():
    vectors = spread(1500, seed=4)
    index, report = tune(vectors, target_recall=1.01, time_budget_s=5)
    assert not report.target_met
    assert report.chosen is not None and report.chosen.recall_at_5 == max(t.recall_at_5 for t in report.trials)
    assert report.to_json()["target_met"] is False
    assert index.ntotal == len(vectors)
    assert search(index, vectors[:3], 5)[1].shape == (3, 5)


def test_too_strict_latency_is_reported_as_not_met():
    _, report = tune(spread(1500, seed=5), max_ms=1e-6, time_budget_s=5)
    assert not report.target_met


def test_tiny_collection():
    vectors = spread(24, d=2048, seed=6)
    index, report = tune(vectors)
    assert index.ntotal == 24
    assert report.chosen is not None and report.seconds < 20
    ids = search(index, vectors[:1], 5)[1][0]
    assert 0 in ids.tolist()  # an item finds itself


def test_candidates_are_sorted_and_well_formed():
    cands = candidates(8000, 2048, dims=[64, 128])
    sizes = [c.est_bytes for c in cands]
    assert sizes == sorted(sizes)
    for c in cands:
        assert c.factory.startswith(("PCAR64,IVF", "PCAR128,IVF")) and is_ivfpq(c.factory)
        m = int(c.body.split(",PQ")[1].split("np")[0].split("x")[0])
        assert c.dp % m == 0
        assert c.code_bytes == (m / 2 if c.body.endswith("x4fs") else m)
        assert c.est_bytes >= 8000 * (c.code_bytes + 8)  # codes and ids at least


def test_ivf_size_follows_the_collection_size():
    assert ivf_nlist(1_000_000, 200_000) == 4096
    assert ivf_nlist(100_000, 50_000) == 1024
    assert ivf_nlist(8_000, 8_000) == 250  # at least 32 training vectors a list
    assert ivf_nlist(24, 24) == 1  # tiny: one list, a scan of the codes


def test_recall_after_rescoring_matches_brute_force():
    rng = np.random.default_rng(7)
    db = spread(500, d=32, seed=7)
    q = spread(20, d=32, seed=8)
    truth = exact_topk(db, q, 5)
    found = np.stack([rng.permutation(500)[:40] for _ in range(20)])
    found[:, -3:] = -1  # padding from an IVF probe that held too few
    got = recall_by_r(db, q, found, truth, [10, 40])
    for r in (10, 40):
        want = []
        for row in range(20):
            ids = [i for i in found[row, :r] if i >= 0]
            top = [ids[j] for j in np.argsort(-(db[ids] @ q[row]))[:5]]
            want.append(len(set(top) & set(truth[row].tolist())))
        assert got[r] == pytest.approx(sum(want) / 100.0)


def test_rescoring_lets_a_smaller_code_meet_the_target():
    """On clustered data the code chosen is compact (<= 32 bytes, <= 64 bytes a vector in all), yet
    recall@5 after re-scoring R candidates holds the target on fresh queries, where the same index's
    own top 5 does not."""
    data = spread(4200, seed=11)
    vectors, fresh = data[:4000], data[4000:]
    index, report = tune(vectors, target_recall=0.95)
    assert report.target_met
    j = report.to_json()
    assert j["code_bytes_per_vector"] <= 32 and j["index_bytes_per_vector"] <= 64
    assert j["index_bytes_per_vector"] < 0.1 * 256 * 4  # a tenth of flat
    r = report.rescore
    assert _fresh_recall(index, vectors, fresh, r) >= 0.92
    alone = recall_at_k(search(index, fresh, 5)[1], exact_topk(vectors, fresh, 5))
    assert alone < 0.95  # the index alone misses: the re-scoring is what reaches the target


def test_build_records_the_tuning_in_the_manifest(small_collection):
    _, result, _ = small_collection
    m = result.manifest
    tuning = m["tuning"]
    chosen = tuning["chosen"]
    assert (chosen["factory"], chosen["nprobe"], chosen["k_factor"]) == (m["factory"], m["nprobe"], m["k_factor"])
    assert "recall_at_5" in chosen and "fraction_of_flat" in tuning
    assert tuning["rescore_candidates"] == chosen["rescore"] >= 1  # R: what the searcher re-scores
    assert tuning["code_bytes_per_vector"] == chosen["code_bytes"] > 0
    assert tuning["index_bytes_per_vector"] == pytest.approx(tuning["final_index_bytes"] / m["count"], abs=0.01)


def test_chosen_index_is_always_ivfpq():
    """The product serves IVFPQ indexes (8-bit or 4-bit fast-scan codes), re-scored exactly."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1500, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, report = tune(x, time_budget_s=20)
    assert report.chosen is not None and is_ivfpq(report.chosen.factory)
    assert all(is_ivfpq(t.factory) for t in report.trials)
    assert is_ivfpq("PCAR64,IVF16,PQ8np,Refine(SQ8)") and not is_ivfpq("PCAR64,IVF16,SQ8")
