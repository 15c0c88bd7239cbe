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


@pytest.mark.parametrize("how", ["flip-header", "flip-body", "truncate"])
@pytest.mark.parametrize("which", sorted(FILES))
def test_a_corrupted_file_is_refused_with_the_rebuild_command_and_others_still_load(two_collections, which, how):
    config, root = two_collections
    corrupt(FILES[which](config), how)
    service = SearchService(config, embedder=FakeEmbedder())

    infos = {info.name: info for info in service.collections()}
    broken, fine = infos["holiday"], infos["garden"]
    assert not broken.ready and broken.reason
    assert "corrupted" in broken.reason or "unreadable" in broken.reason or "does not match" in broken.reason
    command = f"python scripts/build_index.py --kind folder --data {root / 'holiday'} --name holiday"
    assert broken.build_command.startswith(command)

    with pytest.raises(IndexMismatchError) as info:
        service.search_item("holiday", 0, k=3)
    message = info.value.user_message()
    assert "holiday" in message and f"Rebuild it with: {command}" in message and "\n" not in message

    assert fine.ready and fine.size == 8  # the other collection is untouched
    hits = service.search_item("garden", 3, k=3).hits
    assert hits[0].id == 3 and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_the_manifest_records_the_checksums_of_both_features_files(two_collections):
    import hashlib

    config, _ = two_collections
    manifest = json.loads(manifest_path(config.indexes_dir, "holiday").read_text())
    npy, table = feature_paths(config.features_dir, "holiday")
    assert manifest["features_sha256"] == hashlib.sha256(npy.read_bytes()).hexdigest()
    assert manifest["table_sha256"] == hashlib.sha256(table.read_bytes()).hexdigest()


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
