"""app.service.search.SearchService over built collections (the session's small one and approximate ones)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from app.config import Config
from app.core.features import feature_paths
from app.errors import IndexMismatchError, IndexMissingError, InvalidImageError, UnknownItemError
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService
from tests.fakes import FakeEmbedder, SpyEmbedder
from tests.helpers import make_image_folder

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def shapes(small_collection, embedder):
    config, result, data = small_collection
    return SearchService(config, embedder=embedder), config, result, data


@pytest.fixture(scope="module")
def approx(tmp_path_factory):
    """A 'folder' collection with a deliberately approximate index (IVF, nprobe 1 of 8 lists, PQ)."""
    base = tmp_path_factory.mktemp("approx")
    make_image_folder(base / "pics", classes=("circles", "stripes", "squares", "checks"), per_class=10, seed=11)
    config = Config(data_dir=base / "data", indexes_dir=base / "indexes", features_dir=base / "features",
                    cache_dir=base / "cache", weights="untrained", workers=0, max_k=100)
    fake = FakeEmbedder("fake/approx")
    spec = BuildSpec(kind="folder", data=base / "pics", name="approx", factory="IVF8,PQ16x4", nprobe=1)
    result = build_collection(config, spec, embedder=fake, progress_bar=False)
    assert result.manifest.count == 40
    return SearchService(config, embedder=fake), config, base


def copy_collection(config: Config, dest: Path) -> Config:
    shutil.copytree(config.indexes_dir, dest / "indexes")
    shutil.copytree(config.features_dir, dest / "features")
    return config.with_(indexes_dir=dest / "indexes", features_dir=dest / "features")


# -- a collection image finds itself ----------------------------------------------------------


def test_every_image_of_the_collection_finds_itself_first_by_file(shapes):
    service, _, _, data = shapes
    col = service.collection("shapes")
    assert len(col) == 24
    for item_id, rel in enumerate(col.table.paths):
        result = service.search_new_image(data / rel, "shapes", k=5)
        assert len(result.hits) == 5 and not result.reused
        top = result.hits[0]
        assert (top.rank, top.id, top.path) == (1, item_id, rel), rel
        assert top.score == pytest.approx(1.0, abs=1e-4)
        assert top.abs_path == data.resolve() / rel and top.abs_path.is_file()
        assert top.label == rel.split("/")[0]


def test_every_item_finds_itself_first_by_search_item(shapes):
    service, *_ = shapes
    col = service.collection("shapes")
    for item_id in range(len(col)):
        result = service.search_item("shapes", item_id, k=3)
        assert result.reused and [h.rank for h in result.hits] == [1, 2, 3]
        assert result.hits[0].id == item_id
        assert result.hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_search_accepts_bytes_and_pil_and_a_real_photo(shapes):
    from PIL import Image

    service, _, _, data = shapes
    rel = service.collection("shapes").table.paths[5]
    by_path = service.search_new_image(data / rel, "shapes", k=4)
    for source in ((data / rel).read_bytes(), Image.open(data / rel), str(data / rel)):
        again = service.search_new_image(source, "shapes", k=4)
        assert [h.id for h in again.hits] == [h.id for h in by_path.hits]
    photo = service.search_new_image(DATA / "photo_chelsea.jpg", "shapes", k=5)
    assert len(photo.hits) == 5 and len({h.id for h in photo.hits}) == 5
    assert photo.hits[0].score < 0.9999  # not in the collection
    with pytest.raises(InvalidImageError):
        service.search_new_image(b"definitely not an image", "shapes", k=5)


# -- k, ordering, exact scores -----------------------------------------------------------------


def test_k_larger_than_the_collection_returns_everything(shapes):
    service, config, _, _ = shapes
    big = SearchService(config.with_(max_k=100), embedder=service.embedder)
    result = big.search_item("shapes", 0, k=100)
    ids = [h.id for h in result.hits]
    assert sorted(ids) == list(range(24))  # all, once each, no -1
    assert [h.rank for h in result.hits] == list(range(1, 25))


def test_scores_are_exact_cosines_sorted_descending(shapes):
    """Without re-ranking; with it, scores are the same cosines (tests/test_rerank.py) in the re-ranked order."""
    service, *_ = shapes
    col = service.collection("shapes")
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = col.vectors[int(rng.integers(0, len(col)))] + rng.normal(0, 0.01, 2048).astype(np.float32)
        q = (q / np.linalg.norm(q)).astype(np.float32)
        result = service.search_vector("shapes", q, k=10, rerank=False)
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True)
        for h in result.hits:
            assert h.score == pytest.approx(float(np.dot(col.vectors[h.id], q)), abs=1e-5)


def test_k_is_clamped_to_the_configured_range(shapes):
    service, config, _, _ = shapes
    assert len(service.search_item("shapes", 0, k=0).hits) == 1
    assert len(service.search_item("shapes", 0, k=10_000).hits) == config.max_k
    assert len(service.search_item("shapes", 0, k=None).hits) == config.default_k


def test_approximate_index_never_drops_the_best_match_or_returns_missing_ids(approx):
    service, _, _ = approx
    col = service.collection("approx")
    n = len(col)
    exact = np.asarray(col.vectors) @ np.asarray(col.vectors).T
    for item_id in range(n):
        for k in (1, 5):
            result = service.search_item("approx", item_id, k=k)
            assert len(result.hits) == k
            assert result.hits[0].id == item_id  # itself, though nprobe=1 and PQ codes are lossy
        everything = service.search_item("approx", item_id, k=100, rerank=False)
        assert sorted(h.id for h in everything.hits) == list(range(n))  # all 40, though nprobe=1 of 8 lists
        assert [h.id for h in everything.hits][:3] == list(np.argsort(-exact[item_id], kind="stable")[:3])
        reranked = service.search_item("approx", item_id, k=100)
        assert sorted(h.id for h in reranked.hits) == list(range(n)) and reranked.hits[0].id == item_id


def test_query_images_find_themselves_in_the_approximate_index(approx):
    service, _, base = approx
    col = service.collection("approx")
    for item_id in range(0, len(col), 3):
        result = service.search_new_image(base / "pics" / col.table.paths[item_id], "approx", k=5)
        assert result.hits[0].id == item_id


# -- errors and mismatches ---------------------------------------------------------------------


def test_unknown_collection_and_item(shapes, tmp_path):
    service, *_ = shapes
    with pytest.raises(IndexMissingError) as info:
        service.search_new_image(DATA / "photo_chelsea.jpg", "no-such-collection", k=5)
    assert "build_index.py" in info.value.user_message()
    with pytest.raises(IndexMissingError):
        service.search_item("no-such-collection", 0)
    for bad in (-1, 24, 10**9):
        with pytest.raises(UnknownItemError):
            service.search_item("shapes", bad)


def _rewrite_table(config: Config, change, sql: str = "") -> None:
    """Change the head of the SQLite table (app.core.table_db) behind the app's back, and run ``sql``."""
    path = feature_paths(config.features_dir, "shapes")[1]
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        (info,) = con.execute("SELECT info FROM head").fetchone()
        obj = json.loads(info)
        change(obj)
        con.execute("UPDATE head SET info = ?", (json.dumps(obj),))
        if sql:
            con.execute(sql)


