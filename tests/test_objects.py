"""Object vectors of a collection (app/service/objects.py): built beside the collection with a stand-in
detector, incremental, deletes honoured, the crop, and ``search --objects --json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.detect import Detector
from app.service.objects import build_objects, load_objects, object_crop, record_path, search_objects
from tests.detector_fakes import SPEC, install_fake

CUP, CHAIR = SPEC.labels.index("cup"), SPEC.labels.index("chair")
# Two objects in every photo (the stand-in answers the same for any input): centres (48, 48), (336, 304).
OBJECTS = [(32, 1, 1, CUP, 0.9, (40.0, 40.0, 40.0, 40.0)), (16, 18, 20, CHAIR, 0.6, (30.0, 30.0, 60.0, 60.0))]


@pytest.fixture()
def collection(small_collection, tmp_path):
    """A private copy of the small built collection, and a stand-in detector in its own cache."""
    config, _, data = small_collection
    shutil.copytree(config.indexes_dir, tmp_path / "indexes")
    shutil.copytree(config.features_dir, tmp_path / "features")
    config = config.with_(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features")
    install_fake(tmp_path / "det", OBJECTS)
    return config, Detector(tmp_path / "det"), data


def test_object_crop_is_square_with_context_and_inside_the_photo():
    img = Image.new("RGB", (400, 300))
    crop = object_crop(img, (100, 100, 200, 150))  # 100 x 50: side 120
    assert crop.size == (120, 120)
    edge = object_crop(img, (350, 250, 400, 300))  # at the corner: moved inside, same side
    assert edge.size == (60, 60)
    tall = object_crop(img, (10, 0, 30, 300))  # longer than the photo allows: clipped to it
    assert tall.height == 300 and tall.width <= 400


def test_build_objects_stores_each_photos_objects_and_is_incremental(collection, embedder):
    config, detector, _ = collection
    first = build_objects(config, "shapes", embedder, detector)
    assert first.photos == 24 and first.detected == 24 and first.objects == 48
    store = load_objects(config, "shapes")
    assert store.vectors.shape == (48, embedder.dim) and sorted(set(store.labels)) == ["chair", "cup"]
    assert (store.boxes[:, 2] <= 96).all() and (store.boxes[:, 3] <= 72).all() and (store.boxes >= 0).all()
    record = record_path(config, "shapes").read_text()
    again = build_objects(config, "shapes", embedder, detector)
    assert again.detected == 0 and again.objects == 48 and record_path(config, "shapes").read_text() == record


def test_a_deleted_photos_objects_are_skipped_then_dropped(collection, embedder):
    from app.service.catalogue import Catalogue
    from app.service.library import delete_items

    config, detector, _ = collection
    build_objects(config, "shapes", embedder, detector)
    store = load_objects(config, "shapes")
    delete_items(config, "shapes", ids=[0])
    col = Catalogue(config, lambda: embedder).get("shapes")
    query = np.asarray(store.vectors[0])
    hits = search_objects(store, query, 48, paths=col.table.paths, photo_labels=col.table.labels, live=col.live_mask)
    assert len(hits) == 46 and 0 not in {h.id for h in hits}
    after = build_objects(config, "shapes", embedder, detector)
    assert after.objects == 46 and 0 not in set(load_objects(config, "shapes").item_ids.tolist())
    vector_files = sorted(p.name for p in config.features_dir.glob("shapes.objects.*.npy"))
    assert len(vector_files) == 1  # the previous vectors file went with its record


def test_search_finds_an_objects_own_vector_first(collection, embedder):
    config, detector, _ = collection
    build_objects(config, "shapes", embedder, detector)
    store = load_objects(config, "shapes")
    paths = [f"p{i}.png" for i in range(24)]
    hits = search_objects(store, np.asarray(store.vectors[5]), 3, paths=paths, photo_labels=paths)
    assert hits[0].id == int(store.item_ids[5]) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].box == pytest.approx(tuple(store.boxes[5].tolist()))
    assert [h.rank for h in hits] == [1, 2, 3]


def test_search_objects_command_answers_objects_with_boxes(collection, embedder, cli_env):
    config, detector, data = collection
    build_objects(config, "shapes", embedder, detector)
    query = next(Path(data).rglob("*.png"))
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", str(query), "--collection", "shapes", "--objects", "--json",
         "-k", "4", "--weights", "untrained", "--indexes", str(config.indexes_dir),
         "--features", str(config.features_dir)],
        capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["hits"]) == 4 and out["objects"] is True
    for hit in out["hits"]:
        assert {"rank", "id", "path", "label", "score", "box"} <= set(hit)
        x1, y1, x2, y2 = hit["box"]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 72 and hit["label"] in ("cup", "chair")


def test_rename_and_drop_carry_the_object_vectors(collection, embedder):
    """The object vectors are a part of the collection: its store's rename and drop carry them (CLI and web alike)."""
    from app.service.library import drop_collection, rename_collection
    from app.service.objects import object_files, rename_objects

    config, detector, _ = collection
    build_objects(config, "shapes", embedder, detector)
    before = load_objects(config, "shapes")
    rename_collection(config, "shapes", "forms")
    assert object_files(config, "shapes") == []
    after = load_objects(config, "forms")
    assert np.array_equal(after.item_ids, before.item_ids) and np.allclose(after.vectors, before.vectors)
    dropped = drop_collection(config, "forms")
    assert sum(".objects." in p for p in dropped.removed) == 2 and object_files(config, "forms") == []
    assert not rename_objects(config, "forms", "again")  # none left to carry


