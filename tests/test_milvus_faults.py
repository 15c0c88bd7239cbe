"""Milvus failing under the app (issue 12): a clear error, local collections keep working, recovery.

Milvus Lite runs inside the test process (there is no server process to kill), so a server that
dies mid-search is simulated at the client boundary: pymilvus's ``MilvusClient.search`` raises what
it raises for a lost connection. An unreachable server is a real one: a free loopback port.
"""

from __future__ import annotations

import pytest

pytest.importorskip("milvus_lite")

from app.config import Config  # noqa: E402
from app.errors import BackendUnavailableError  # noqa: E402
from app.index.milvus_store import sync  # noqa: E402
from app.service.build import BuildSpec, build_collection  # noqa: E402
from app.service.search import SearchService  # noqa: E402
from app.web.handlers import Handlers  # noqa: E402
from tests.fakes import FakeEmbedder, free_port  # noqa: E402
from tests.helpers import make_image_folder  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def two(tmp_path):
    """``pushed`` (its vectors in Milvus Lite) and ``local`` (never synced), both built locally."""
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=tmp_path / "c",
                    workers=0)
    for name, seed in (("pushed", 1), ("local", 2)):
        make_image_folder(tmp_path / name, classes=("circles", "squares"), per_class=4, seed=seed)
        build_collection(config, BuildSpec(kind="folder", data=tmp_path / name, name=name, factory="Flat"),
                         embedder=FakeEmbedder(), progress_bar=False)
    uri = str(tmp_path / "milvus.db")
    sync(config.features_dir, "pushed", uri)
    return config.with_(backend="milvus", milvus_uri=uri, milvus_timeout_s=2.0), tmp_path


def test_a_server_lost_mid_search_is_a_clear_error_and_the_app_recovers(two, monkeypatch):
    import pymilvus
    from pymilvus.exceptions import MilvusException

    config, tmp_path = two
    service = SearchService(config, embedder=FakeEmbedder())
    infos = {i.name: i for i in service.collections()}
    assert infos["pushed"].ready and infos["local"].ready
    assert type(service.collection("pushed").store).__name__ == "MilvusIndex"
    assert type(service.collection("local").store).__name__ == "FaissStore"  # never synced: its local index
    assert service.search_item("pushed", 2, k=3).hits[0].id == 2

    def lost(*args, **kwargs):
        raise MilvusException(code=2, message="<_MultiThreadedRendezvous: StatusCode.UNAVAILABLE, Connection refused>")

    monkeypatch.setattr(pymilvus.MilvusClient, "search", lost)
    with pytest.raises(BackendUnavailableError) as info:
        service.search_item("pushed", 2, k=3)
    text = info.value.user_message()
    assert "Milvus at" in text and "search" in text and "again" in text.lower() and "\n" not in text
    h = Handlers(service, config, work_dir=tmp_path / "q")
    s = h.collections.initial_session("pushed")
    view = h.queries.on_example(0, "pushed", 3, s)
    assert view.message.startswith("⚠️") and "Milvus" in view.message and "Traceback" not in view.message
    assert service.search_item("local", 1, k=3).hits[0].id == 1  # local collections keep working

    monkeypatch.undo()  # the server is back: the next search connects again
    assert service.search_item("pushed", 2, k=3).hits[0].id == 2
    assert len(h.queries.on_example(0, "pushed", 3, s).results) == 3


def test_an_unreachable_server_is_reported_with_retry_advice_and_retried(two):
    config, _ = two
    down = config.with_(milvus_uri=f"http://127.0.0.1:{free_port()}", milvus_timeout_s=1.0)
    service = SearchService(down, embedder=FakeEmbedder())
    info = {i.name: i for i in service.collections()}["pushed"]
    assert not info.ready and "Milvus" in info.reason
    with pytest.raises(BackendUnavailableError) as err:
        service.collection("pushed")
    assert "again" in err.value.user_message().lower()
    # nothing failed is cached: with the server answering (here: the Lite file), the same catalogue loads it
    service.catalogue.config = config
    assert service.search_item("pushed", 1, k=2).hits[0].id == 1
