"""The DBA sidecar (app.service.dba): made by a build, kept exact by add/delete, carried by rename and
drop, and which vectors each consumer reads. Generated images and the model-free FakeEmbedder."""

from __future__ import annotations

import numpy as np
import pytest

from app.config import Config
from app.index.rerank import DbaParams, augment
from app.service import dba
from app.service.build import BuildSpec, build_collection
from app.service.commit import read_state
from app.service.library import add_paths, delete_items, drop_collection, rename_collection
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image

SPEC = dict(kind="folder", name="pics", factory="IVF4,Flat", nprobe=4)


@pytest.fixture
def built(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root, per_class=8, seed=5)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(data=root, **SPEC), embedder=FakeEmbedder(), progress_bar=False)
    return config, root


def full_augmentation(config, name="pics"):
    state = read_state(config, name, mmap=False)
    raw = np.asarray(state.vectors, dtype=np.float32)
    return augment(raw, state.table.live_mask(), DbaParams())[0], state.table.live_mask()


def stored(config, name="pics"):
    aug = dba.load(config.features_dir, name)
    assert aug is not None
    return aug


def test_a_build_writes_the_augmentation_of_its_raw_vectors(built):
    config, _ = built
    want, live = full_augmentation(config)
    got = stored(config)
    assert got.params == DbaParams() and np.array_equal(got.live, live)
    assert np.abs(got.vectors - want).max() < 1e-5


def test_add_and_delete_keep_it_equal_to_a_full_recompute(built, tmp_path):
    config, root = built
    state = read_state(config, "pics")
    delete_items(config, "pics", ids=[0, 5, 9])
    got, (want, live) = stored(config), full_augmentation(config)
    assert not live[[0, 5, 9]].any() and np.abs(got.vectors[live] - want[live]).max() < 1e-5
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(4):
        synthetic_image(i % 4, 300 + i, seed=2).save(extra / f"new_{i}.jpg", quality=90)
    add_paths(config, "pics", [extra], embedder=FakeEmbedder())
    got, (want, live) = stored(config), full_augmentation(config)
    assert len(got.live) == len(state.table) + 4 and live[-4:].all()
    assert np.abs(got.vectors[live] - want[live]).max() < 1e-5


def test_an_update_recomputes_only_the_affected_rows(built, monkeypatch):
    config, _ = built
    seen = []
    real = dba.augment_update

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(len(out[2]))
        return out

    monkeypatch.setattr(dba, "augment_update", spy)
    delete_items(config, "pics", ids=[3])
    assert seen and 0 < seen[0] < len(read_state(config, "pics").table.live_ids())


def test_search_orders_with_augmented_vectors_and_scores_with_raw_ones(built):
    config, _ = built
    service = SearchService(config, embedder=FakeEmbedder())
    col = service.collection("pics")
    assert col.augmented is not None and not np.allclose(col.augmented, col.vectors)
    for item in (1, 7, 20):
        hits = service.search_item("pics", item, k=6).hits
        assert hits[0].id == item and hits[0].score == pytest.approx(1.0, abs=1e-5)  # a copy stays first
        for h in hits:  # scores: raw cosines to the query (copy detection reads them)
            assert h.score == pytest.approx(float(col.vectors[h.id] @ col.vectors[item]), abs=1e-5)
        raw = service.search_item("pics", item, k=6, rerank=False).hits
        exact = np.argsort(-(np.asarray(col.vectors) @ col.vectors[item]), kind="stable")[:6]
        assert [h.id for h in raw] == exact.tolist()  # off: the raw nearest neighbours


def test_a_stale_file_is_brought_up_to_date_in_memory(built, monkeypatch):
    config, _ = built
    monkeypatch.setattr(dba, "refresh", lambda *a, **k: None)  # a change whose refresh did not run
    delete_items(config, "pics", ids=[2, 4])
    col = SearchService(config, embedder=FakeEmbedder()).collection("pics")
    want, live = full_augmentation(config)
    assert np.abs(col.augmented[live] - want[live]).max() < 1e-5
    assert stored(config).live[2] and stored(config).live[4]  # the file itself was left as it was


def test_no_dba_build_rename_and_drop(built, tmp_path):
    config, root = built
    rename_collection(config, "pics", "renamed")
    assert not dba.dba_path(config.features_dir, "pics").exists() and stored(config, "renamed")
    summary = drop_collection(config, "renamed")
    assert str(dba.dba_path(config.features_dir, "renamed")) in summary.removed
    assert not dba.dba_path(config.features_dir, "renamed").exists()
    build_collection(config, BuildSpec(data=root, dba=False, **SPEC), embedder=FakeEmbedder(), progress_bar=False)
    assert dba.load(config.features_dir, "pics") is None
    assert SearchService(config, embedder=FakeEmbedder()).collection("pics").augmented is None
    delete_items(config, "pics", ids=[1])  # a collection without one keeps having none
    assert not dba.dba_path(config.features_dir, "pics").exists()


def test_a_damaged_file_is_recomputed(built):
    config, _ = built
    dba.dba_path(config.features_dir, "pics").write_bytes(b"not a zip")
    assert dba.load(config.features_dir, "pics") is None
    assert dba.refresh(config.features_dir, "pics", *_raw_live(config), create=False).mode == "full"
    assert stored(config).vectors.shape[0] == len(read_state(config, "pics").table)


def _raw_live(config):
    state = read_state(config, "pics", mmap=False)
    return np.asarray(state.vectors, np.float32), state.table.live_mask()


def test_a_full_disk_while_writing_it_does_not_fail_the_committed_change(built, monkeypatch):
    from app.errors import StorageError

    config, _ = built

    def full(*_a, **_k):
        raise StorageError("No space left on device")

    monkeypatch.setattr(dba, "save", full)
    summary = delete_items(config, "pics", ids=[6])  # committed, though the sidecar could not be written
    assert summary.removed == 1
    monkeypatch.undo()
    col = SearchService(config, embedder=FakeEmbedder()).collection("pics")
    want, live = full_augmentation(config)
    assert not live[6] and np.abs(col.augmented[live] - want[live]).max() < 1e-5  # recomputed when read


def test_a_collection_past_the_size_limit_has_no_augmentation(tmp_path, monkeypatch):
    """DBA's full computation grows as N^2: past dba.MAX_ROWS valid rows a build makes none, and a change
    that takes a collection past it removes the file (re-ranking is then αQE on the raw vectors)."""
    rng = np.random.default_rng(5)
    raw = rng.standard_normal((40, 8)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    live = np.ones(40, bool)
    monkeypatch.setattr(dba, "MAX_ROWS", 30)
    assert dba.refresh(tmp_path, "big", raw, live, create=True) is None and not dba.dba_path(tmp_path, "big").exists()
    live[:15] = False  # 25 valid rows: under the limit
    assert dba.refresh(tmp_path, "big", raw, live, create=True, whiten=None).mode == "full"
    live[:15] = True
    assert dba.refresh(tmp_path, "big", raw, live, create=False).mode == "removed"
    assert not dba.dba_path(tmp_path, "big").exists()
