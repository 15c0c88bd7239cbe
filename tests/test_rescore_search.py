"""The searcher fetches the tuned R candidates and re-scores exactly those rows (app.index.rescore)."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import Config
from app.index.rescore import candidate_count, rescore, tuned_rescore
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService, candidates
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder


class SpyVectors:
    """The stored vectors, recording every read: the rows asked for, or the whole matrix."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.reads, self.whole = arr, [], 0

    def __getitem__(self, key):
        self.reads.append(np.atleast_1d(np.asarray(key)).size)
        return self.arr[key]

    def __array__(self, dtype=None, copy=None):
        self.whole += 1
        return self.arr if dtype is None else self.arr.astype(dtype)

    def __len__(self) -> int:
        return len(self.arr)

    @property
    def shape(self):
        return self.arr.shape


class SpyStore:
    def __init__(self, store) -> None:
        self.store, self.asked = store, []

    def search(self, q, n):
        self.asked.append(int(n))
        return self.store.search(q, n)

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    base = tmp_path_factory.mktemp("rescore")
    make_image_folder(base / "pics", classes=("circles", "stripes", "squares", "checks"), per_class=10, seed=5)
    config = Config(data_dir=base / "data", indexes_dir=base / "indexes", features_dir=base / "features",
                    cache_dir=base / "cache", weights="untrained", workers=0, max_k=100)
    fake = FakeEmbedder("fake/rescore")
    result = build_collection(config, BuildSpec(kind="folder", data=base / "pics", name="rs"), embedder=fake,
                              progress_bar=False)
    return SearchService(config, embedder=fake), result


def _spied(service: SearchService, tuning: dict):
    col = service.collection("rs")
    col.manifest = col.manifest.with_(tuning=tuning)
    col.store = SpyStore(col.store)
    col.vectors = SpyVectors(np.asarray(col.vectors))
    return col


def test_the_manifest_carries_r(tuned):
    _, result = tuned
    tuning = result.manifest["tuning"]
    assert tuned_rescore(tuning) == tuning["rescore_candidates"] == tuning["chosen"]["rescore"] >= 1
    assert tuning["code_bytes_per_vector"] > 0


def test_the_searcher_rescores_exactly_r_rows(tuned):
    service, result = tuned
    col = _spied(service, {**result.manifest["tuning"], "rescore_candidates": 7})
    vec = np.asarray(col.vectors.arr[3], dtype=np.float32)
    col.vectors.reads.clear()
    res = service.search_vector("rs", vec, 5, rerank=False)
    assert col.store.asked == [7]
    assert col.vectors.reads == [7] and col.vectors.whole == 0  # R rows, never the whole matrix
    assert [h.id for h in res.hits][0] == 3 and len(res.hits) == 5
    scores = [h.score for h in res.hits]
    assert scores == sorted(scores, reverse=True)
    exact = col.vectors.arr @ vec  # the hits are the exact order of the 7 candidates
    assert scores[0] == pytest.approx(float(exact.max()), abs=1e-5)


def test_more_hits_than_r_covers_get_the_default_candidates(tuned):
    service, result = tuned
    col = _spied(service, {**result.manifest["tuning"], "rescore_candidates": 7})
    service.search_vector("rs", np.asarray(col.vectors.arr[0], dtype=np.float32), 10, rerank=False)
    assert col.store.asked == [candidates(10, len(col))]  # 40 > R
    assert candidate_count({"rescore_candidates": 300}, 10, 1000, candidates) == 300
    assert candidate_count({"rescore_candidates": 300}, 10, 120, candidates) == 120  # never more than n


def test_an_older_manifest_without_r_still_searches(tuned):
    service, result = tuned
    col = _spied(service, {k: v for k, v in result.manifest["tuning"].items() if k != "rescore_candidates"})
    res = service.search_vector("rs", np.asarray(col.vectors.arr[5], dtype=np.float32), 5, rerank=False)
    assert col.store.asked == [candidates(5, len(col))]
    assert res.hits[0].id == 5 and len(res.hits) == 5


def test_query_expansion_works_with_r(tuned):
    service, result = tuned
    col = _spied(service, {**result.manifest["tuning"], "rescore_candidates": 9})
    res = service.search_vector("rs", np.asarray(col.vectors.arr[8], dtype=np.float32), 5, rerank=True)
    assert col.store.asked == [9, 9]  # the first search and the expanded one
    assert res.hits[0].id == 8 and len(res.hits) == 5
    assert col.vectors.whole == 0


def test_rescore_orders_by_exact_cosine():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 8)).astype(np.float32)
    q = rng.standard_normal(8).astype(np.float32)
    ids, scores = rescore(v, q, [4, 9, 17, 30], 2)
    best = sorted([4, 9, 17, 30], key=lambda i: -float(v[i] @ q))[:2]
    assert ids == best and np.allclose(scores, v[best] @ q)
    assert rescore(v, q, [], 3)[0] == []
