"""Object vectors in Milvus (app/service/object_mirror.py), with Milvus Lite embedded in tmp_path: the same
object hits as the local search, kept through a delete, carried by rename and drop, a stale copy refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from app.core.detect import Detector  # noqa: E402
from app.errors import IndexMismatchError  # noqa: E402
from app.index.milvus_store import MilvusIndex, sync  # noqa: E402
from app.service.object_mirror import mirror_objects, objects_name  # noqa: E402
from app.service.objects import build_objects, load_objects, save_objects  # noqa: E402
from app.service.search import SearchService  # noqa: E402
from tests.detector_fakes import install_fake  # noqa: E402
from tests.test_objects_web import OBJECTS  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture()
def milvus_objects(small_collection, embedder, tmp_path):
    config, _, _ = small_collection
    shutil.copytree(config.indexes_dir, tmp_path / "indexes")
    shutil.copytree(config.features_dir, tmp_path / "features")
    install_fake(tmp_path / "cache", OBJECTS)
    local = config.with_(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features",
                         cache_dir=tmp_path / "cache")
    build_objects(local, "shapes", embedder, Detector(local.cache_dir))
    milvus = local.with_(backend="milvus", milvus_uri=str(tmp_path / "milvus.db"))
    sync(local.features_dir, "shapes", milvus.milvus_uri, progress_bar=False)
    assert mirror_objects(milvus, "shapes") == {"count": 48, "uri": milvus.milvus_uri}
    return local, milvus


def _hits(service: SearchService, name: str, vector, k: int = 6):
    return [(h.id, h.label, h.box) for h in service.objects.search_vector(name, vector, k).hits]


def test_milvus_object_search_matches_the_local_one_and_follows_changes(milvus_objects, embedder):
    from app.service.library import delete_items, drop_collection, rename_collection

    local, milvus = milvus_objects
    store = load_objects(local, "shapes")
    queries = [np.asarray(store.vectors[i]) for i in (0, 7, 31)]
    via_milvus, via_faiss = SearchService(milvus, embedder=embedder), SearchService(local, embedder=embedder)
    for q in queries:
        assert _hits(via_milvus, "shapes", q) == _hits(via_faiss, "shapes", q)
    gone = int(store.item_ids[0])
    delete_items(milvus, "shapes", ids=[gone])  # the photo's objects go, locally and in Milvus
    assert MilvusIndex(milvus.milvus_uri, objects_name("shapes")).count() == 46
    assert all(h[0] != gone for h in _hits(via_milvus, "shapes", queries[0], 10))
    rename_collection(milvus, "shapes", "forms")
    assert MilvusIndex(milvus.milvus_uri, objects_name("forms")).count() == 46
    assert _hits(SearchService(milvus, embedder=embedder), "forms", queries[1]) == _hits(
        SearchService(milvus.with_(backend="faiss"), embedder=embedder), "forms", queries[1])
    dropped = drop_collection(milvus, "forms")
    assert "ris_forms__objects" in dropped.milvus


def test_a_stale_milvus_copy_of_the_objects_is_refused(milvus_objects, embedder):
    local, milvus = milvus_objects
    store = load_objects(local, "shapes")
    keep = np.arange(len(store)) % 2 == 0
    store.vectors, store.item_ids = np.asarray(store.vectors)[keep], store.item_ids[keep]
    store.boxes, store.scores = store.boxes[keep], store.scores[keep]
    store.labels = [lab for lab, k in zip(store.labels, keep, strict=True) if k]
    save_objects(local, store)  # changed behind Milvus's back
    with pytest.raises(IndexMismatchError, match="not the local ones"):
        SearchService(milvus, embedder=embedder).objects.search_vector("shapes", np.asarray(store.vectors[0]), 3)
