"""The annotated object set (app/metrics/object_set.py) and evaluate-objects (AP50, object-query hit@k)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.core.detectors import COCO_LABELS
from app.metrics.object_eval import TrueBox, average_precision, read_voc
from app.metrics.object_set import make_object_set
from tests.detector_fakes import SPEC, install_fake

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def _truth(*boxes, difficult=()):
    return [TrueBox("cup", b, i in difficult) for i, b in enumerate(boxes)]


def test_average_precision_follows_voc():
    truth = {"a": _truth((0, 0, 10, 10)), "b": _truth((0, 0, 10, 10))}
    perfect = [("a", 0.9, (0, 0, 10, 10)), ("b", 0.8, (1, 0, 10, 10))]
    assert average_precision(perfect, truth) == pytest.approx(1.0)
    # a false positive ranked first, then both true ones: precision 1/2 then 2/3 at recall 1/2, 1; the
    # envelope (best precision at that recall or more) is 2/3 at both
    worse = [("a", 0.95, (50, 50, 60, 60)), *perfect]
    assert average_precision(worse, truth) == pytest.approx(2 / 3)
    late = [*perfect[:1], ("a", 0.85, (50, 50, 60, 60)), perfect[1]]  # TP, FP, TP: 1 at 1/2, 2/3 at 1
    assert average_precision(late, truth) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    # a duplicate of a matched box is a false positive; only half the boxes found: AP 0.5
    assert average_precision([("a", 0.9, (0, 0, 10, 10)), ("a", 0.8, (0, 0, 10, 10))], truth) == pytest.approx(0.5)
    # a difficult box neither counts nor penalises
    hard = {"a": _truth((0, 0, 10, 10), (20, 20, 30, 30), difficult=(1,))}
    assert average_precision([("a", 0.9, (20, 20, 30, 30)), ("a", 0.5, (0, 0, 10, 10))], hard) == pytest.approx(1.0)
    assert average_precision([], {"a": _truth((0, 0, 1, 1), difficult=(0,))}) is None


@pytest.fixture(scope="module")
def object_set(tmp_path_factory) -> Path:
    """A small set made from a Caltech101-like tree: the committed cup, laptop and chair photos pasted onto
    generated backgrounds."""
    base = tmp_path_factory.mktemp("objset")
    cal = base / "caltech" / "101_ObjectCategories"
    for cat in ("cup", "laptop", "chair"):
        shutil.copytree(DATA / "cats_and_cups" / cat, cal / cat)
    (cal / "BACKGROUND_Google").mkdir()
    for i in range(3):
        Image.new("RGB", (300, 200), (40 * i, 90, 160)).save(cal / "BACKGROUND_Google" / f"image_{i:04d}.jpg")
    make_object_set(base / "caltech", base / "set", images=6, seed=1)
    return base


def test_the_set_is_voc_layout_seeded_and_boxes_lie_inside(object_set):
    images = read_voc(object_set / "set", COCO_LABELS)
    assert len(images) == 6 and all(i.path.is_file() for i in images)
    assert sum(len(i.boxes) for i in images) >= 6
    for image in images:
        w, h = Image.open(image.path).size
        for t in image.boxes:
            assert t.label in ("cup", "laptop", "chair") and 0 <= t.box[0] < t.box[2] <= w and 0 <= t.box[1] < t.box[3] <= h
    again = object_set / "again"
    make_object_set(object_set / "caltech", again, images=6, seed=1)
    for xml in (object_set / "set" / "Annotations").glob("*.xml"):
        assert (again / "Annotations" / xml.name).read_bytes() == xml.read_bytes()


def _cache_with_fake_detector(root: Path, model_cache: Path) -> Path:
    """A cache folder with the session's model export and a stand-in detector that sees a cup in the middle."""
    cache = root / "reverse-image-search"
    cache.mkdir(parents=True)
    for entry in model_cache.iterdir():
        (cache / entry.name).symlink_to(entry)
    install_fake(cache, [(32, 6, 6, COCO_LABELS.index("cup"), 0.8, (100.0, 100.0, 100.0, 100.0))])
    return cache


def test_evaluate_objects_reports_ap_and_hits(object_set, tmp_path, model_cache):
    _cache_with_fake_detector(tmp_path / "xdg", model_cache)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "scripts/evaluate_objects.py", "--data", str(object_set / "set"), "--json",
                           "--model", "resnet50", "--weights", "untrained"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    det, search = report["detection"], report["search"]
    assert det["images"] == 6 and set(det["ap50"]) <= {"cup", "laptop", "chair"}
    assert det["ap50"].get("laptop", 0.0) == 0.0 and 0 <= det["map50"] <= 1  # the stand-in never says laptop
    assert search["queries"] == sum(len(i.boxes) for i in read_voc(object_set / "set", SPEC.labels))
    for key in ("object_hit_at_5", "whole_image_hit_at_5", "object_photo_hit_at_5", "whole_image_photo_hit_at_5"):
        assert 0.0 <= search[key] <= 1.0
    assert search["objects"] == 6  # one object per photo


def test_bench_objects_reports_every_figure(object_set, tmp_path, model_cache):
    from app.config import Config
    from app.metrics.bench_objects import bench_objects, format_bench_objects

    cache = _cache_with_fake_detector(tmp_path, model_cache)
    config = Config(cache_dir=cache, weights="untrained", workers=0, indexes_dir=tmp_path / "i", features_dir=tmp_path / "f")
    r = bench_objects(config, object_set / "set" / "JPEGImages", images=4)
    assert r["photos"] == 4 and r["objects_stored"] == 4 and r["objects_per_photo"] == 1.0
    assert r["detect_ms_p50"] > 0 and r["query_with_objects_ms_p50"] > 0
    assert r["build_with_objects_img_per_s"] < r["build_img_per_s"]
    assert r["objects_bytes_per_photo"] > r["whole_image_bytes_per_photo"] / 2  # one vector (2048 floats) + its record
    assert "target <= 60 ms" in format_bench_objects(r)
    assert not (tmp_path / "f").exists()  # the bench builds in a temp folder of its own
