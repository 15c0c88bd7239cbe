"""The Milvus backend, with Milvus Lite running embedded in tmp_path."""

from __future__ import annotations

from pathlib import Path

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
    meta = sync(config.features_dir, "shapes", uri, progress=False)
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
        got = milvus.search_item("shapes", item, k=5)
        want = local.search_item("shapes", item, k=5)
        assert got.hits[0].id == item  # the query itself comes back first
        assert [h.id for h in got.hits][:3] == [h.id for h in want.hits][:3]
        assert got.hits[0].score == pytest.approx(1.0, abs=1e-5)
    query = small_collection[2] / "squares" / "img_01.jpg"
    assert milvus.search(query, "shapes", 3).hits[0].path == "squares/img_01.jpg"


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
    proc = subprocess.run([sys.executable, "scripts/build_index.py", "--collection", "folder", "--data",
                           str(tmp_path / "pics"), "--name", "pics", "--weights", "untrained", "--factory", "Flat",
                           "--backend", "milvus", "--milvus-uri", uri, "--no-progress", "--json", *dirs],
                          cwd=Path(__file__).resolve().parent.parent, env=cli_env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stats"]["milvus"]["count"] == out["manifest"]["count"] == 12
    index = MilvusIndex(uri, "pics")
    assert index.count() == 12 and index.meta.weights_id == out["manifest"]["weights_id"]
    missing = subprocess.run([sys.executable, "scripts/build_index.py", "--collection", "folder", "--data",
                              str(tmp_path / "pics"), "--backend", "milvus", *dirs],
                             cwd=Path(__file__).resolve().parent.parent, env=cli_env, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and "--milvus-uri" in missing.stderr and "Traceback" not in missing.stderr
