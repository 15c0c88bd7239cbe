"""Object detection: decoding NanoDet's outputs, NMS per class, the cap, clipping, the checksum on the
installed model, and the ``objects`` command. A stand-in ONNX model (tests/detector_fakes.py) gives
exact expectations; the real detector's test is at the end (needs ``python -m app.cli detector install``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.detect import Detector, clip_box, decode
from app.core.detectors import DETECTORS, MODEL_FILE, detector_dir, detector_model_path
from app.core.nms import batched_nms, box_iou
from app.errors import DetectorUnavailableError, InvalidBoxError
from tests.detector_fakes import SPEC, cup_at_check_box, fake_outputs, install_fake

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
CUP = SPEC.labels.index("cup")
CHAIR = SPEC.labels.index("chair")


def test_decode_places_a_box_by_its_cell_and_bin_expectations():
    # stride 16, row 3, col 5: centre (88, 56); sides 20, 12.5, 40, 7 pixels.
    raw = fake_outputs([(16, 3, 5, CUP, 0.8, (20.0, 12.5, 40.0, 7.0))])
    boxes, scores = decode(raw, SPEC)
    assert boxes.shape == (52 * 52 + 26 * 26 + 13 * 13, 4) and scores.shape == (len(boxes), 80)
    best = int(np.argmax(scores[:, CUP]))
    assert best == 52 * 52 + 3 * 26 + 5
    np.testing.assert_allclose(boxes[best], [68.0, 43.5, 128.0, 63.0], atol=1e-3)


def test_nms_is_per_class_and_keeps_the_best_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.5, 0.9, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert batched_nms(boxes, scores, classes, 0.6) == [1, 2, 3]  # box 0 is under box 1, same class
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.6) == []
    assert box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(1 / 3)


def test_clip_box_clips_and_refuses_boxes_of_no_size():
    assert clip_box([-5, -5, 50, 300], 100, 80) == (0.0, 0.0, 50.0, 80.0)
    assert clip_box([50, 60, 10, 20], 100, 80) == (10.0, 20.0, 50.0, 60.0)  # corners in any order
    for bad in ([10, 10, 10, 50], [120, 10, 200, 50], [0, 0, float("nan"), 5], [1, 2, 3], "abcd"):
        with pytest.raises(InvalidBoxError):
            clip_box(bad, 100, 80)


def test_detector_maps_boxes_to_the_photos_pixels(tmp_path):
    # A 832 x 208 photo stretched to 416 x 416: x halves, y doubles. Input box (100, 40, 200, 120).
    install_fake(tmp_path, [(32, 2, 4, CHAIR, 0.9, (44.0, 40.0, 56.0, 40.0))])  # centre (144, 80)
    found = Detector(tmp_path).detect(Image.new("RGB", (832, 208), "white"))
    assert [(o.label, round(o.score, 3)) for o in found] == [("chair", 0.9)]
    np.testing.assert_allclose(found[0].box, (200.0, 20.0, 400.0, 60.0), atol=0.05)


def test_boxes_are_clipped_to_the_photo_and_the_cap_holds(tmp_path):
    # 300 separate objects (one per stride-8 cell of 15 rows x 20 cols), one running off the image.
    objects = [(8, r * 3, c * 2, CUP, 0.5 + 0.001 * (r * 20 + c), (3.0, 3.0, 3.0, 3.0))
               for r in range(15) for c in range(20)]
    objects.append((32, 12, 12, CHAIR, 0.99, (10.0, 10.0, 200.0, 200.0)))
    install_fake(tmp_path, objects)
    det = Detector(tmp_path)
    found = det.detect(Image.new("RGB", (416, 416), "white"), max_objects=20)
    assert len(found) == 20
    assert found[0].label == "chair" and found[0].box == pytest.approx((390.0, 390.0, 416.0, 416.0))
    assert [o.score for o in found] == sorted((o.score for o in found), reverse=True)
    assert all(0 <= o.box[0] < o.box[2] <= 416 and 0 <= o.box[1] < o.box[3] <= 416 for o in found)
    assert len(det.detect(Image.new("RGB", (416, 416)), max_objects=500)) == 301


def test_a_photo_with_no_objects_gives_none(tmp_path):
    install_fake(tmp_path, [(8, 1, 1, CUP, 0.2, (3.0, 3.0, 3.0, 3.0))])  # under the threshold
    assert Detector(tmp_path).detect(Image.new("RGB", (64, 48))) == []


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered", "no record"])
def test_a_damaged_detector_is_refused_with_the_install_command(tmp_path, damage):
    model = install_fake(tmp_path, [])
    assert detector_model_path(tmp_path, SPEC) == model
    data = model.read_bytes()
    if damage == "missing":
        model.unlink()
    elif damage == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif damage == "altered":
        model.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        (model.parent / "detector.json").unlink()
    with pytest.raises(DetectorUnavailableError) as info:
        Detector(tmp_path).detect(Image.new("RGB", (32, 32)))
    assert "python -m app.cli detector install" in info.value.user_message()


def _cli(*args, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_objects_command_json_lines_no_objects_and_bad_input(tmp_path):
    cache = tmp_path / "xdg"
    install_fake(cache / "reverse-image-search", cup_at_check_box())
    blank = tmp_path / "blank.png"
    Image.new("RGB", (50, 40)).save(blank)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    proc = _cli("objects", str(DATA / "photo_coffee.png"), str(bad), "--json", cache=cache)
    assert proc.returncode == 2, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["query"].endswith("photo_coffee.png")
    assert [o["label"] for o in lines[0]["objects"]] == ["cup"]
    assert box_iou(np.array([lines[0]["objects"][0]["box"]]), np.array([SPEC.check_box]))[0, 0] > 0.95
    assert set(lines[1]) == {"query", "error"} and "\n" not in lines[1]["error"]
    proc = _cli("objects", str(blank), "--min-score", "0.95", cache=cache)  # the stand-in's cup scores 0.9
    assert proc.returncode == 0 and "no objects found" in proc.stdout


def test_objects_command_without_the_detector_says_how_to_install_it(tmp_path):
    proc = _cli("objects", str(DATA / "photo_coffee.png"), "--json", cache=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "python -m app.cli detector install" in proc.stderr
    assert "Traceback" not in proc.stderr
    status = _cli("detector", "status", "--json", cache=tmp_path)
    assert status.returncode == 1 and json.loads(status.stdout)["status"] == "missing"


def test_registry_entries_are_consistent():
    for spec in DETECTORS.values():
        assert spec.graph_file in {f.path for f in spec.files}
        assert all(len(f.sha256) == 64 and f.size > 0 for f in spec.files)
        assert len(spec.labels) == len(set(spec.labels)) and spec.channel_order in ("BGR", "RGB")
        assert spec.input_size % max(spec.strides) == 0 and spec.license


# --- the real detector ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_detector():
    from app.config import Config

    cache = Config().cache_dir
    try:
        detector_model_path(cache, SPEC)
    except DetectorUnavailableError as exc:
        if os.environ.get("RIS_REQUIRE_DETECTOR") == "1":  # scripts/test.sh installs it: CI runs these
            raise
        pytest.skip(f"the real detector is not installed: {exc.user_message()}")
    return Detector(cache).load()


def test_real_detector_finds_the_cup_over_the_cup(real_detector):
    found = real_detector.detect(DATA / "photo_coffee.png")
    cups = [o for o in found if o.label == "cup"]
    assert cups, [o.to_json() for o in found]
    x1, y1, x2, y2 = cups[0].box
    cx1, cy1, cx2, cy2 = SPEC.check_box  # the cup, drawn by hand
    assert x1 <= cx1 + 15 and y1 <= cy1 + 15 and x2 >= cx2 - 15 and y2 >= cy2 - 15  # covers the cup
    assert box_iou(np.array([cups[0].box]), np.array([SPEC.check_box]))[0, 0] >= 0.5


def test_real_detector_checksum_is_checked_on_the_installed_file(real_detector):
    path = detector_dir(real_detector.cache_dir, SPEC) / MODEL_FILE
    assert detector_model_path(real_detector.cache_dir, SPEC) == path