@pytest.mark.parametrize("case", ["fewer-rows", "other-weights", "other-build", "other-sample", "missing"])
def test_features_that_do_not_match_the_index_are_refused(shapes, tmp_path, case, embedder):
    _, config, _, _ = shapes
    cfg = copy_collection(config, tmp_path)
    npy = feature_paths(cfg.features_dir, "shapes")[0]
    if case == "fewer-rows":
        np.save(npy, np.load(npy)[:-1])
        _rewrite_table(cfg, lambda o: o.update(rows=o["rows"] - 1, count=o["count"] - 1),
                       "DELETE FROM items WHERE id = (SELECT max(id) FROM items)")
    elif case == "other-weights":
        _rewrite_table(cfg, lambda o: o.update(weights_id="resnet50/file-sha256-0123456789abcdef"))
    elif case == "other-build":  # same count and weights, written by a later build
        _rewrite_table(cfg, lambda o: o.update(created="2031-01-01T00:00:00+00:00"))
    elif case == "other-sample":
        _rewrite_table(cfg, lambda o: o.update(fingerprint="0" * 64))
    else:
        npy.unlink()
    with pytest.raises(IndexMismatchError) as info:
        SearchService(cfg, embedder=embedder).search_item("shapes", 0)
    assert "build_index.py" in info.value.user_message()


def test_search_item_does_not_run_the_model(shapes, embedder):
    _, config, _, data = shapes
    spy = SpyEmbedder(embedder)
    service = SearchService(config, embedder=spy)
    for item_id in (0, 7, 23):
        assert service.search_item("shapes", item_id, k=5).hits[0].id == item_id
    assert spy.calls == spy.loads == 0  # not even loaded
    service.search_new_image(data / service.collection("shapes").table.paths[0], "shapes", k=5)
    assert spy.calls >= 1  # the spy does see the model when it is used
