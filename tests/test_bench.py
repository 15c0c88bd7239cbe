"""The speed benchmark: target checks, the 12 MP test image, the ready probe, and a tiny full run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.core.images import load_image
from app.metrics.bench import check_targets, format_bench, make_12mp_jpeg, ready_probe
from tests.helpers import make_caltech_layout

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "engine_coffee.jpg"


def _fake() -> dict:
    return {"bare_forward_ms_p50": 100.0, "query_new_ms_p50": 70.0, "query_12mp_ms_p50": 130.0,
            "query_reuse_ms_p50": 0.4, "build_img_per_s": 20.0, "bare_batched_img_per_s": 10.0, "startup_s": 3.0}


def test_targets_pass_and_fail_with_ratios():
    t = {x["metric"]: x for x in check_targets(_fake())}
    assert t["query_new_ms_p50"]["pass"] and t["query_new_ms_p50"]["limit"] == 80.0
    assert t["query_new_ms_p50"]["ratio"] == pytest.approx(70 / 80, abs=1e-3)
    assert not t["query_12mp_ms_p50"]["pass"] and t["query_12mp_ms_p50"]["limit"] == 120.0
    assert t["query_reuse_ms_p50"]["pass"] and t["build_img_per_s"]["pass"] and t["startup_s"]["pass"]
    slow_build = dict(_fake(), build_img_per_s=14.0)
    assert not {x["metric"]: x for x in check_targets(slow_build)}["build_img_per_s"]["pass"]


def test_12mp_jpeg_is_a_large_noisy_photo_decoded_in_draft_mode(tmp_path):
    out = make_12mp_jpeg(PHOTO, tmp_path / "big.jpg", size=(1600, 1200))
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (1600, 1200)
    small = load_image(out, draft_size=232)
    assert min(small.size) >= 232 and small.size[0] < 1600  # DCT-scaled decode


def test_ready_probe(small_collection):
    config, _, data = small_collection
    image = sorted(data.rglob("*.jpg"))[0]
    info = ready_probe(config, ["shapes"], image)
    assert info["collections"] == {"shapes": 24} and info["rss_mb"] > 50
    assert info["engine"] == "onnx"


@pytest.mark.slow
def test_full_run_on_a_tiny_caltech_layout(tmp_path, model_cache):
    data = make_caltech_layout(tmp_path / "caltech", per_class=9)
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--weights", "untrained", "--data", str(data),
           "--indexes", str(tmp_path / "indexes"), "--features", str(tmp_path / "features"),
           "--cache-dir", str(model_cache), "--queries", "30", "--build-images", "16", "--second-limit", "8",
           "--startup-runs", "1", "--workers", "0", "--phone-photos", "2", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout)
    for key in ("bare_forward_ms_p50", "query_new_ms_p50", "query_new_ms_p95", "query_12mp_ms_p50",
                "query_reuse_ms_p50", "build_img_per_s", "bare_batched_img_per_s", "startup_s", "rss_mb"):
        assert isinstance(r[key], float) and r[key] > 0, key
    for stage in ("hash", "decode", "copy", "preprocess", "embed", "search", "total"):
        assert r[f"query_new_{stage}_ms_p50"] <= r[f"query_new_{stage}_ms_p95"]
    # the new-image time is the app's whole path: hashing, decoding and the query copy included
    parts = sum(r[f"query_new_{s}_ms_p50"] for s in ("hash", "decode", "copy", "embed"))
    assert r["query_new_hash_ms_p50"] > 0 and r["query_new_copy_ms_p50"] > 0
    assert r["query_new_ms_p50"] >= 0.8 * parts
    assert len(r["targets"]) == 5 and all("pass" in t for t in r["targets"])
    d = r["details"]
    assert d["second_is_substitute"] and d["collections"]["voc2012-substitute"] == 8
    assert "voc2012-substitute" in format_bench(r)
    phone = r["phone"]  # 2 generated 12 MP JPEGs and HEICs beside 2 Caltech101 images
    assert set(phone["rates"]) == {"caltech101", "jpeg-12mp", "heic-12mp"}
    assert all(v["images"] == 2 and v["img_per_s"] > 0 for v in phone["rates"].values())
    assert phone["jpeg_12mp_ratio"] > 0 and phone["stages_ms"]["heic-12mp"]["decode_full"] > 0
    assert "12 MP JPEG builds at" in format_bench(r)
