"""app.index.faiss_store: saving an index with its manifest, and refusing anything that does not match."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from app.core.manifest import Manifest
from app.errors import IndexMismatchError, IndexMissingError
from app.index.faiss_index import IndexConfig, build_index, search
from app.index.faiss_store import build_command, index_path, list_indexes, load_index, manifest_path, save_index
from tests.helpers import temp_files

MANIFEST_KEYS = {
    "model", "weights_id", "dim", "normalized", "metric", "factory", "nprobe", "count",
    "index_sha256", "dataset_root", "built_at", "versions",
}


def unit_vectors(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def shapes_copy(small_collection, tmp_path):
    """A private copy of the session's built index, safe to damage."""
    config, result, data = small_collection
    shutil.copytree(config.indexes_dir, tmp_path / "indexes")
    return tmp_path / "indexes", result.manifest


def rewrite_manifest(indexes, change) -> None:
    path = manifest_path(indexes, "shapes")
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


# -- what is saved -----------------------------------------------------------------------------


def test_saved_files_and_manifest_keys(small_collection, embedder):
    config, result, data = small_collection
    faiss_file = index_path(config.indexes_dir, "shapes")
    manifest = json.loads(manifest_path(config.indexes_dir, "shapes").read_text())
    assert faiss_file.is_file() and list_indexes(config.indexes_dir) == ["shapes"]
    assert MANIFEST_KEYS <= set(manifest), MANIFEST_KEYS - set(manifest)
    assert manifest == result.manifest
    assert "resnet50" in manifest["model"]
    assert manifest["weights_id"] == embedder.weights_id and "untrained" in manifest["weights_id"]
    assert manifest["dim"] == 2048 and manifest["normalized"] is True and manifest["metric"] == "l2"
    assert manifest["count"] == 24 and isinstance(manifest["nprobe"], int) and manifest["nprobe"] >= 1
    assert isinstance(manifest["factory"], str) and manifest["factory"]
    assert manifest["index_sha256"] == hashlib.sha256(faiss_file.read_bytes()).hexdigest()
    assert manifest["index_bytes"] == faiss_file.stat().st_size
    assert manifest["dataset_root"] == str(data.resolve())
    built = datetime.fromisoformat(manifest["built_at"])
    assert timedelta(0) <= datetime.now(timezone.utc) - built < timedelta(hours=6)
    assert {"python", "faiss-cpu", "numpy"} <= set(manifest["versions"])
    assert manifest["features_fingerprint"] and manifest["features_created"]

    index, loaded = load_index(config.indexes_dir, "shapes", weights_id=embedder.weights_id, dim=2048)
    assert loaded == manifest and index.ntotal == 24 and index.d == 2048


def test_round_trip_gives_the_same_results(tmp_path):
    x = unit_vectors(300)
    cfg = IndexConfig("IVF8,PQ8x4", nprobe=3)
    index = build_index(x, cfg)
    manifest = save_index(index, tmp_path, "rt", {"weights_id": "w", "factory": cfg.factory, "nprobe": cfg.nprobe})
    loaded, m2 = load_index(tmp_path, "rt", weights_id="w", dim=64)
    assert m2 == manifest
    import faiss

    assert faiss.extract_index_ivf(loaded).nprobe == 3  # search parameters are restored from the manifest
    s1, i1 = search(index, x[:20], 5)
    s2, i2 = search(loaded, x[:20], 5)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2)


def test_search_scores_are_cosines_and_k_is_clamped(tmp_path):
    x = unit_vectors(10)
    index = build_index(x, IndexConfig("Flat"))
    scores, ids = search(index, x[3], 50)
    assert ids.shape == (1, 10) and sorted(ids[0].tolist()) == list(range(10))
    assert ids[0, 0] == 3 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(scores[0], x[ids[0]] @ x[3], atol=1e-5)
    # an IVF probe with fewer vectors than k: missing slots are -1 with a -inf score
    ivf = build_index(unit_vectors(200), IndexConfig("IVF16,Flat", nprobe=1))
    scores, ids = search(ivf, unit_vectors(1, seed=9), 100)
    assert (ids < 0).any() and np.all(np.isneginf(scores[ids < 0]))


# -- what is refused ---------------------------------------------------------------------------


def test_flipped_byte_is_refused_by_checksum(shapes_copy, embedder):
    indexes, manifest = shapes_copy
    path = index_path(indexes, "shapes")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexMismatchError, match="sha256") as info:
        load_index(indexes, "shapes", weights_id=embedder.weights_id)
    assert "build_index.py" in info.value.hint and "--weights untrained" in info.value.hint


def test_truncated_index_is_refused(shapes_copy, embedder):
    indexes, _ = shapes_copy
    path = index_path(indexes, "shapes")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(IndexMismatchError, match="corrupted"):
        load_index(indexes, "shapes", weights_id=embedder.weights_id)


