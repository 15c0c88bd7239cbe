"""Issue 12, a corrupted index or features file (one byte flipped, or cut short): the collection is refused
with a typed error that gives the rebuild command, and the other collections still load and search.

Both collections are built here (FakeEmbedder, seeded images) and opened the way the app opens them:
``SearchService.collections()`` (the menu) and ``search_item``/``search_new_image`` (a query).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.config import Config
from app.core.features import feature_paths
from app.errors import IndexMismatchError
from app.index.faiss_store import index_path, manifest_path
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder


@pytest.fixture
def two_collections(tmp_path):
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    for name, seed in (("holiday", 1), ("garden", 2)):
        data = tmp_path / name
        make_image_folder(data, classes=("circles", "squares"), per_class=4, seed=seed)
        build_collection(config, BuildSpec(kind="folder", data=data, name=name, factory="IVF2,Flat", nprobe=2),
                         embedder=FakeEmbedder(), progress_bar=False)
    return config, tmp_path


FILES = {
    "index": lambda config: index_path(config.indexes_dir, "holiday"),
    "vectors": lambda config: feature_paths(config.features_dir, "holiday")[0],
    "table": lambda config: feature_paths(config.features_dir, "holiday")[1],
}


def corrupt(path, how: str, seed: int = 12) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2 :]
    else:  # one byte, in the header or in the body
        pos = {"flip-header": 20, "flip-body": int(np.random.default_rng(seed).integers(len(data) // 2, len(data)))}[how]
        data[pos] ^= 0x01
    path.write_bytes(bytes(data))


CASES = [(which, how) for which in sorted(FILES) for how in ("flip-header", "flip-body", "truncate")
         if (which, how) != ("table", "flip-body")]  # a byte of a table row: test_a_flipped_table_row_is_caught


@pytest.mark.parametrize(("which", "how"), CASES)
def test_a_corrupted_file_is_refused_with_the_rebuild_command_and_others_still_load(two_collections, which, how):
    config, root = two_collections
    corrupt(FILES[which](config), how)
    service = SearchService(config, embedder=FakeEmbedder())

    infos = {info.name: info for info in service.collections()}
    broken, fine = infos["holiday"], infos["garden"]
    assert not broken.ready and broken.reason
    assert any(w in broken.reason for w in ("corrupted", "unreadable", "does not match", "cut short")), broken.reason
    command = f"python scripts/build_index.py --kind folder --data {root / 'holiday'} --name holiday"
    assert broken.build_command.startswith(command)

    with pytest.raises(IndexMismatchError) as info:
        service.search_item("holiday", 0, k=3)
    message = info.value.user_message()
    assert "holiday" in message and f"Rebuild it with: {command}" in message and "\n" not in message

    assert fine.ready and fine.size == 8  # the other collection is untouched
    hits = service.search_item("garden", 3, k=3).hits
    assert hits[0].id == 3 and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_the_manifest_records_a_checksum_per_chunk_of_the_vectors(two_collections):
    """The vectors' checksums are per chunk of rows (an append recomputes only the last one); the table's
    rows carry their own CRC (it changes in place, so no whole-file checksum)."""
    import hashlib

    config, _ = two_collections
    manifest = json.loads(manifest_path(config.indexes_dir, "holiday").read_text())
    npy = feature_paths(config.features_dir, "holiday")[0]
    rows = np.load(npy)
    assert manifest["features_chunks"] == [hashlib.blake2b(rows.astype("<f4").tobytes(), digest_size=8).hexdigest()]
    assert "table_sha256" not in manifest and "features_sha256" not in manifest


def test_a_flipped_table_row_is_caught_by_verify_and_when_the_row_is_read(two_collections, capsys):
    """A byte flipped inside a row of the SQLite table: ``python -m app.cli verify`` names the damage (exit 1),
    the other collection verifies ok, and a search that shows that row is refused, never wrong."""
    from app.cli.main import main

    config, _ = two_collections
    table = feature_paths(config.features_dir, "holiday")[1]
    data = bytearray(table.read_bytes())
    at = data.index(b"squares/img_02")  # the path of one row, as SQLite stores it
    data[at + 9] ^= 0x01
    table.write_bytes(bytes(data))
    args = ["--indexes", str(config.indexes_dir), "--features", str(config.features_dir)]
    assert main(["verify", *args]) == 1
    out = capsys.readouterr().out
    assert "holiday: " in out and "corrupted" in out and "garden: ok (8 images" in out
    with pytest.raises(IndexMismatchError, match="corrupted"):
        service = SearchService(config, embedder=FakeEmbedder())
        for item in range(8):
            service.search_item("holiday", item, k=8)
    assert main(["verify", "garden", *args]) == 0


def test_an_intact_copy_still_loads_after_a_corrupted_one_is_restored(two_collections):
    """The check is on content: putting the original bytes back makes the collection load again."""
    config, _ = two_collections
    npy = FILES["vectors"](config)
    original = npy.read_bytes()
    corrupt(npy, "flip-body")
    assert not {i.name: i for i in SearchService(config, embedder=FakeEmbedder()).collections()}["holiday"].ready
    npy.write_bytes(original)
    service = SearchService(config, embedder=FakeEmbedder())
    assert service.search_item("holiday", 5, k=1).hits[0].id == 5
