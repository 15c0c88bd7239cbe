"""The two inference engines: ONNX Runtime (CPU default) and PyTorch (CUDA, fallback).

They must give the same vectors (cosine >= 0.999 on real photos), an index built with one must
serve queries embedded by the other, and a failed ONNX export must fall back to PyTorch with a
one-line notice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.core.embed import Embedder
from app.core.images import load_image
from app.errors import WeightsError

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(DATA.glob("engine_*.jpg"))


@pytest.fixture(scope="module")
def torch_embedder(model_cache):
    return Embedder("untrained", engine="torch", device="cpu", cache_dir=model_cache).load()


def _arrays(paths, embedder: Embedder | None = None) -> np.ndarray:
    embedder = embedder or Embedder("untrained")
    return np.stack([embedder.preprocess(load_image(p)) for p in paths])


def test_photos_are_small_and_present():
    assert len(PHOTOS) >= 3
    assert all(p.stat().st_size < 60_000 for p in PHOTOS)


@pytest.mark.slow
def test_engines_agree_on_real_photos(embedder, torch_embedder):
    assert embedder.engine == "onnx" and torch_embedder.engine == "torch-cpu"
    batch = _arrays(PHOTOS)
    a, b = embedder.embed_arrays(batch), torch_embedder.embed_arrays(batch)
    cos = np.sum(a * b, axis=1)
    assert cos.min() >= 0.999, cos
    # Batch 1 (the query path) agrees with the batched path (the build path) too.
    single = np.concatenate([embedder.embed_arrays(batch[i : i + 1]) for i in range(len(batch))])
    assert np.sum(single * a, axis=1).min() >= 0.9999


@pytest.mark.slow
def test_index_built_with_one_engine_serves_the_other(small_collection, embedder, torch_embedder):
    from app.service.search import SearchService

    config, result, data = small_collection
    assert result.manifest["engine"] == "onnx"
    onnx_service = SearchService(config, embedder=embedder)
    torch_service = SearchService(config, embedder=torch_embedder)
    queries = sorted(data.rglob("img_00.*")) + PHOTOS
    for q in queries:
        a = onnx_service.search_new_image(q, "shapes", 5).hits
        b = torch_service.search_new_image(q, "shapes", 5).hits
        assert a[0].id == b[0].id, q
        assert abs(a[0].score - b[0].score) < 1e-3


def test_failed_export_falls_back_to_torch_with_a_one_line_notice(tmp_path, monkeypatch):
    import app.core.embed as embed

    def broken_export(model, spec, path):
        raise RuntimeError("simulated exporter failure")

    monkeypatch.setattr(embed, "export_onnx", broken_export)
    e = Embedder("untrained", cache_dir=tmp_path).load()
    assert e.engine == "torch-cpu"
    notice = [n for n in e.notices if "ONNX" in n]
    assert len(notice) == 1 and "\n" not in notice[0] and "simulated exporter failure" in notice[0]
    assert e.embed_arrays(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 2048)

    with pytest.raises(WeightsError):
        Embedder("untrained", engine="onnx", cache_dir=tmp_path).load()


@pytest.mark.slow
def test_optimised_graph_is_cached_and_a_damaged_one_is_replaced(tmp_path, embedder, model_cache):
    exported = embedder.onnx_path()
    optimised = sorted(exported.parent.glob(exported.stem + ".ort-*.onnx"))
    assert len(optimised) == 1 and optimised[0].stat().st_size > 1_000_000
    x = _arrays(PHOTOS[:1])
    want = embedder.embed_arrays(x)

    cache = tmp_path / "cache"
    e = Embedder("untrained", cache_dir=cache)
    e.onnx_path().parent.mkdir(parents=True)
    shutil.copy(exported, e.onnx_path())
    damaged = e.onnx_path().parent / optimised[0].name
    damaged.write_bytes(b"not a model")
    assert np.allclose(e.load().embed_arrays(x), want, atol=1e-5)
    assert damaged.stat().st_size > 1_000_000  # optimised again, atomically
    assert not list(damaged.parent.glob(".*.tmp"))
    again = Embedder("untrained", cache_dir=cache).load()
    assert np.allclose(again.embed_arrays(x), want, atol=1e-5)


def test_session_options(embedder):
    import onnxruntime as ort

    from app.core.embed import _onnx_session

    s = _onnx_session(ort, embedder.onnx_path(), threads=1, spinning=False)
    x = _arrays(PHOTOS[:1])
    out = s.run(None, {s.get_inputs()[0].name: x})[0]
    got = out / np.linalg.norm(out, axis=1, keepdims=True)
    assert np.allclose(got, embedder.embed_arrays(x), atol=1e-4)
