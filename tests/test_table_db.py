"""Issue 21: the SQLite feature table (app/core/table_db.py), the append-only vectors file
(app/files/vector_file.py) and the index file that lags a few rows behind (app/service/commit.py):
a change writes only what changed; startup reads only what it needs; the JSON tables of earlier
versions migrate (a committed fixture made by the app before this table existed)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.config import Config
from app.core import table_db
from app.core.feature_table import FeatureTable, read_table
from app.core.scan import FileStamp
from app.errors import IndexMismatchError
from app.files import vector_file
from app.service.build import BuildSpec, build_collection
from app.service.commit import INDEX_PENDING_MIN, read_state
from app.service.library import add_paths, delete_items
from app.service.search import SearchService
from app.service.verify import verify_collection
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image

FIXTURE = Path(__file__).parent / "data" / "json_table_collection"


def table_of(n: int, *, deleted=(), excluded=()) -> FeatureTable:
    return FeatureTable(name="t", kind="folder", dataset_root="/d", image_root="/d", weights_id="w", dim=4,
                        paths=[f"a/{i}.jpg" for i in range(n)], labels=[("a",)] * n,
                        stamps=[FileStamp(i, i, f"h{i}") for i in range(n)], deleted=set(deleted),
                        excluded=list(excluded), fingerprint="f0", created="c0")


# -- the table -------------------------------------------------------------------------------------


def test_a_reader_sees_its_generation_whatever_a_later_change_wrote(tmp_path):
    path = tmp_path / "t.sqlite"
    table_db.create_table_db(path, table_of(5, excluded=["x.jpg"]), 0)
    g0 = read_table(path, 0, lazy=False)
    changed = FeatureTable(**{**g0.__dict__, "paths": g0.paths + ["a/new.jpg"], "labels": g0.labels + [("b",)],
                              "stamps": g0.stamps + [None], "meta": g0.meta + [None], "deleted": {1},
                              "excluded": ["y.jpg"], "fingerprint": "f1"})
    assert table_db.write_change(path, changed, 1) == {"inserted": 1, "deleted": 1, "updated": 0}
    old, new = read_table(path, 0, lazy=False), read_table(path, 1, lazy=False)  # the manifest says which
    assert (len(old), old.deleted, old.excluded, old.fingerprint) == (5, set(), ["x.jpg"], "f0")
    assert (len(new), new.deleted, new.excluded, new.fingerprint) == (6, {1}, ["y.jpg"], "f1")
    assert new.paths[5] == "a/new.jpg" and new.labels[5] == ("b",) and new.stamps[5] is None
    # generation 1 never reached its manifest: the next change from generation 0 undoes it first
    again = FeatureTable(**{**old.__dict__, "deleted": {2}, "fingerprint": "f2"})
    table_db.write_change(path, again, 1)
    redo = read_table(path, 1, lazy=False)
    assert (len(redo), redo.deleted, redo.excluded, redo.fingerprint) == (5, {2}, ["x.jpg"], "f2")
    with pytest.raises(ValueError, match="cannot come back"):
        table_db.write_change(path, FeatureTable(**{**redo.__dict__, "deleted": set()}), 2)


def test_a_lazy_table_reads_rows_only_when_asked(tmp_path):
    path = tmp_path / "t.sqlite"
    table_db.create_table_db(path, table_of(3000, deleted=[7]), 0)
    lazy = read_table(path, 0, lazy=True)
    assert lazy.live_count == 2999 and not lazy.live_mask()[7] and len(lazy.paths) == 3000
    assert lazy.paths._cache is None and lazy.paths[2999] == "a/2999.jpg" and lazy.paths._cache is None
    assert lazy.stamps[12] == FileStamp(12, 12, "h12") and lazy.labels[-1] == ("a",)
    assert list(lazy.paths)[:2] == ["a/0.jpg", "a/1.jpg"] and lazy.paths._cache is not None  # walked: read once


def test_the_schema_version_is_checked(tmp_path):
    import sqlite3

    path = tmp_path / "t.sqlite"
    table_db.create_table_db(path, table_of(2), 0)
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(IndexMismatchError, match="schema version 99"):
        read_table(path, 0, lazy=True)


# -- the vectors file ------------------------------------------------------------------------------


def test_rows_are_appended_in_place_and_a_crashed_tail_is_cut_off(tmp_path):
    path = tmp_path / "v.npy"
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((n, 4)).astype(np.float32) for n in (3000, 5, 7))
    vector_file.write_vectors(path, a)
    offset = vector_file.read_header(path).offset
    assert vector_file.append_rows(path, 3000, b)
    assert np.array_equal(np.load(path), np.vstack([a, b]))  # still an .npy numpy reads
    with open(path, "ab") as fh:  # a change that died after writing half a row: never committed
        fh.write(b"\x01" * 10)
    assert np.array_equal(vector_file.open_rows(path, 3005, 4), np.vstack([a, b]))  # readers ignore the tail
    assert vector_file.append_rows(path, 3005, c)
    assert np.array_equal(np.load(path), np.vstack([a, b, c])) and vector_file.read_header(path).offset == offset
    digests = vector_file.chunk_digests(path, 3012, 4)
    assert len(digests) == 3 and vector_file.chunk_digests(path, 3012, 4, digests[:2], 3005) == digests


def test_a_legacy_file_without_header_room_is_rewritten_whole(tmp_path):
    path = tmp_path / "v.npy"
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (999, 4)})
    exact = vector_file._header_bytes(999, 4, 10 + len(text) + 1)  # a header with no spare byte
    path.write_bytes(exact + np.zeros((999, 4), np.float32).tobytes())
    assert vector_file.open_rows(path, 999, 4).shape == (999, 4) and np.load(path).shape == (999, 4)
    assert not vector_file.append_rows(path, 999, np.ones((1, 4), np.float32))
    assert np.load(path).shape == (999, 4)


def test_the_cheap_check_catches_a_cut_file_and_verify_catches_any_flipped_chunk(tmp_path):
    path = tmp_path / "v.npy"
    x = np.random.default_rng(1).standard_normal((10 * vector_file.CHUNK_ROWS, 4)).astype(np.float32)
    vector_file.write_vectors(path, x)
    digests = vector_file.chunk_digests(path, len(x), 4)
    offset = vector_file.read_header(path).offset
    data = bytearray(path.read_bytes())
    data[offset + 16 * 4 * vector_file.CHUNK_ROWS + 5] ^= 1  # a byte of chunk 4 (rows of 16 bytes)
    path.write_bytes(bytes(data))
    import random

    vector_file.check_vectors(path, len(x), 4, digests, rng=random.Random(0))  # chunks 6, 9 and the last (9): not 4
    with pytest.raises(vector_file.VectorsFileError, match="rows 4096-5119"):
        vector_file.check_vectors(path, len(x), 4, digests, full=True)
    path.write_bytes(bytes(data[: len(data) - 100]))
    with pytest.raises(vector_file.VectorsFileError, match="cut short"):
        vector_file.check_vectors(path, len(x), 4, digests)


# -- a collection ----------------------------------------------------------------------------------


@pytest.fixture
def built(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root, per_class=6, seed=4)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=root, name="pics", factory="IVF2,Flat", nprobe=2),
                     embedder=FakeEmbedder(), progress_bar=False)
    return config, tmp_path


def new_files(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for v in range(n):
        out.append(folder / f"n{seed}_{v}.png")
        synthetic_image(v % 4, 100 + v, seed=seed).save(out[-1])
    return out


def test_an_add_writes_only_what_changed(built):
    """The vectors' committed bytes and the index file stay as they were (the index lags a few rows, applied
    when it loads); the table changes in place; search finds the new rows at once."""
    config, tmp = built
    before = read_state(config, "pics")
    npy = config.features_dir / before.manifest.features
    old_bytes = npy.read_bytes()[vector_file.read_header(npy).offset:]
    index_file = config.indexes_dir / before.manifest.index_file
    index_sha = hashlib.sha256(index_file.read_bytes()).hexdigest()
    added = add_paths(config, "pics", new_files(tmp / "new", 3, 1), embedder=FakeEmbedder())
    after = read_state(config, "pics")
    assert after.manifest.features == before.manifest.features and after.manifest.table == before.manifest.table
    assert npy.read_bytes()[vector_file.read_header(npy).offset:][: len(old_bytes)] == old_bytes
    assert after.manifest.index_file == before.manifest.index_file  # not rewritten...
    assert hashlib.sha256(index_file.read_bytes()).hexdigest() == index_sha
    assert (after.manifest.index_rows, after.manifest.index_count, after.manifest.count) == (24, 24, 27)
    service = SearchService(config, embedder=FakeEmbedder())
    for i in added.added_ids:  # ...yet the new rows are found
        assert service.search_item("pics", i, k=1).hits[0].id == i
    delete_items(config, "pics", ids=[0, 25])
    assert SearchService(config, embedder=FakeEmbedder()).collection("pics").store.count() == 25
    assert verify_collection(config, "pics").ok


def test_the_index_file_is_written_again_once_it_lacks_enough_rows(built):
    config, tmp = built
    add_paths(config, "pics", new_files(tmp / "many", INDEX_PENDING_MIN + 1, 2), embedder=FakeEmbedder())
    m = read_state(config, "pics").manifest
    assert (m.index_rows, m.index_count, m.count) == (24 + INDEX_PENDING_MIN + 1, None, 24 + INDEX_PENDING_MIN + 1)


def test_a_json_table_collection_from_before_migrates_on_its_next_change(tmp_path):
    """The committed fixture (scripts/make_table_fixture.py, made by the app with the JSON table): it loads and
    searches as it is; its next change writes an SQLite table with the same ids, tombstone and exclusion."""
    shutil.copytree(FIXTURE, tmp_path / "c")
    config = Config(indexes_dir=tmp_path / "c" / "indexes", features_dir=tmp_path / "c" / "features", workers=0)
    before = read_state(config, "legacy")
    assert before.manifest.table == "legacy.g1.json" and before.table.deleted == {2} and len(before.table) == 16
    assert before.table.excluded == [before.table.paths[2]]
    service = SearchService(config, embedder=FakeEmbedder(dim=1280))
    assert service.search_item("legacy", 5, k=1).hits[0].id == 5
    delete_items(config, "legacy", ids=[7])
    after = read_state(config, "legacy", full_check=True)
    assert after.manifest.table.endswith(".sqlite") and after.manifest.features_chunks
    assert after.table.paths == before.table.paths and after.table.labels == before.table.labels
    assert after.table.stamps == before.table.stamps and after.table.meta == before.table.meta
    assert after.table.deleted == {2, 7} and after.table.excluded == [before.table.paths[2], before.table.paths[7]]
    assert sorted(p.name for p in config.features_dir.glob("legacy*")) == [
        "legacy.dba.npz", "legacy.g2.sqlite", "legacy.npy"]
    extra = tmp_path / "extra.png"
    synthetic_image(1, 7, seed=3).save(extra)
    added = add_paths(config, "legacy", [extra], embedder=FakeEmbedder(dim=1280))
    service = SearchService(config, embedder=FakeEmbedder(dim=1280))
    assert service.search_item("legacy", added.added_ids[0], k=1).hits[0].id == 16
    assert verify_collection(config, "legacy").ok
