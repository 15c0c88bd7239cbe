"""app.service.library: incremental builds, add, delete, count, rename and drop, each durable and atomic.

Generated folders in tmp_path and the model-free FakeEmbedder; the faiss index is a small IVF (every
list probed, so search is exact and every expectation below is exact too)."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from app.config import Config
from app.core.feature_table import TABLE_FORMAT
from app.errors import (
    CollectionBusyError,
    CollectionExistsError,
    OperationCancelled,
    StorageError,
    UnknownItemError,
)
from app.index.faiss_store import manifest_path
from app.service.build import BuildSpec, build_collection
from app.service.commit import collection_lock, read_state
from app.service.library import (
    add_paths,
    count_items,
    delete_items,
    drop_collection,
    index_folder,
    rename_collection,
    update_collection,
)
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image, temp_files

SPEC = dict(kind="folder", name="pics", factory="IVF4,Flat", nprobe=4)


@pytest.fixture
def built(tmp_path):
    """A built 24-image folder collection ``pics``: (config, photos folder, the build's embedder)."""
    root = tmp_path / "photos"
    make_image_folder(root, per_class=6, seed=3)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    fake = FakeEmbedder()
    result = build_collection(config, BuildSpec(data=root, **SPEC), embedder=fake, progress_bar=False)
    assert result.changes.full_build and result.changes.line() == "added 24, changed 0, removed 0, unchanged 0"
    return config, root, fake


def rebuild(config, root, fake=None):
    return build_collection(config, BuildSpec(data=root, **SPEC), embedder=fake or FakeEmbedder(), progress_bar=False)


def new_picture(path, variant):
    synthetic_image(variant % 4, 100 + variant, seed=11).save(path, quality=90)


def ids_by_path(config, name="pics") -> dict[str, int]:
    return read_state(config, name).table.live_paths()


def search_ids(config, name, ids, k=3):
    service = SearchService(config, embedder=FakeEmbedder())
    return {i: [h.id for h in service.search_item(name, i, k=k).hits] for i in ids}


def test_a_rerun_reports_3_added_1_changed_2_removed_and_counts_right(built):
    config, root, _ = built
    assert count_items(config, "pics") == 24
    before = ids_by_path(config)
    for v in range(3):
        new_picture(root / "squares" / f"new_{v}.jpg", v)
    (root / "circles" / "img_00.jpg").unlink()
    (root / "stripes" / "img_05.png").unlink()
    new_picture(root / "checks" / "img_01.jpg", 7)  # same name, other picture

    fake = FakeEmbedder()
    result = rebuild(config, root, fake)
    summary = result.changes
    assert summary.line() == "added 3, changed 1, removed 2, unchanged 21"
    assert fake.rows == 4  # only the new and the changed files went through the model
    assert summary.count == count_items(config, "pics") == 25 == result.manifest.count
    after = ids_by_path(config)
    kept = set(before) - {"circles/img_00.jpg", "stripes/img_05.png", "checks/img_01.jpg"}
    assert all(after[p] == before[p] for p in kept)  # ids are stable
    assert after["checks/img_01.jpg"] not in before.values()  # the new version has a new id
    assert sorted(summary.removed_ids) == sorted(before[p] for p in ("circles/img_00.jpg", "stripes/img_05.png",
                                                                     "checks/img_01.jpg"))
    hits = search_ids(config, "pics", sorted(after.values()))
    assert all(found[0] == i for i, found in hits.items())  # each item finds itself under its own id
    assert not set(summary.removed_ids) & {i for found in hits.values() for i in found}
    service = SearchService(config, embedder=FakeEmbedder())
    with pytest.raises(UnknownItemError, match="deleted"):
        service.search_item("pics", before["circles/img_00.jpg"])


def test_a_no_change_rerun_reads_no_image_and_writes_nothing(built, monkeypatch):
    config, root, _ = built
    mpath = manifest_path(config.indexes_dir, "pics")
    stamp = mpath.stat().st_mtime_ns
    import app.core.scan as scan

    read: list = []
    real = scan.file_stamp
    monkeypatch.setattr("app.core.changes.file_stamp", lambda p: read.append(p) or real(p))
    fake = FakeEmbedder()
    result = build_collection(config, BuildSpec(data=root, **SPEC), embedder=fake, progress_bar=False)
    assert result.changes.line() == "added 0, changed 0, removed 0, unchanged 24"
    assert fake.rows == 0 and read == [] and mpath.stat().st_mtime_ns == stamp
    assert result.changes.index == "unchanged" and result.changes.generation == 0

    os.utime(root / "circles" / "img_01.jpg")  # touched, same bytes: hashed once, still unchanged
    result = rebuild(config, root)
    assert result.changes.line() == "added 0, changed 0, removed 0, unchanged 24" and len(read) == 1
    assert read_state(config, "pics").table.stamps[ids_by_path(config)["circles/img_01.jpg"]].mtime_ns == \
        (root / "circles" / "img_01.jpg").stat().st_mtime_ns


def test_add_files_and_folders_inside_and_outside_the_collection_folder(built, tmp_path):
    config, root, _ = built
    new_picture(root / "circles" / "inside.jpg", 1)
    elsewhere = tmp_path / "elsewhere"
    make_image_folder(elsewhere, classes=("boats",), per_class=2, seed=9)
    (elsewhere / "boats" / "IMG_1.jxl").write_bytes(b"\xff\x0a jxl")
    fake = FakeEmbedder()
    summary = add_paths(config, "pics", [root / "circles" / "inside.jpg", elsewhere, root / "squares"],
                        embedder=fake)
    assert summary.line() == "added 3, changed 0, removed 0, unchanged 6" and fake.rows == 3
    assert summary.count == 27 == count_items(config, "pics")
    paths = ids_by_path(config)
    outside = (elsewhere / "boats" / "img_00.jpg").as_posix()
    assert "circles/inside.jpg" in paths and outside in paths  # outside the folder: by absolute path
    assert any("IMG_1.jxl" in s["path"] and "unsupported format" in s["reason"] for s in summary.skipped)
    service = SearchService(config, embedder=FakeEmbedder())
    assert service.collection("pics").item_path(paths[outside]) == elsewhere / "boats" / "img_00.jpg"
    assert service.search_item("pics", paths[outside], k=1).hits[0].id == paths[outside]
    # a rescan of the folder keeps what was added from elsewhere, and notices when it is gone
    assert rebuild(config, root).changes.line() == "added 0, changed 0, removed 0, unchanged 27"
    (elsewhere / "boats" / "img_00.jpg").unlink()
    assert rebuild(config, root).changes.line() == "added 0, changed 0, removed 1, unchanged 26"


def test_delete_by_id_and_by_path_and_a_rescan_does_not_bring_them_back(built):
    config, root, _ = built
    paths = ids_by_path(config)
    summary = delete_items(config, "pics", ids=[paths["checks/img_00.jpg"]], paths=["stripes", root / "squares"
                                                                                      / "img_01.jpg"])
    assert summary.removed == 8 and summary.count == 16 == count_items(config, "pics")  # 1 + 6 stripes + 1
    assert (root / "stripes" / "img_00.jpg").is_file()  # the files stay
    with pytest.raises(UnknownItemError, match="nothing was deleted"):
        delete_items(config, "pics", ids=[paths["checks/img_02.png"], 999])
    assert count_items(config, "pics") == 16
    again = rebuild(config, root)
    assert again.changes.line() == "added 0, changed 0, removed 0, unchanged 16"
    assert sum("deleted from the collection" in s["reason"] for s in again.changes.skipped) == 8
    back = add_paths(config, "pics", [root / "stripes"], embedder=FakeEmbedder())
    assert back.added == 6 and back.reused == 6  # the same bytes: the stored vectors, no model run
    assert count_items(config, "pics") == 22


@pytest.mark.parametrize("failing", ["vectors", "table", "manifest"])
def test_a_crash_mid_change_leaves_the_previous_state_loadable(built, monkeypatch, failing):
    """A failure after each step of a change (rows appended to the vectors; the SQLite table's transaction
    committed; the manifest not replaced: a full disk): the old state loads and searches, no temp file is
    left, and running the change again completes it without embedding again."""
    import app.files.atomic as atomic
    import app.files.vector_file as vector_file
    import app.service.commit as commit

    config, root, _ = built
    before = read_state(config, "pics")
    new_picture(root / "circles" / "late.jpg", 2)
    (root / "checks" / "img_03.jpg").unlink()

    def after(real):
        def wrapped(*args, **kwargs):
            real(*args, **kwargs)
            raise StorageError("No space left on device (simulated after the step)")
        return wrapped

    if failing == "vectors":
        monkeypatch.setattr(vector_file, "append_rows", after(vector_file.append_rows))
    elif failing == "table":
        monkeypatch.setattr(commit, "write_change", after(commit.write_change))
    else:
        real_replace = atomic.os.replace

        def crash(src, dst):
            if str(dst).endswith(".manifest.json"):
                raise OSError(28, "No space left on device")
            return real_replace(src, dst)

        monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(StorageError, match="No space"):  # the typed error (app.files.atomic) the CLI prints
        rebuild(config, root)
    monkeypatch.undo()
    now = read_state(config, "pics")
    assert (now.manifest, now.table.paths, now.table.deleted) == (before.manifest, before.table.paths, set())
    assert np.array_equal(np.asarray(now.vectors), np.asarray(before.vectors))
    assert temp_files(config.indexes_dir) == temp_files(config.features_dir) == []
    assert search_ids(config, "pics", [3])[3][0] == 3
    fake = FakeEmbedder()
    assert rebuild(config, root, fake).changes.line() == "added 1, changed 0, removed 1, unchanged 23"
    assert fake.rows == 0  # the new file's vector was saved before the crash
    assert count_items(config, "pics") == 24
    after_state = read_state(config, "pics", full_check=True)  # every chunk of the vectors checked
    assert len(after_state.table) == 25 and after_state.table.deleted == {3}
    # written in place: the same files, one row longer, and no leftover of the failed change
    assert sorted(p.name for p in config.features_dir.iterdir()) == ["pics.dba.npz", "pics.npy", "pics.sqlite"]


def test_rename_keeps_ids_and_drop_removes_only_that_collections_files(built, tmp_path):
    config, root, _ = built
    other_root = tmp_path / "more"
    make_image_folder(other_root, per_class=2, seed=5)
    build_collection(config, BuildSpec(data=other_root, **{**SPEC, "name": "pics-2"}), embedder=FakeEmbedder(),
                     progress_bar=False)
    delete_items(config, "pics", ids=[0])
    before = ids_by_path(config)
    cache = config.features_dir / "pics.dedup.npz"  # a part kept beside the vectors (the duplicate finder's)
    cache.write_bytes(b"cache")
    with pytest.raises(CollectionExistsError):
        rename_collection(config, "pics", "pics-2")
    renamed = rename_collection(config, "pics", "holiday")
    assert (renamed.count, renamed.new) == (23, "holiday") and not manifest_path(config.indexes_dir, "pics").exists()
    assert ids_by_path(config, "holiday") == before
    assert search_ids(config, "holiday", [5])[5][0] == 5
    assert not cache.exists() and (config.features_dir / "holiday.dedup.npz").read_bytes() == b"cache"
    dropped = drop_collection(config, "holiday")
    names = sorted(os.path.basename(p) for p in dropped.removed)
    assert names == ["holiday.dba.npz", "holiday.dedup.npz", "holiday.faiss", "holiday.manifest.json",
                     "holiday.npy", "holiday.sqlite"]
    assert count_items(config, "pics-2") == 8 and (root / "circles" / "img_01.jpg").is_file()
    assert sorted(p.name for p in config.features_dir.iterdir()) == ["pics-2.dba.npz", "pics-2.npy", "pics-2.sqlite"]
    with pytest.raises(Exception, match="no collection named"):
        drop_collection(config, "holiday")


def test_progress_cancel_and_resume(built):
    config, root, _ = built
    for v in range(6):
        new_picture(root / "checks" / f"burst_{v}.jpg", v)
    seen, state = [], {"batches": 0}

    def progress(p):
        seen.append(p)
        state["batches"] += p.phase == "embedding" and p.done > 0

    config = config.with_(batch_size=2)
    with pytest.raises(OperationCancelled):
        index_folder(config, "pics", root, embedder=FakeEmbedder(), progress=progress,
                     cancel=lambda: state["batches"] >= 1)
    assert count_items(config, "pics") == 24  # nothing committed
    phases = [p.phase for p in seen]
    assert phases.index("scanning") < phases.index("embedding")
    emb = [p for p in seen if p.phase == "embedding" and p.done]
    assert emb[0].total == 6 and emb[0].images_per_s > 0 and emb[0].eta_s is not None
    fake = FakeEmbedder()
    summary = update_collection(config, "pics", embedder=fake)
    assert summary.added == 6 and fake.rows == 6  # nothing was saved: the cancel came inside the first chunk
    assert summary.count == 30


def test_one_change_at_a_time(built):
    config, root, _ = built
    with collection_lock(config, "pics"):
        with pytest.raises(CollectionBusyError):
            delete_items(config, "pics", ids=[1])
    entered = threading.Event()

    def hold():
        with collection_lock(config, "pics"):
            entered.set()
            time.sleep(0.5)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(5)
    with pytest.raises(CollectionBusyError, match="collection is locked by process"):
        rebuild(config, root)
    t.join()


def test_a_format_1_table_migrates_without_embedding_again(built):
    config, root, _ = built
    obj = read_state(config, "pics").table.to_json()  # the table as a JSON document of that time
    table_path = config.features_dir / "pics.json"
    obj["format"] = 1
    for key in ("rows", "excluded"):
        obj.pop(key)
    obj["items"] = [{k: v for k, v in it.items() if k in ("id", "path", "label", "labels")} for it in obj["items"]]
    table_path.write_text(json.dumps(obj))
    mpath = config.indexes_dir / "pics.manifest.json"  # as a build of that time wrote it: no checksums
    manifest = json.loads(mpath.read_text())
    for key in ("features_sha256", "table_sha256", "features_chunks", "index_rows", "index_count"):
        manifest.pop(key, None)
    manifest["table"] = table_path.name
    mpath.write_text(json.dumps(manifest))
    assert read_state(config, "pics").table.stamps[0] is None
    fake = FakeEmbedder()
    assert rebuild(config, root, fake).changes.line() == "added 0, changed 0, removed 0, unchanged 24"
    assert fake.rows == 0
    state = read_state(config, "pics")
    assert all(s is not None and s.hash for s in state.table.stamps)
    assert state.manifest.table == "pics.g1.sqlite" and not table_path.exists()  # SQLite from now on
    assert state.table.to_json()["format"] == TABLE_FORMAT


def test_a_running_service_sees_a_change_made_elsewhere(built):
    config, root, _ = built
    service = SearchService(config, embedder=FakeEmbedder())
    assert len(service.collection("pics")) == 24
    delete_items(config, "pics", ids=[2, 3])
    assert len(service.collection("pics")) == 22
    assert {h.id for h in service.examples("pics", n=22)} == set(range(24)) - {2, 3}


def test_evaluate_and_retune_a_collection_with_deletions(small_collection, tmp_path):
    """Tombstoned rows are not items: evaluation counts and queries the valid ones, a retune keeps every id."""
    import shutil

    from app.index.faiss_store import load_index
    from app.metrics.evaluate import evaluate_collection, retune_collection

    config, _, _ = small_collection
    copy = config.with_(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features")
    shutil.copytree(config.indexes_dir, copy.indexes_dir)
    shutil.copytree(config.features_dir, copy.features_dir)
    delete_items(copy, "shapes", ids=[0, 7, 13])
    report = evaluate_collection(copy, "shapes")
    assert report["count"] == report["queries"] == 21 and report["ann_recall_at_5"] >= 0.9
    m = retune_collection(copy, "shapes")
    assert m.count == 21 and m.generation == 2 and m.trained_count == 21
    index, _ = load_index(copy.indexes_dir, "shapes")
    assert sorted(p.name for p in copy.indexes_dir.glob("shapes*.faiss")) == ["shapes.g2.faiss"]
    service = SearchService(copy)
    for i in (1, 8, 23):
        assert service.search_item("shapes", i, k=1).hits[0].id == i
    assert index.ntotal >= 21
