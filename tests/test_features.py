"""app.core.features: resumable, atomic feature extraction and the feature store."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3

import numpy as np
import pytest

from app.core.datasets import load_dataset
from app.core.features import EmbedOptions, extract_features, feature_paths, load_features
from app.core.images import load_image
from app.core.models import get_model
from app.core.preprocess import preprocess
from app.core.table_db import TableReader
from app.errors import DatasetError, IndexMismatchError, StorageError
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, temp_files


class Killed(KeyboardInterrupt):
    """What a Ctrl-C (or the end of the process) looks like to the build loop."""


def extract(dataset, embedder, features_dir, name, **options):
    """:func:`extract_features` with its :class:`EmbedOptions` given as keywords."""
    return extract_features(dataset, embedder, features_dir, name, EmbedOptions(**options))


def kill_after(chunk_no: int):
    seen = []

    def on_chunk(c: int) -> None:
        seen.append(c)
        if c == chunk_no:
            raise Killed(f"simulated kill after chunk {c}")

    return on_chunk, seen


def recorder():
    seen: list[int] = []
    return seen.append, seen


def table_without_timestamp(features_dir, name) -> dict:
    obj = load_features(features_dir, name)[1].to_json()  # every row, as the table holds it
    obj.pop("created")
    return obj


def outputs(features_dir, name) -> tuple[bytes, dict]:
    return feature_paths(features_dir, name)[0].read_bytes(), table_without_timestamp(features_dir, name)


@pytest.fixture(scope="module")
def folder6(tmp_path_factory):
    root = tmp_path_factory.mktemp("f6") / "pics"
    make_image_folder(root, classes=("circles", "stripes"), per_class=3, seed=4)
    return root


@pytest.fixture(scope="module")
def folder10(tmp_path_factory):
    root = tmp_path_factory.mktemp("f10") / "pics"
    make_image_folder(root, classes=("circles", "stripes", "squares"), per_class=4, seed=5)
    return root


def test_resume_after_kill_gives_identical_output(tmp_path, folder6, embedder):
    ds = load_dataset("folder", folder6)
    assert len(ds.items) == 6
    kw = dict(batch_size=2, workers=0, chunk_size=2, progress_bar=False)

    on_chunk, ref_chunks = recorder()
    ref_vectors, ref_table, ref_stats = extract(ds, embedder, tmp_path / "ref", "c", on_chunk=on_chunk, **kw)
    assert ref_chunks == [0, 1, 2] and ref_stats["resumed_rows"] == 0 and len(ref_table) == 6

    out = tmp_path / "out"
    kill, seen = kill_after(0)
    with pytest.raises(Killed):
        extract(ds, embedder, out, "c", on_chunk=kill, **kw)
    assert seen == [0]
    assert sorted(p.name for p in (out / "c.parts").iterdir()) == ["chunk-000000.npz", "state.json"]
    assert not feature_paths(out, "c")[0].exists() and not feature_paths(out, "c")[1].exists()

    on_chunk, resumed_chunks = recorder()
    vectors, table, stats = extract(ds, embedder, out, "c", on_chunk=on_chunk, **kw)
    assert resumed_chunks == [1, 2]  # chunk 0 was not embedded again
    assert stats["resumed_rows"] == 2 and stats["embedded"] == 6
    assert outputs(out, "c") == outputs(tmp_path / "ref", "c")  # bit for bit
    assert np.array_equal(vectors, ref_vectors)
    assert table.paths == ref_table.paths == [it.path for it in ds.items]  # no duplicated or missing rows
    assert not (out / "c.parts").exists() and temp_files(out) == []


def test_resume_with_worker_processes_and_a_kill_in_the_middle(tmp_path, folder10):
    ds = load_dataset("folder", folder10)
    kw = dict(batch_size=2, chunk_size=4, progress_bar=False)
    ref_vectors, ref_table, _ = extract(ds, FakeEmbedder(), tmp_path / "ref", "c", workers=0, **kw)

    fake = FakeEmbedder()
    kill, _ = kill_after(1)
    with pytest.raises(Killed):
        extract(ds, fake, tmp_path / "out", "c", workers=2, on_chunk=kill, **kw)
    assert fake.rows == 8
    # a temp file left by a write that was cut short is ignored, and cleaned up with the parts
    (tmp_path / "out" / "c.parts" / ".chunk-000002.npz.abc123.tmp").write_bytes(b"half a chunk")
    fake = FakeEmbedder()
    vectors, table, stats = extract(ds, fake, tmp_path / "out", "c", workers=2, **kw)
    assert fake.rows == 4 and stats["resumed_rows"] == 8
    assert np.array_equal(vectors, ref_vectors) and table.paths == ref_table.paths
    assert outputs(tmp_path / "out", "c") == outputs(tmp_path / "ref", "c")
    assert temp_files(tmp_path) == []


def test_damaged_chunk_is_recomputed_not_trusted(tmp_path, folder10):
    ds = load_dataset("folder", folder10)
    kw = dict(batch_size=2, workers=0, chunk_size=4, progress_bar=False)
    ref_vectors, _, _ = extract(ds, FakeEmbedder(), tmp_path / "ref", "c", **kw)
    kill, _ = kill_after(1)
    with pytest.raises(Killed):
        extract(ds, FakeEmbedder(), tmp_path / "out", "c", on_chunk=kill, **kw)
    chunk = tmp_path / "out" / "c.parts" / "chunk-000001.npz"
    chunk.write_bytes(chunk.read_bytes()[:100])
    fake = FakeEmbedder()
    vectors, _, stats = extract(ds, fake, tmp_path / "out", "c", **kw)
    assert stats["resumed_rows"] == 4 and fake.rows == 8
    assert np.array_equal(vectors, ref_vectors)


def test_unreadable_files_are_skipped_listed_and_counted(tmp_path):
    root = tmp_path / "pics"
    good = make_image_folder(root, classes=("a", "b"), per_class=2)
    (root / "a" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "truncated.jpg").write_bytes(good[0].read_bytes()[:400])
    (root / "b" / "notes.jpg").write_text("a .txt renamed .jpg")
    ds = load_dataset("folder", root)
    assert len(ds.items) == 7  # the listing already leaves the empty file out, and says so
    assert [(s.path, s.reason) for s in ds.skipped] == [("a/empty.png", "empty file (0 bytes)")]

    fake = FakeEmbedder()
    vectors, table, stats = extract(ds, fake, tmp_path / "features", "c", batch_size=3, workers=0,
                                             chunk_size=3, progress_bar=False)
    bad = {"a/corrupt.jpg", "a/empty.png", "b/truncated.jpg", "b/notes.jpg"}
    assert stats["skipped"] == 4 and stats["embedded"] == 4 and stats["images"] == 7
    assert {s["path"] for s in table.skipped} == bad
    assert all(s["reason"] and "\n" not in s["reason"] for s in table.skipped)
    assert "empty" in next(s["reason"] for s in table.skipped if s["path"] == "a/empty.png")
    assert sorted(table.paths) == sorted(p.relative_to(root).as_posix() for p in good)
    # row i is the vector of table.paths[i]
    for i, rel in enumerate(table.paths):
        expected = FakeEmbedder().embed_arrays(preprocess(load_image(root / rel, draft_size=232), get_model("resnet50").preprocessing)[None])[0]
        assert np.allclose(vectors[i], expected, atol=1e-6)
    assert table.labels == [(p.split("/")[0],) for p in table.paths]

    stored, stored_table = load_features(tmp_path / "features", "c")
    assert np.array_equal(stored, vectors) and stored_table.skipped == table.skipped
    saved = TableReader(feature_paths(tmp_path / "features", "c")[1], 0).head  # what the SQLite table records
    assert saved["count"] == 4 and len(saved["skipped"]) == 4 and saved["weights_id"] == "fake/v1"

    # the whole build completes too, and says what it skipped
    from app.config import Config
    from app.service.build import BuildSpec, build_collection

    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "built", workers=0)
    result = build_collection(config, BuildSpec(kind="folder", data=root, name="c", factory="Flat"),
                              embedder=FakeEmbedder(), progress_bar=False)
    assert result.manifest.count == 4 and result.manifest.skipped == 4 and result.stats["skipped"] == 4
    assert {s["path"] for s in result.skipped} == bad


def test_no_readable_image_at_all_is_an_error(tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="could be read"):
        extract(load_dataset("folder", root), FakeEmbedder(), tmp_path / "f", "c", workers=0, progress_bar=False)


@pytest.mark.parametrize("change", ["sample", "weights", "chunk_size", "image_root"])
def test_changed_sample_weights_or_source_invalidate_stale_parts(tmp_path, folder10, change):
    kw = dict(batch_size=2, workers=0, progress_bar=False)
    old_ds = load_dataset("folder", folder10, limit=8)
    kill, _ = kill_after(0)
    with pytest.raises(Killed):
        extract(old_ds, FakeEmbedder("fake/A"), tmp_path / "out", "c", chunk_size=4, on_chunk=kill, **kw)
    assert (tmp_path / "out" / "c.parts" / "chunk-000000.npz").is_file()

    new_ds, new_embedder, chunk_size = old_ds, FakeEmbedder("fake/A"), 4
    if change == "sample":
        new_ds = load_dataset("folder", folder10, limit=9)
    elif change == "weights":
        new_embedder = FakeEmbedder("fake/B", salt=0.25)
    elif change == "chunk_size":
        chunk_size = 2
    else:  # the same file names in another folder, with other pictures
        other = tmp_path / "other"
        make_image_folder(other, classes=("circles", "stripes", "squares"), per_class=4, seed=99)
        new_ds = load_dataset("folder", other, limit=8)
        assert [it.path for it in new_ds.items] == [it.path for it in old_ds.items]

    vectors, table, stats = extract(new_ds, new_embedder, tmp_path / "out", "c", chunk_size=chunk_size, **kw)
    assert stats["resumed_rows"] == 0 and new_embedder.rows == len(new_ds.items)
    fresh_embedder = FakeEmbedder(new_embedder.weights_id, salt=new_embedder.salt)
    fresh, fresh_table, _ = extract(new_ds, fresh_embedder, tmp_path / "fresh", "c",
                                             chunk_size=chunk_size, **kw)
    assert np.array_equal(vectors, fresh) and table.paths == fresh_table.paths
    assert table.weights_id == new_embedder.weights_id


def test_load_features_refuses_a_table_that_does_not_match(tmp_path, folder6):
    ds = load_dataset("folder", folder6)
    extract(ds, FakeEmbedder(), tmp_path, "c", workers=0, progress_bar=False)
    npy, table_path = feature_paths(tmp_path, "c")
    with contextlib.closing(sqlite3.connect(table_path)) as con, con:
        con.execute("UPDATE items SET path = 'elsewhere.jpg' WHERE id = 0")  # changed behind the app's back
    load_features(tmp_path, "c")  # a change reads the rows as they are (loading checks a row when it reads it)
    with pytest.raises(IndexMismatchError, match="corrupted"):
        load_features(tmp_path, "c", full_check=True)  # verify and a build check every row
    with pytest.raises(IndexMismatchError, match="corrupted"):
        load_features(tmp_path, "c", lazy=True)[1].paths[0]
    with contextlib.closing(sqlite3.connect(table_path)) as con, con:
        con.execute("DELETE FROM items WHERE id = (SELECT max(id) FROM items)")  # a row less than it counts
    with pytest.raises(IndexMismatchError, match="has 5 rows, not 6"):
        load_features(tmp_path, "c")
    table_path.write_text("{not a table" + " " * 200)
    with pytest.raises(IndexMismatchError, match=r"corrupted \(its header\)"):
        load_features(tmp_path, "c")
    shutil.copy(npy, tmp_path / "x.npy")
    npy.unlink()
    with pytest.raises(IndexMismatchError, match="missing"):
        load_features(tmp_path, "c")


def test_final_files_are_written_atomically(tmp_path, folder6, monkeypatch):
    """A failure while writing the vectors leaves the previous file whole, no temp file, and the parts."""
    ds = load_dataset("folder", folder6)
    kw = dict(workers=0, progress_bar=False, chunk_size=3)
    ref_vectors, _, _ = extract(ds, FakeEmbedder(), tmp_path / "ref", "c", **kw)
    extract(ds, FakeEmbedder(salt=1.0), tmp_path, "c", **kw)
    old_npy = feature_paths(tmp_path, "c")[0].read_bytes()

    import app.files.atomic as atomic

    real_replace = atomic.os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".npy"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(StorageError, match="No space left on device"):
        extract(ds, FakeEmbedder(), tmp_path, "c", **kw)
    monkeypatch.undo()
    assert feature_paths(tmp_path, "c")[0].read_bytes() == old_npy  # the old file, whole
    assert temp_files(tmp_path) == []
    assert (tmp_path / "c.parts").is_dir()

    fake = FakeEmbedder()
    vectors, _, stats = extract(ds, fake, tmp_path, "c", **kw)
    assert fake.rows == 0 and stats["resumed_rows"] == 6  # finished from the saved parts
    assert np.array_equal(vectors, ref_vectors) and np.array_equal(load_features(tmp_path, "c")[0], ref_vectors)
    assert not (tmp_path / "c.parts").exists() and temp_files(tmp_path) == []
