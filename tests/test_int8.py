"""The opt-in INT8 engine (``--engine onnx-int8``): ONNX Runtime static quantisation of the fp32 export,
calibrated on collection images (``app/core/quantize.py``).

Its vectors must agree with fp32 within a measured bound, the quantised model must be cached by
weights id and calibration set, an index built with either engine must serve queries from the
other, and with no INT8 model at hand it must stop with the command that makes one (no fallback).

Bounds, from measurement (6 calibration images from ``tests/data/cats_and_cups``, the 8 committed
photos as queries; see the README's INT8 section for the full-collection numbers):

* EfficientNet-Lite0, real weights: mean cosine 0.988, min 0.970 (the rocket photo); on 100
  Caltech101 images 0.992 / 0.961. Asserted: mean >= 0.98, min >= 0.95.
* ResNet-50, untrained: 0.9998 on every photo (its random-init features are nearly rank-collapsed,
  so this is the easy case). Asserted: min >= 0.999.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.datasets import load_dataset
from app.core.embed import Embedder
from app.core.images import load_image
from app.core.quantize import (
    Int8ModelMissing,
    calibration_files,
    calibration_key,
    find_int8,
    int8_path,
    shape_arithmetic_nodes,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
PHOTOS = sorted(DATA.glob("*.jpg")) + sorted(DATA.glob("*.png"))
CUPS = DATA / "cats_and_cups"
CALIBRATION = 6  # images: enough for a stable calibration on these models (20 gave the same cosines)

# model fixture -> (mean bound, min bound) of the cosine between INT8 and fp32 vectors
BOUNDS = {"lite0_embedder": (0.98, 0.95), "embedder": (0.999, 0.999)}


def cups_calibration(n: int = CALIBRATION) -> list[Path]:
    ds = load_dataset("folder", CUPS)
    return calibration_files(ds.image_root, ds.items, n)


def int8_twin(fp32: Embedder, cache: Path, files=None) -> Embedder:
    """The INT8 embedder of the same model and weights, calibrated on ``files`` (default: 6 cups)."""
    e = Embedder(fp32.spec, model=fp32.model, engine="onnx-int8", cache_dir=cache)
    return e.calibrate(cups_calibration() if files is None else files, source="tests").load()


@pytest.fixture(scope="module")
def int8_embedders(request, model_cache) -> dict[str, Embedder]:
    made = {}
    for name in BOUNDS:
        made[name] = int8_twin(request.getfixturevalue(name), model_cache)
    return made


def _arrays(paths, embedder: Embedder) -> np.ndarray:
    return np.stack([embedder.preprocess(load_image(p)) for p in paths])


# -- the calibration set and the cache (no model) --------------------------------------------------


def test_calibration_key_follows_the_content_not_the_names(tmp_path):
    files = cups_calibration()
    assert len(files) == CALIBRATION and len({f.parent.name for f in files}) == CALIBRATION  # spread over labels
    assert files == cups_calibration()  # deterministic
    key = calibration_key(files)
    assert len(key) == 16 and key == calibration_key(list(files))
    copies = []
    for i, f in enumerate(files):
        copies.append(tmp_path / f"renamed_{i}.jpg")
        shutil.copy(f, copies[-1])
    assert calibration_key(copies) == key  # same images elsewhere: the same calibration
    assert calibration_key(files[:-1]) != key  # another set
    assert calibration_key(files[::-1]) != key  # another order (the calibrator sees batches in order)
    other = cups_calibration(CALIBRATION + 1)
    assert calibration_key(other) != key
    fp32 = tmp_path / "m-features-abc-v1.onnx"
    assert int8_path(fp32, key) != int8_path(fp32, calibration_key(other))
    assert int8_path(fp32, key).name == f"m-features-abc-v1.int8-{key}.onnx"


def test_find_int8_takes_the_newest_complete_model_of_the_weights(tmp_path):
    fp32 = tmp_path / "m-features-abc-v1.onnx"
    assert find_int8(fp32) is None
    for key, created in (("aaaa", "2024-01-01T00:00:00+00:00"), ("bbbb", "2025-01-01T00:00:00+00:00")):
        int8_path(fp32, key).write_bytes(b"model")
        int8_path(fp32, key).with_suffix(".json").write_text(json.dumps({"key": key, "created": created}))
    (tmp_path / "m-features-abc-v1.int8-cccc.onnx").write_bytes(b"no record: an interrupted write")
    (tmp_path / "m-features-abc-v1.int8-bbbb.ort-1.0-cpu.onnx").write_bytes(b"ORT's optimised copy")
    (tmp_path / "m-features-other-v1.int8-dddd.onnx").write_bytes(b"other weights")
    assert find_int8(fp32) == int8_path(fp32, "bbbb")


def test_only_the_data_path_is_quantised():
    """Arithmetic on sizes (timm's TF-"same" padding computes pad widths in float) stays float."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Div", ["sf", "two"], ["half"], name="div"),
        helper.make_node("Cast", ["half"], ["pads"], to=TensorProto.INT64),  # unnamed: gets a name
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
        helper.make_node("Relu", ["xp"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    off = shape_arithmetic_nodes(onnx.helper.make_model(graph).graph)
    assert off == ["shape", "cast", "div", "_node_3"]


def test_no_int8_model_stops_with_the_command_that_makes_one(tmp_path):
    e = Embedder("untrained", model="efficientnet-lite0", engine="onnx-int8", cache_dir=tmp_path)
    with pytest.raises(Int8ModelMissing) as err:
        e.load()
    message = err.value.user_message()
    assert "no INT8 model for efficientnet-lite0" in message
    assert "python -m app.cli quantize --collection NAME --model efficientnet-lite0 --weights untrained" in message
    assert "--engine onnx-int8" in message and "\n" not in message
    assert e.engine is None and not e.loaded  # no fp32 fallback
    assert not list(tmp_path.rglob("*.onnx"))  # and no export made on the way


def test_engine_choices():
    with pytest.raises(ValueError, match="onnx-int8"):
        Embedder("untrained", engine="int8")
    with pytest.raises(ValueError, match="INT8"):
        Embedder("untrained", engine="onnx").calibrate([PHOTOS[0]])
    assert Embedder("untrained", engine="onnx-int8").wants_int8
    assert not Embedder("untrained").wants_int8  # auto stays fp32: INT8 is opt-in


# -- the models ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BOUNDS))
def test_int8_vectors_agree_with_fp32(request, int8_embedders, name):
    fp32, int8 = request.getfixturevalue(name), int8_embedders[name]
    assert fp32.engine == "onnx" and int8.engine == "onnx-int8"
    assert int8.weights_id == fp32.weights_id and int8.dim == fp32.dim  # the same vectors' space
    x = _arrays(PHOTOS, fp32)
    a, b = fp32.embed_arrays(x), int8.embed_arrays(x)
    cos = np.sum(a * b, axis=1)
    mean_bound, min_bound = BOUNDS[name]
    assert cos.mean() >= mean_bound and cos.min() >= min_bound, np.round(cos, 4)
    # the query path (batch 1) gives the build path's (batched) vectors
    single = np.concatenate([int8.embed_arrays(x[i : i + 1]) for i in range(len(x))])
    assert np.sum(single * b, axis=1).min() >= 0.999


@pytest.mark.slow
def test_int8_model_is_cached_by_weights_and_calibration(lite0_embedder, int8_embedders, model_cache, monkeypatch):
    import app.core.quantize as quantize

    made = int8_embedders["lite0_embedder"]
    info = json.loads(made.int8_model.with_suffix(".json").read_text())
    assert info["images"] == CALIBRATION and info["key"] == calibration_key(cups_calibration())
    assert made.int8_model.parent == lite0_embedder.onnx_path().parent  # beside the fp32 export
    assert made.int8_model.name.startswith(lite0_embedder.onnx_path().stem + ".int8-")

    def no_quantizing(*args, **kwargs):
        raise RuntimeError("quantize_onnx was called")

    monkeypatch.setattr(quantize, "quantize_onnx", no_quantizing)
    again = int8_twin(lite0_embedder, model_cache)  # the same calibration set: a cache hit
    assert again.int8_model == made.int8_model
    x = _arrays(PHOTOS[:2], lite0_embedder)
    assert np.allclose(again.embed_arrays(x), made.embed_arrays(x), atol=1e-6)
    # for search, with no images at hand: the newest INT8 model of these weights
    query = Embedder("imagenet", model="efficientnet-lite0", engine="onnx-int8", cache_dir=model_cache).load()
    assert query.int8_model == find_int8(lite0_embedder.onnx_path()) and query.engine == "onnx-int8"
    # another calibration set is another model
    with pytest.raises(RuntimeError, match="quantize_onnx was called"):
        int8_twin(lite0_embedder, model_cache, files=cups_calibration(CALIBRATION - 1))


# -- serving across engines ------------------------------------------------------------------------


@pytest.mark.slow
def test_fp32_index_serves_int8_queries(small_collection, int8_embedders):
    """ResNet-50 (untrained) shapes collection built with fp32; each image, searched by file with the
    INT8 engine, finds itself first."""
    from app.service.search import SearchService

    config, result, data = small_collection
    assert result.manifest["engine"] == "onnx"
    service = SearchService(config, embedder=int8_embedders["embedder"])
    table_paths = service.catalogue.get("shapes").table.paths
    for rel in table_paths[::3]:
        hits = service.search_new_image(data / rel, "shapes", 3, rerank=False).hits  # the engine, not re-ranking
        assert table_paths[hits[0].id] == rel and hits[0].score > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("build_engine", ["onnx", "onnx-int8"])
def test_real_model_index_serves_the_other_engine(tmp_path, lite0_embedder, int8_embedders, model_cache,
                                                  build_engine):
    """EfficientNet-Lite0 on 20 Caltech101 photos: built with one engine, queried with the other, every
    photo finds itself first. The INT8 build calibrates on its own images and says so in its manifest."""
    from app.config import Config
    from app.service.build import BuildSpec, build_collection
    from app.service.search import SearchService

    config = Config(indexes_dir=tmp_path / "idx", features_dir=tmp_path / "feat", cache_dir=model_cache,
                    model="efficientnet-lite0", engine=build_engine, workers=0)
    if build_engine == "onnx":
        builder, querier = lite0_embedder, int8_embedders["lite0_embedder"]
    else:
        builder = Embedder("imagenet", model="efficientnet-lite0", engine="onnx-int8", cache_dir=model_cache)
        querier = lite0_embedder
    result = build_collection(config, BuildSpec(kind="folder", data=CUPS, name="cups", factory="Flat"),
                              embedder=builder, progress_bar=False)
    assert result.manifest["engine"] == build_engine
    if build_engine == "onnx-int8":
        cal = result.manifest["int8_calibration"]
        assert cal["images"] == 20 and cal["source"].startswith("cups: ") and builder.int8_model.name == cal["model_file"]
    service = SearchService(config, embedder=querier)
    table_paths = service.catalogue.get("cups").table.paths
    for rel in table_paths:
        hits = service.search_new_image(CUPS / rel, "cups", 3).hits
        assert table_paths[hits[0].id] == rel and hits[0].score >= 0.95, (rel, hits[0])


@pytest.mark.slow
def test_cli_quantize_then_search_with_int8(small_collection, cli_env, embedder):
    config, _, data = small_collection
    common = ["--features", str(config.features_dir), "--weights", "untrained"]
    run = (lambda args: subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=cli_env,
                                       capture_output=True, text=True, timeout=300))
    proc = run(["quantize", "--collection", "shapes", "--images", "4", "--json", *common])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is the JSON alone (the calibrator's chatter is kept off it)
    assert out["weights_id"] == embedder.weights_id and out["calibration"]["images"] == 4
    made = Path(out["int8_model"])  # in the session's model cache (cli_env links it), beside the fp32 export
    assert made.is_file() and made.parent.resolve() == embedder.onnx_path().parent.resolve()
    query = sorted(data.glob("squares/*.jpg"))[0]
    proc = run(["search", str(query), "--collection", "shapes", "--indexes", str(config.indexes_dir),
                "--engine", "onnx-int8", "--json", *common])
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.splitlines()[0])
    assert line["engine"] == "onnx-int8" and line["hits"][0]["path"] == f"squares/{query.name}"


def test_cli_engine_choice_lists_int8(cli_env):
    proc = subprocess.run([sys.executable, "-m", "app.cli", "search", "--help"], cwd=ROOT, env=cli_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "onnx-int8" in proc.stdout