def test_other_weights_are_refused_naming_both_ids_and_the_rebuild(shapes_copy, embedder):
    indexes, manifest = shapes_copy
    with pytest.raises(IndexMismatchError) as info:
        load_index(indexes, "shapes", weights_id="resnet50/IMAGENET1K_V2/11ad3fa6")
    text = info.value.user_message()
    assert manifest["weights_id"] in text and "resnet50/IMAGENET1K_V2/11ad3fa6" in text
    assert "python scripts/build_index.py --kind folder" in text and "--name shapes" in text
    rewrite_manifest(indexes, lambda m: m.update(weights_id="resnet50/file-sha256-00ff00ff00ff00ff"))
    with pytest.raises(IndexMismatchError) as info:
        load_index(indexes, "shapes", weights_id=embedder.weights_id)
    assert "00ff00ff" in str(info.value) and embedder.weights_id in str(info.value)


def test_wrong_dimension_is_refused(shapes_copy, embedder):
    indexes, _ = shapes_copy
    with pytest.raises(IndexMismatchError, match="dimension"):
        load_index(indexes, "shapes", weights_id=embedder.weights_id, dim=512)
    rewrite_manifest(indexes, lambda m: m.update(dim=512))
    with pytest.raises(IndexMismatchError, match="dimension"):
        load_index(indexes, "shapes", weights_id=embedder.weights_id)  # the file says 2048


def test_wrong_count_is_refused(shapes_copy, embedder):
    indexes, _ = shapes_copy
    rewrite_manifest(indexes, lambda m: m.update(count=m["count"] + 1))
    with pytest.raises(IndexMismatchError, match="24 vectors"):
        load_index(indexes, "shapes", weights_id=embedder.weights_id)


def test_missing_or_unreadable_manifest(shapes_copy, embedder):
    indexes, manifest = shapes_copy
    mpath = manifest_path(indexes, "shapes")
    mpath.write_text("{truncated")
    with pytest.raises(IndexMismatchError, match="unreadable"):
        load_index(indexes, "shapes")
    good = manifest.to_json()
    mpath.write_text(json.dumps({"dim": 2048}))
    with pytest.raises(IndexMismatchError, match="lacks"):
        load_index(indexes, "shapes")
    for key, bad in (("dim", "2048"), ("count", -1), ("nprobe", None), ("weights_id", 7)):
        mpath.write_text(json.dumps({**good, key: bad}))
        with pytest.raises(IndexMismatchError, match=f"invalid {key}"):
            load_index(indexes, "shapes")
    mpath.write_text("[1, 2]")
    with pytest.raises(IndexMismatchError, match="not a JSON object"):
        load_index(indexes, "shapes")
    mpath.unlink()
    with pytest.raises(IndexMissingError) as info:
        load_index(indexes, "shapes", weights_id=embedder.weights_id)
    assert "python scripts/build_index.py" in info.value.hint
    with pytest.raises(IndexMissingError) as info:
        load_index(indexes, "caltech101")
    assert info.value.hint == (
        "Build it with: python scripts/build_index.py --kind caltech101 --data data/caltech101"
    )


def test_missing_index_file_with_a_manifest(shapes_copy, embedder):
    indexes, _ = shapes_copy
    index_path(indexes, "shapes").unlink()
    with pytest.raises(IndexMissingError, match="missing"):
        load_index(indexes, "shapes", weights_id=embedder.weights_id)


def test_rebuild_command_repeats_the_build_options():
    built = {"weights_id": "resnet50/IMAGENET1K_V2/11ad3fa6", "dim": 2048, "count": 120}
    manifest = Manifest(kind="caltech101", dataset_root="/data/caltech101", weights_arg="untrained",
                        limit=120, include=("BACKGROUND_Google",), **built)
    assert build_command("caltech101", manifest) == (
        "python scripts/build_index.py --kind caltech101 --data /data/caltech101 --weights untrained "
        "--limit 120 --include BACKGROUND_Google"
    )
    mine = Manifest(kind="folder", dataset_root="/p", weights_arg="imagenet", **built)
    assert build_command("mine", mine) == (
        "python scripts/build_index.py --kind folder --data /p --name mine"
    )


# -- atomic writes -----------------------------------------------------------------------------


@pytest.mark.parametrize("fail_at", ["replace", "fsync", "write"])
def test_failed_save_leaves_the_previous_index_intact(tmp_path, monkeypatch, fail_at):
    import app.files.atomic as atomic

    old = build_index(unit_vectors(50), IndexConfig("Flat"))
    save_index(old, tmp_path, "c", {"weights_id": "w", "factory": "Flat", "nprobe": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*args, **kwargs):
        raise OSError(5, f"simulated failure in {fail_at}")

    if fail_at == "write":  # the disk fills up halfway through the file
        real_fdopen = atomic.os.fdopen

        class HalfWriter:
            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                boom()

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.fh.__exit__(*exc)

        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(atomic.os, fail_at, boom)
    new = build_index(unit_vectors(80, seed=1), IndexConfig("Flat"))
    with pytest.raises(OSError, match="simulated"):
        save_index(new, tmp_path, "c", {"weights_id": "w", "factory": "Flat", "nprobe": 1})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing changed, no temp file
    assert temp_files(tmp_path) == []
    index, manifest = load_index(tmp_path, "c", weights_id="w")
    assert index.ntotal == 50 == manifest["count"]