def test_search_box_is_clipped_and_a_box_of_no_size_is_refused(small_collection, cli_env):
    config, _, data = small_collection
    query = str(next(Path(data).rglob("*.png")))
    base = [sys.executable, "-m", "app.cli", "search", query, "--collection", "shapes", "--json", "--weights",
            "untrained", "--indexes", str(config.indexes_dir), "--features", str(config.features_dir)]
    ok = subprocess.run([*base, "--box", "-20", "10", "50", "500"], capture_output=True, text=True, env=cli_env,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["hits"]) == 5
    bad = subprocess.run([*base, "--box", "10", "10", "10", "40"], capture_output=True, text=True, env=cli_env,
                         timeout=300)
    assert bad.returncode == 2 and "no area" in json.loads(bad.stdout)["error"]
    assert "Traceback" not in bad.stderr


def test_crop_box_cuts_the_clipped_region():
    from app.core.detect import crop_box

    img = Image.new("RGB", (100, 80))
    assert crop_box(img, (-10, 5, 50.5, 200)).size == (51, 75)


def test_a_collection_without_objects_says_how_to_build_them(small_collection):
    from app.errors import IndexMissingError

    with pytest.raises(IndexMissingError, match="no object vectors") as info:
        load_objects(small_collection[0], "shapes")
    assert "--objects" in info.value.user_message()


@pytest.mark.slow
def test_real_detector_and_model_find_cups_among_objects(tmp_path, lite0_embedder, model_cache):
    """The real NanoDet-m and EfficientNet-Lite0 over the committed Caltech101 photos: the coffee cup's crop
    finds objects in the cup photos first."""
    import os

    from app.config import Config
    from app.core.detectors import detector_model_path
    from app.errors import DetectorUnavailableError
    from app.service.build import BuildSpec, build_collection
    from app.service.catalogue import Catalogue

    user_cache = Config().cache_dir
    try:
        detector_model_path(user_cache, SPEC)
    except DetectorUnavailableError as exc:
        if os.environ.get("RIS_REQUIRE_DETECTOR") == "1":
            raise
        pytest.skip(f"the real detector is not installed: {exc.user_message()}")
    data = Path(__file__).parent / "data"
    config = Config(indexes_dir=tmp_path / "i", features_dir=tmp_path / "f", cache_dir=model_cache,
                    model="efficientnet-lite0", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=data / "cats_and_cups", name="cc", factory="Flat"),
                     embedder=lite0_embedder, progress_bar=False)
    summary = build_objects(config, "cc", lite0_embedder, Detector(user_cache))
    assert summary.objects >= 5
    store = load_objects(config, "cc")
    col = Catalogue(config, lambda: lite0_embedder).get("cc")
    from app.service.objects import embed_crops

    cup = object_crop(Image.open(data / "photo_coffee.png").convert("RGB"), SPEC.check_box)
    hits = search_objects(store, embed_crops(lite0_embedder, [cup])[0], 3, paths=col.table.paths,
                          photo_labels=col.table.labels, live=col.live_mask)
    assert hits[0].path.startswith("cup/"), [h.to_json() for h in hits]
