"""The Milvus backend, with Milvus Lite running embedded in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from app.cli.main import main  # noqa: E402
from app.errors import IndexMismatchError, IndexMissingError  # noqa: E402
from app.index.milvus_store import MilvusIndex, sync  # noqa: E402
from app.service.search import SearchService  # noqa: E402


@pytest.fixture(scope="module")
def milvus_collection(small_collection, tmp_path_factory):
    config, result, data = small_collection
    uri = str(tmp_path_factory.mktemp("milvus") / "milvus.db")
    meta = sync(config.features_dir, "shapes", uri, progress_bar=False)
    return config.with_(backend="milvus", milvus_uri=uri), meta


@pytest.mark.slow
def test_sync_records_count_and_weights(milvus_collection, small_collection):
    config, meta = milvus_collection
    assert meta["count"] == small_collection[1].manifest["count"]
    index = MilvusIndex(config.milvus_uri, "shapes")
    assert (index.count(), index.dim) == (meta["count"], 2048)
    assert index.meta.weights_id == small_collection[1].manifest.weights_id


@pytest.mark.slow
def test_milvus_backend_matches_faiss_backend(milvus_collection, small_collection, embedder):
    config, _ = milvus_collection
    faiss_config = small_collection[0]
    milvus = SearchService(config, embedder=embedder)
    local = SearchService(faiss_config, embedder=embedder)
    n = len(local.collection("shapes"))
    for item in range(0, n, 5):
        # the raw nearest neighbours agree (αQE's second search takes each backend's own approximate
        # candidates: on these untrained vectors, at cosines 0.999x apart by 1e-4, their order may differ)
        got = milvus.search_item("shapes", item, k=5, rerank=False)
        want = local.search_item("shapes", item, k=5, rerank=False)
        assert got.hits[0].id == item  # the query itself comes back first
        assert [h.id for h in got.hits][:3] == [h.id for h in want.hits][:3]
        assert got.hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert milvus.search_item("shapes", item, k=5).hits[0].id == item  # re-ranked: still first
    query = small_collection[2] / "squares" / "img_01.jpg"
    assert milvus.search_new_image(query, "shapes", 3).hits[0].path == "squares/img_01.jpg"


@pytest.mark.slow
def test_missing_collection_and_weights_mismatch(milvus_collection, small_collection, embedder):
    config, _ = milvus_collection
    with pytest.raises(IndexMissingError) as missing:
        MilvusIndex(config.milvus_uri, "no-such-collection")
    assert "app.cli sync no-such-collection" in missing.value.user_message()

    class OtherWeights:
        weights_id = "resnet50/some-other-weights"
        dim = 2048
        notices: list[str] = []

    with pytest.raises(IndexMismatchError, match="some-other-weights"):
        SearchService(config, embedder=OtherWeights()).collection("shapes")


def test_cli_sync_missing_features_is_one_line_error(tmp_path, capsys):
    code = main(["sync", "nothing", "--uri", str(tmp_path / "m.db"), "--features", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


@pytest.mark.slow
def test_cli_and_app_take_the_milvus_backend(milvus_collection, small_collection, cli_env):
    """``--backend milvus --milvus-uri URI`` on the CLI gives the faiss backend's hits; the app's parser takes it."""
    import json
    import subprocess
    import sys

    from app.__main__ import make_parser
    from app.cli.common import config_from_args

    config, _ = milvus_collection
    uri = str(Path(config.milvus_uri).with_name("cli.db"))  # Milvus Lite: one process per database file
    sync_proc = subprocess.run([sys.executable, "-m", "app.cli", "sync", "shapes", "--uri", uri,
                                "--features", str(config.features_dir)],
                               env=cli_env, capture_output=True, text=True, timeout=300)
    assert sync_proc.returncode == 0, sync_proc.stderr
    query = small_collection[2] / "squares" / "img_01.jpg"
    common = ["--collection", "shapes", "--indexes", str(config.indexes_dir), "--features", str(config.features_dir),
              "--weights", "untrained", "--json", "-k", "3"]
    hits = {}
    for backend in (["--backend", "milvus", "--milvus-uri", uri], []):
        proc = subprocess.run([sys.executable, "-m", "app.cli", "search", str(query), *common, *backend],
                              env=cli_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        hits[bool(backend)] = [h["id"] for h in json.loads(proc.stdout)["hits"]]
    assert hits[True] == hits[False] and len(hits[True]) == 3
    app_config = config_from_args(make_parser().parse_args(["--backend", "milvus", "--milvus-uri", "m.db"]))
    assert (app_config.backend, app_config.milvus_uri) == ("milvus", "m.db")


@pytest.mark.slow
def test_build_with_the_milvus_backend_pushes_the_vectors(tmp_path, cli_env):
    """``scripts/build_index.py --backend milvus --milvus-uri URI`` builds locally, then syncs to Milvus."""
    import json
    import subprocess
    import sys

    from tests.helpers import make_image_folder

    make_image_folder(tmp_path / "pics", per_class=3)
    uri = str(tmp_path / "build.db")
    dirs = ["--indexes", str(tmp_path / "i"), "--features", str(tmp_path / "f")]
    proc = subprocess.run([sys.executable, "scripts/build_index.py", "--kind", "folder", "--data",
                           str(tmp_path / "pics"), "--name", "pics", "--weights", "untrained", "--factory", "Flat",
                           "--backend", "milvus", "--milvus-uri", uri, "--no-progress", "--json", *dirs],
                          cwd=Path(__file__).resolve().parent.parent, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stats"]["milvus"]["count"] == out["manifest"]["count"] == 12
    index = MilvusIndex(uri, "pics")
    assert index.count() == 12 and index.meta.weights_id == out["manifest"]["weights_id"]
    missing = subprocess.run([sys.executable, "scripts/build_index.py", "--kind", "folder", "--data",
                              str(tmp_path / "pics"), "--backend", "milvus", *dirs],
                             cwd=Path(__file__).resolve().parent.parent, env=cli_env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "--milvus-uri" in missing.stderr and "Traceback" not in missing.stderr


# -- management operations with the Milvus backend ------------------------------------------------


def _fake_config(tmp_path):
    from app.config import Config

    # cache_dir: no detector there, so a new folder collection gets no object vectors (tests/test_objects_milvus.py)
    return Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0,
                  backend="milvus", milvus_uri=str(tmp_path / "lib.db"), cache_dir=tmp_path / "cache")


def _consistent(config, name):
    """Milvus holds exactly the local table's valid ids, and its hits (ids, labels, paths) are exact search's
    over the local vectors."""
    from app.service.commit import read_state
    from tests.fakes import FakeEmbedder

    state = read_state(config, name)
    table = state.table
    store = MilvusIndex(config.milvus_uri, name)
    assert np.array_equal(store.ids(), table.live_ids())
    assert store.count() == table.live_count and store.meta.fingerprint == table.fingerprint
    assert store.meta.weights_id == table.weights_id == "fake/v1"
    via_milvus = SearchService(config, embedder=FakeEmbedder())
    live = table.live_ids()
    vectors = np.asarray(state.vectors, dtype=np.float32)
    for i in live[::3].tolist():
        got = via_milvus.search_item(name, i, k=4, rerank=False).hits  # the stores' neighbours, not re-ranking
        exact = live[np.argsort(-(vectors[live] @ vectors[i]), kind="stable")[:4]].tolist()
        assert [h.id for h in got] == exact
        assert [(h.label, h.path) for h in got] == [(table.label(j), table.paths[j]) for j in exact]
    return table


@pytest.mark.slow
def test_ids_and_labels_stay_the_same_in_milvus_after_churn(tmp_path):
    from app.service.library import (
        add_paths,
        count_items,
        delete_items,
        drop_collection,
        index_folder,
        rename_collection,
    )
    from tests.fakes import FakeEmbedder
    from tests.helpers import make_image_folder, synthetic_image

    config = _fake_config(tmp_path)
    root = tmp_path / "photos"
    make_image_folder(root, per_class=5, seed=1)
    first = index_folder(config, "lib", root, embedder=FakeEmbedder())
    assert first.milvus == {"mode": "full", "count": 20, "uri": config.milvus_uri}
    _consistent(config, "lib")
    for v in range(4):  # 30% churn: 4 new, 2 gone, 1 changed, then 2 deleted by id and 2 added from elsewhere
        synthetic_image(v, 60 + v, seed=2).save(root / "circles" / f"n{v}.jpg")
    (root / "stripes" / "img_00.jpg").unlink()
    (root / "squares" / "img_01.jpg").unlink()
    synthetic_image(3, 99, seed=2).save(root / "checks" / "img_00.jpg")
    again = index_folder(config, "lib", root, embedder=FakeEmbedder())
    assert again.line() == "added 4, changed 1, removed 2, unchanged 17" and again.milvus["mode"] == "incremental"
    _consistent(config, "lib")
    delete_items(config, "lib", ids=[1, 2])
    extra = tmp_path / "extra"
    make_image_folder(extra, classes=("boats",), per_class=2, seed=3)
    add_paths(config, "lib", [extra], embedder=FakeEmbedder())
    table = _consistent(config, "lib")
    assert count_items(config, "lib") == table.live_count == 22  # 20 + 4 - 2, then - 2 + 2
    assert rename_collection(config, "lib", "trip").milvus
    _consistent(config, "trip")
    assert not MilvusIndex(config.milvus_uri, "trip", connect=False).client.has_collection("ris_lib")
    dropped = drop_collection(config, "trip")
    assert dropped.milvus == ("ris_trip", "ris_trip__meta")
    with pytest.raises(IndexMissingError):
        MilvusIndex(config.milvus_uri, "trip")


@pytest.mark.slow
def test_a_stale_milvus_copy_is_refused_and_caught_up(tmp_path):
    from app.service.library import delete_items, index_folder
    from app.service.milvus_mirror import push_collection
    from tests.fakes import FakeEmbedder
    from tests.helpers import make_image_folder

    config = _fake_config(tmp_path)
    make_image_folder(tmp_path / "p", per_class=3, seed=4)
    index_folder(config, "lib", tmp_path / "p", embedder=FakeEmbedder())
    delete_items(config.with_(backend="faiss"), "lib", ids=[0])  # the local table moves on without Milvus
    with pytest.raises(IndexMismatchError, match="not those of the local collection") as info:
        SearchService(config, embedder=FakeEmbedder()).collection("lib")
    assert "python -m app.cli sync lib --uri" in info.value.user_message()
    push_collection(config, "lib")
    _consistent(config, "lib")
    delete_items(config.with_(backend="faiss"), "lib", ids=[1])
    summary = delete_items(config, "lib", ids=[2])  # the next change through Milvus pushes everything again
    assert summary.milvus["mode"] == "full"
    _consistent(config, "lib")


def test_an_unreachable_server_is_a_typed_error_with_retry_advice(tmp_path, small_collection):
    import time

    from app.errors import BackendUnavailableError
    from tests.fakes import free_port

    config, _, _ = small_collection
    uri = f"http://127.0.0.1:{free_port()}"
    t = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        MilvusIndex(uri, "shapes", timeout=3)
    assert time.monotonic() - t < 30
    assert uri in str(info.value) and "try again" in info.value.user_message()
    assert "Local collections are not affected" in info.value.user_message()
    service = SearchService(config.with_(backend="milvus", milvus_uri=uri, milvus_timeout_s=3))
    infos = {i.name: i for i in service.collections()}  # listing does not fail: the collection is not ready
    assert infos["shapes"].ready is False and "Cannot connect" in infos["shapes"].reason
    code = main(["count", "--collection", "shapes", "--indexes", str(config.indexes_dir), "--features",
                 str(config.features_dir), "--backend", "milvus", "--milvus-uri", uri])
    assert code == 2


@pytest.mark.slow
def test_cli_search_through_milvus_returns_the_faiss_ids_after_churn(tmp_path, cli_env):
    """The done-when: build, add, delete with --backend milvus, then ``search FILE --backend milvus
    --milvus-uri PATH.db --json`` gives the same ids as the faiss backend, with the same model and weights id."""
    import json
    import subprocess
    import sys

    from tests.helpers import make_image_folder

    root_dir = Path(__file__).resolve().parent.parent
    data = tmp_path / "pics"
    make_image_folder(data, per_class=4, seed=12)
    extra = tmp_path / "extra"
    make_image_folder(extra, classes=("boats",), per_class=3, seed=13)
    uri = str(tmp_path / "cli.db")
    dirs = ["--indexes", str(tmp_path / "i"), "--features", str(tmp_path / "f")]
    milvus = ["--backend", "milvus", "--milvus-uri", uri]

    def run(args):
        proc = subprocess.run([sys.executable, *args], cwd=root_dir, env=cli_env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run(["scripts/build_index.py", "--kind", "folder", "--data", str(data), "--name", "pics", "--weights",
         "untrained", "--no-progress", *dirs, *milvus])
    run(["-m", "app.cli", "add", "--collection", "pics", str(extra), "--weights", "untrained", *dirs, *milvus])
    run(["-m", "app.cli", "delete", "--collection", "pics", "--id", "0", "5", *dirs, *milvus])
    assert run(["-m", "app.cli", "count", "--collection", "pics", *dirs, *milvus]).strip() == "17"
    query = [str(data / "squares" / "img_01.jpg"), str(extra / "boats" / "img_01.jpg")]
    outs = {}
    for backend in (milvus, []):
        out = run(["-m", "app.cli", "search", *query, "--collection", "pics", "--weights", "untrained", "--json",
                   "-k", "5", *dirs, *backend])
        outs[bool(backend)] = [json.loads(line) for line in out.splitlines()]
    for m, f in zip(outs[True], outs[False], strict=True):
        assert [h["id"] for h in m["hits"]] == [h["id"] for h in f["hits"]] and len(m["hits"]) == 5
        assert (m["model"], m["weights_id"]) == (f["model"], f["weights_id"])
        assert 0 not in [h["id"] for h in m["hits"]] and 5 not in [h["id"] for h in m["hits"]]
    assert outs[True][1]["hits"][0]["path"] == (extra / "boats" / "img_01.jpg").as_posix()
