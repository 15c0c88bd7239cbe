"""app.index.store.VectorStore: the faiss and the Milvus stores, used through the Protocol only.

The Milvus tests run Milvus Lite embedded, with a database file in tmp_path.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import UnsupportedOperationError
from app.index.faiss_index import IndexConfig, train_index
from app.index.faiss_store import FaissStore
from app.index.store import VectorStore, cosine_scores

D = 32


def unit_vectors(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def faiss_store(tmp_path, factory: str = "IVF4,Flat", nprobe: int = 4, train: np.ndarray | None = None) -> FaissStore:
    """An empty, trained faiss store (nprobe = every list: exact for IVF,Flat)."""
    cfg = IndexConfig(factory, nprobe)
    index = train_index(unit_vectors(400, seed=99) if train is None else train, cfg)
    return FaissStore(tmp_path / "indexes", "s", index,
                      manifest={"weights_id": "test/w", "factory": cfg.factory, "nprobe": cfg.nprobe})


def milvus_store(tmp_path, name: str = "s", index_type: str = "FLAT"):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from app.index.milvus_store import MilvusIndex

    return MilvusIndex.create(str(tmp_path / "milvus.db"), name, D, weights_id="test/w", index_type=index_type)


def exact_topk(x: np.ndarray, queries: np.ndarray, k: int, removed: set[int] = frozenset()) -> np.ndarray:
    sims = queries @ x.T
    sims[:, sorted(removed)] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


# -- through the Protocol, for either store ----------------------------------------------------


def check_add_remove_count(store: VectorStore) -> None:
    """add / count / remove / search / save / load, as any VectorStore must do them."""
    assert isinstance(store, VectorStore) and store.dim == D and store.count() == 0
    x = unit_vectors(60)
    store.add(x[:50], np.arange(50))
    assert store.count() == 50
    store.add(x[50:], np.arange(100, 110))  # ids need not follow on
    assert store.count() == 60
    dist, ids = store.search(x[[3, 55]], 1)
    assert ids.tolist() == [[3], [105]] and dist.dtype == np.float32 and ids.dtype == np.int64
    assert np.allclose(cosine_scores(dist), 1.0, atol=1e-4)

    assert store.remove(np.array([3, 104, 999])) == 2  # 999 was never there
    assert store.count() == 58
    _, ids = store.search(x[[3, 54]], 5)
    assert 3 not in ids and 104 not in ids and (ids >= 0).all()

    dist, ids = store.search(x[:2], 80)  # more than are stored: padded as faiss pads
    assert ids.shape == dist.shape == (2, 80)
    assert ((ids >= 0).sum(axis=1) == 58).all() and (ids[:, 58:] == -1).all() and np.isinf(dist[:, 58:]).all()
    assert np.all(np.diff(dist[:, :58], axis=1) >= -1e-5)  # best first

    store.save()
    store.load()
    assert store.count() == 58
    _, again = store.search(x[[0, 55]], 1)
    assert again.tolist() == [[0], [105]]


def test_faiss_store_add_remove_count(tmp_path):
    check_add_remove_count(faiss_store(tmp_path))


def test_faiss_store_saves_and_loads_through_the_manifest(tmp_path):
    store = faiss_store(tmp_path)
    x = unit_vectors(40)
    store.add(x, np.arange(40))
    store.remove(np.array([7]))
    store.save()
    assert store.manifest.count == 39 and store.manifest.nprobe == 4 and store.manifest.weights_id == "test/w"
    again = FaissStore.open(tmp_path / "indexes", "s", weights_id="test/w", dim=D)
    assert again.count() == 39 and again.manifest == store.manifest
    assert np.array_equal(again.search(x[:10], 5)[1], store.search(x[:10], 5)[1])


def test_faiss_store_search_parameters_come_from_the_manifest_and_configure(tmp_path):
    x = unit_vectors(400, seed=3)
    store = faiss_store(tmp_path, "IVF16,Flat", nprobe=1, train=x)
    store.add(x, np.arange(len(x)))
    store.save()
    exact = exact_topk(x, x[:50], 5)
    loaded = FaissStore.open(tmp_path / "indexes", "s")
    assert not np.array_equal(loaded.search(x[:50], 5)[1], exact)  # one list of 16: approximate
    loaded.configure(IndexConfig("IVF16,Flat", nprobe=16))
    assert np.array_equal(loaded.search(x[:50], 5)[1], exact)  # every list: exact
    loaded.save()
    assert FaissStore.open(tmp_path / "indexes", "s").manifest.nprobe == 16


def test_a_flat_store_numbers_rows_itself_and_refuses_ids_and_removal(tmp_path):
    store = faiss_store(tmp_path, "Flat")
    x = unit_vectors(30)
    store.add(x[:20], np.arange(20))  # the next ids in order: every index can
    with pytest.raises(UnsupportedOperationError, match="ids 20..29"):
        store.add(x[20:], np.arange(100, 110))
    with pytest.raises(UnsupportedOperationError, match="cannot remove"):
        store.remove(np.array([1]))  # a flat index would renumber every later row
    assert store.count() == 20
    assert store.search(x[5], 1)[1][0, 0] == 5


@pytest.mark.parametrize("factory", ["IVF4,PQ4x4np,Refine(SQ8)", "PCAR16,IVF4,PQ4x4np,RFlat", "IVF4,PQ8",
                                     "PCAR16,IVF4,Flat"])
def test_ivf_and_refined_stores_update_in_place_keeping_every_id(tmp_path, factory):
    """Removed ids leave, appended ids (after a gap too) are found under their own id, the others keep theirs,
    and all of it survives save and load."""
    store = faiss_store(tmp_path, factory)
    x = unit_vectors(60)
    store.add(x[:40], np.arange(40))
    assert store.remove(np.array([3, 7, 39])) == 3 and store.count() == 37
    store.add(x[40:50], np.arange(40, 50))
    store.add(x[50:], np.arange(55, 65))  # a gap: ids 50..54 never reach the index
    assert store.count() == 57
    rows = {0: 0, 1: 1, 2: 2, 40: 40, 41: 41, 42: 42, 55: 50, 64: 59}  # id -> its vector's row in x
    _, found = store.search(x[list(rows.values())], 1)
    assert found[:, 0].tolist() == list(rows)
    _, near = store.search(x[[3, 7, 39]], 10)
    assert not {3, 7, 39} & set(near.ravel().tolist())
    store.save()
    again = FaissStore.open(tmp_path / "indexes", "s")
    assert again.count() == 57
    assert again.search(x[list(rows.values())], 1)[1][:, 0].tolist() == list(rows)
    if "Refine" in factory or "RFlat" in factory:  # codes are stored by position: no going back
        with pytest.raises(UnsupportedOperationError, match="append"):
            again.add(x[:1], np.array([3]))


def test_faiss_store_refuses_wrong_shapes(tmp_path):
    store = faiss_store(tmp_path)
    with pytest.raises(ValueError, match="dimension"):
        store.add(unit_vectors(3, d=8), np.arange(3))
    with pytest.raises(ValueError, match="ids"):
        store.add(unit_vectors(3), np.arange(2))
    with pytest.raises(ValueError, match="k must be"):
        store.search(unit_vectors(1), 0)


@pytest.mark.slow
def test_milvus_store_add_remove_count(tmp_path):
    check_add_remove_count(milvus_store(tmp_path))


@pytest.mark.slow
def test_milvus_store_records_its_count_on_save(tmp_path):
    from app.index.milvus_store import MilvusIndex

    store = milvus_store(tmp_path, "counted")
    store.add(unit_vectors(25), np.arange(25))
    store.save()
    again = MilvusIndex(store.uri, "counted")
    assert again.meta == store.meta and again.meta.count == 25 == again.count() and again.dim == D


@pytest.mark.slow
@pytest.mark.parametrize("index_type", ["FLAT", "HNSW"])
def test_both_stores_give_the_same_top_k_on_the_same_vectors(tmp_path, index_type):
    """faiss (IVF, every list probed) and Milvus (exact, and the default HNSW) on the same vectors: the same
    top 10, also after removals and after 30% churn (removed ids, new ids appended), with the same counts."""
    x = unit_vectors(400, seed=1)
    queries = unit_vectors(20, seed=2)
    stores: list[VectorStore] = [faiss_store(tmp_path, "IVF4,Flat", nprobe=4), milvus_store(tmp_path, "s", index_type)]
    for store in stores:
        store.add(x[:300], np.arange(300))
        store.save()
    removed = {int(i) for i in exact_topk(x[:300], queries[:5], 1).ravel()}  # some queries' best matches
    churned = set(np.random.default_rng(3).choice(300, 90, replace=False).tolist()) - removed
    live = np.ones(400, dtype=bool)
    live[300:] = False
    for step in ("all", "after-remove", "after-churn"):
        if step == "after-remove":
            for store in stores:
                assert store.remove(np.array(sorted(removed))) == len(removed)
            live[sorted(removed)] = False
        if step == "after-churn":  # 90 more removed, 100 new vectors under new ids
            for store in stores:
                assert store.remove(np.array(sorted(churned))) == len(churned)
                store.add(x[300:], np.arange(300, 400))
                store.save()
            live[sorted(churned)] = False
            live[300:] = True
        want = exact_topk(x, queries, 10, set(np.flatnonzero(~live).tolist()))
        (fd, fi), (md, mi) = (s.search(queries, 10) for s in stores)
        assert np.array_equal(fi, want), step
        assert np.array_equal(mi, want), step
        assert np.allclose(fd, md, atol=1e-4), step
        assert stores[0].count() == stores[1].count() == int(live.sum()), step
    assert np.array_equal(stores[1].ids(), np.flatnonzero(live))
