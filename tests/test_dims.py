"""Everything downstream of the embedder works at the model's dimension: 1280 (EfficientNet-Lite) or 2048 (ResNet-50).

The feature store, the tuned and the fixed faiss indexes, their manifests, the search service and
the Milvus backend, each built from a generated folder with a model-free ``FakeEmbedder`` of either
dimension; and an index built with one model is refused under another.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from app.config import Config
from app.core.features import feature_paths, load_features
from app.core.models import DEFAULT_MODEL
from app.errors import IndexMismatchError
from app.index.faiss_store import load_index, manifest_path
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder

DIMS = (1280, 2048)
OTHER = {1280: 2048, 2048: 1280}
MODEL_OF = {1280: "efficientnet-lite0", 2048: "resnet50"}  # what FakeEmbedder(dim=...) stands in for
PER_CLASS = 5
N = 4 * PER_CLASS
# name -> factory passed to build_collection: tuned for the recall target, or fixed
BUILDS = {"tuned": None, "flat": "Flat"}


def make_config(base) -> Config:
    return Config(data_dir=base / "data", indexes_dir=base / "indexes", features_dir=base / "features",
                  cache_dir=base / "cache", weights="untrained", workers=0)


@pytest.fixture(scope="module", params=DIMS, ids=[f"dim{d}" for d in DIMS])
def built(request, tmp_path_factory):
    """Both builds (tuned and Flat) of one generated folder with a FakeEmbedder of the given dim."""
    dim = request.param
    base = tmp_path_factory.mktemp(f"dims-{dim}")
    make_image_folder(base / "pics", per_class=PER_CLASS, seed=5)
    config = make_config(base)
    fake = FakeEmbedder(dim=dim)
    results = {
        name: build_collection(config, BuildSpec(kind="folder", data=base / "pics", name=name, factory=factory),
                               embedder=fake, progress_bar=False)
        for name, factory in BUILDS.items()
    }
    return dim, config, fake, results, base / "pics"


def test_fake_embedder_stands_in_for_the_model_of_its_dimension():
    for dim in DIMS:
        fake = FakeEmbedder(dim=dim)
        assert fake.model.dim == dim and fake.model.name == MODEL_OF[dim]


@pytest.mark.parametrize("name", list(BUILDS))
def test_feature_store_records_the_dimension(built, name):
    dim, config, fake, results, _ = built
    npy = feature_paths(config.features_dir, name)[0]
    vectors = np.load(npy)
    assert vectors.shape == (N, dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    loaded, ftable = load_features(config.features_dir, name)
    table = ftable.to_json()
    assert table["dim"] == dim and table["count"] == N and table["weights_id"] == fake.weights_id
    assert loaded.shape == (N, dim) and ftable.dim == dim
    assert results[name].stats["embedded"] == N and results[name].skipped == []


@pytest.mark.parametrize("name", list(BUILDS))
def test_manifest_records_the_dimension_and_the_model(built, name):
    dim, config, fake, results, _ = built
    manifest = json.loads(manifest_path(config.indexes_dir, name).read_text())
    assert manifest == results[name].manifest
    assert manifest["dim"] == dim and manifest["count"] == N
    assert manifest["model"] == fake.model.name == MODEL_OF[dim]
    assert manifest["weights_id"] == fake.weights_id
    if BUILDS[name]:
        assert manifest["factory"] == BUILDS[name] and manifest["tuning"] == {"fixed": True}
    else:
        assert manifest["factory"] and "fixed" not in manifest["tuning"]


@pytest.mark.parametrize("name", list(BUILDS))
def test_load_index_accepts_its_dimension_and_refuses_the_other(built, name):
    dim, config, fake, _, _ = built
    index, manifest = load_index(config.indexes_dir, name, weights_id=fake.weights_id, dim=dim,
                                 model=fake.model.name)
    assert index.d == dim and index.ntotal == N and manifest["dim"] == dim
    with pytest.raises(IndexMismatchError, match="dimension") as info:
        load_index(config.indexes_dir, name, weights_id=fake.weights_id, dim=OTHER[dim])
    assert str(dim) in str(info.value) and str(OTHER[dim]) in str(info.value)
    assert "build_index.py" in info.value.user_message()


@pytest.mark.parametrize("name", list(BUILDS))
def test_every_image_finds_itself_first(built, name):
    dim, config, fake, _, pics = built
    service = SearchService(config, embedder=fake)
    col = service.collection(name)
    assert len(col) == N and col.vectors.shape == (N, dim) and col.store.dim == dim
    for item_id, rel in enumerate(col.table.paths):
        result = service.search_new_image(pics / rel, name, k=5)
        assert len(result.hits) == 5 and not result.reused
        top = result.hits[0]
        assert (top.rank, top.id, top.path) == (1, item_id, rel)
        assert top.score == pytest.approx(1.0, abs=1e-4)
        assert result.hits[1].score < 0.9999
        by_item = service.search_item(name, item_id, k=3)
        assert by_item.reused and by_item.hits[0].id == item_id


def test_tuned_and_flat_builds_agree(built):
    _, config, fake, _, _ = built
    service = SearchService(config, embedder=fake)
    for item_id in range(N):
        tuned = service.search_item("tuned", item_id, k=3)
        flat = service.search_item("flat", item_id, k=3)
        assert [h.id for h in tuned.hits] == [h.id for h in flat.hits]


# -- Milvus Lite --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def milvus(built, tmp_path_factory):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from app.index.milvus_store import sync

    dim, config, fake, _, _ = built
    uri = str(tmp_path_factory.mktemp(f"milvus-{dim}") / "milvus.db")
    meta = sync(config.features_dir, "tuned", uri, progress_bar=False)
    return config.with_(backend="milvus", milvus_uri=uri), meta


@pytest.mark.slow
def test_milvus_backend_matches_faiss_at_each_dimension(built, milvus):
    from app.index.milvus_store import MilvusIndex

    dim, config, fake, _, pics = built
    milvus_config, meta = milvus
    assert meta["dim"] == dim and meta["count"] == N and meta["weights_id"] == fake.weights_id
    index = MilvusIndex(milvus_config.milvus_uri, "tuned")
    assert (index.dim, index.count()) == (dim, N)
    remote = SearchService(milvus_config, embedder=fake)
    local = SearchService(config, embedder=fake)
    assert remote.collection("tuned").store.dim == dim
    for item_id in range(0, N, 3):
        got = remote.search_item("tuned", item_id, k=5)
        want = local.search_item("tuned", item_id, k=5)
        assert got.hits[0].id == item_id and got.hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.id for h in got.hits][:3] == [h.id for h in want.hits][:3]
    rel = local.collection("tuned").table.paths[7]
    by_file = remote.search_new_image(pics / rel, "tuned", k=3)
    assert by_file.hits[0].path == rel
    assert [h.id for h in by_file.hits] == [h.id for h in local.search_new_image(pics / rel, "tuned", k=3).hits]


# -- an index of another model -------------------------------------------------------------------


@pytest.mark.parametrize("built_dim", DIMS, ids=[f"built-{MODEL_OF[d]}" for d in DIMS])
def test_index_of_another_model_is_refused_naming_both(tmp_path, built_dim):
    run_dim = OTHER[built_dim]
    built_model, run_model = MODEL_OF[built_dim], MODEL_OF[run_dim]
    make_image_folder(tmp_path / "pics", classes=("circles", "stripes"), per_class=3, seed=2)
    config = make_config(tmp_path)
    builder = FakeEmbedder(f"{built_model}/fake", dim=built_dim)
    build_collection(config, BuildSpec(kind="folder", data=tmp_path / "pics", name="mine", factory="Flat"),
                     embedder=builder, progress_bar=False)
    assert SearchService(config, embedder=builder).search_item("mine", 0).hits[0].id == 0

    runner = FakeEmbedder(f"{run_model}/fake", dim=run_dim)
    service = SearchService(config, embedder=runner)
    with pytest.raises(IndexMismatchError) as info:
        service.collection("mine")
    text = info.value.user_message()
    assert built_model in text and run_model in text, text
    assert f"--model {built_model}" in text  # run with the model it was built with...
    command = text[text.index("python scripts/build_index.py"):]  # ... or rebuild it for the running one
    assert f"--data {(tmp_path / 'pics').resolve()}" in command and "--name mine" in command
    models = re.findall(r"--model (\S+)", command)
    if run_model == DEFAULT_MODEL:
        assert models in ([], [run_model]), command  # the default model: the plain command builds it
    else:
        assert models == [run_model], command
    assert "--weights fake" not in command  # the other model's weights do not carry over
    with pytest.raises(IndexMismatchError):  # refused on every use, not only the first
        service.search_new_image(tmp_path / "pics" / "circles" / "img_00.jpg", "mine")

    # the same model with other weights is refused too, naming both weights ids
    same_model = FakeEmbedder(f"{built_model}/other", dim=built_dim)
    with pytest.raises(IndexMismatchError) as info:
        SearchService(config, embedder=same_model).collection("mine")
    assert f"{built_model}/fake" in str(info.value) and f"{built_model}/other" in str(info.value)
