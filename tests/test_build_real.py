"""End to end on the real Caltech101 copy in ../shared (developers and CI); skipped elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from app.config import Config
from app.core.datasets import CALTECH_DIR, load_dataset
from app.core.features import load_features
from app.service.search import SearchService

ROOT = Path(__file__).resolve().parent.parent
CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101"
DATA = Path(__file__).parent / "data"
LIMIT = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CALTECH / CALTECH_DIR).is_dir(),
        reason=f"the real Caltech101 copy is not here ({CALTECH}); it only exists on developer/CI machines",
    ),
]


@pytest.fixture(scope="module")
def caltech_build(tmp_path_factory, cli_env):
    out = tmp_path_factory.mktemp("caltech-real")
    proc = subprocess.run(
        [sys.executable, "scripts/build_index.py", "--kind", "caltech101", "--data", str(CALTECH),
         "--weights", "untrained", "--limit", str(LIMIT), "--indexes", str(out / "indexes"),
         "--features", str(out / "features"), "--no-progress"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_real_caltech_sample_builds_with_tuning(caltech_build):
    out, proc = caltech_build
    assert f"built caltech101: {LIMIT} images indexed, 0 skipped" in proc.stdout
    assert "recall@5" in proc.stdout  # the tuned (default) path
    manifest = json.loads((out / "indexes" / "caltech101.manifest.json").read_text())
    assert manifest["count"] == LIMIT and manifest["limit"] == LIMIT and manifest["kind"] == "caltech101"
    assert manifest["dataset_root"] == str(CALTECH.resolve())
    assert manifest["tuning"]["chosen"]["recall_at_5"] > 0
    table = load_features(out / "features", "caltech101")[1].to_json()
    labels = Counter(it["label"] for it in table["items"])
    categories = load_dataset("caltech101", CALTECH).categories
    assert set(labels) == set(categories) and len(categories) == 100  # every category; no background, no Faces_easy
    assert sorted(it["path"] for it in table["items"]) == sorted(
        it.path for it in load_dataset("caltech101", CALTECH, limit=LIMIT).items)


def test_real_caltech_search(caltech_build, embedder):
    out, _ = caltech_build
    config = Config(indexes_dir=out / "indexes", features_dir=out / "features", weights="untrained")
    service = SearchService(config, embedder=embedder)
    col = service.collection("caltech101")
    assert col.image_root == (CALTECH / CALTECH_DIR).resolve()

    for item_id in range(0, len(col), 7):  # collection images, by file: themselves at rank 1
        result = service.search_new_image(col.item_path(item_id), "caltech101", k=5)
        assert result.hits[0].id == item_id and result.hits[0].score == pytest.approx(1.0, abs=1e-4)
    for item_id in range(len(col)):
        assert service.search_item("caltech101", item_id, k=5).hits[0].id == item_id

    for photo in ("photo_chelsea.jpg", "photo_camera.png"):  # real photos from outside the collection
        result = service.search_new_image(DATA / photo, "caltech101", k=5)
        assert len(result.hits) == 5 and len({h.id for h in result.hits}) == 5
        assert all(h.abs_path.is_file() and h.label in col.table.label(h.id) for h in result.hits)
        assert result.hits[0].score < 0.9999


# -- the real model on a real sample -----------------------------------------------------------------

REAL_LIMIT = 505  # 5 images per category: 4 relevant others per query, so P@5 is at most 0.8
# Measured (exact search, leave-one-out, EfficientNet-Lite0): P@5 0.555, mHR@10 0.809 on this sample;
# the untrained network gives ~0.1. The floors leave a 0.1 margin for engine and platform differences.
P5_FLOOR, MHR_FLOOR = 0.45, 0.70
FELINES = {"wild_cat", "cougar_face", "cougar_body", "Leopards"}  # Caltech101 has no house cat


@pytest.fixture(scope="module")
def lite0_build(tmp_path_factory, cli_env):
    out = tmp_path_factory.mktemp("caltech-lite0")
    dirs = ["--indexes", str(out / "indexes"), "--features", str(out / "features")]
    build = subprocess.run(
        [sys.executable, "scripts/build_index.py", "--kind", "caltech101", "--data", str(CALTECH),
         "--model", "efficientnet-lite0", "--limit", str(REAL_LIMIT), "--no-progress", *dirs],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=900,
    )
    assert build.returncode == 0, build.stderr
    return out, dirs


def test_real_model_sample_quality_is_above_the_floor(lite0_build, cli_env):
    out, dirs = lite0_build
    proc = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--model", "efficientnet-lite0", "--data", str(CALTECH),
         "--json", *dirs], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["model"] == "efficientnet-lite0" and r["count"] == REAL_LIMIT and not r["untrained"]
    assert r["exact"]["precision_at_5"] >= P5_FLOOR and r["exact"]["mhr_at_10"] >= MHR_FLOOR, r["exact"]
    assert r["ann"]["precision_at_5"] >= P5_FLOOR, r["ann"]


def test_real_model_cli_search_finds_a_feline_and_a_cup(lite0_build, cli_env):
    out, dirs = lite0_build
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", str(DATA / "photo_chelsea.jpg"), str(DATA / "photo_coffee.png"),
         "--collection", "caltech101", "--model", "efficientnet-lite0", "--json", "-k", "3", *dirs],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cat, coffee = (json.loads(line) for line in proc.stdout.splitlines())
    assert cat["model"] == coffee["model"] == "efficientnet-lite0"
    assert cat["hits"][0]["label"] in FELINES and coffee["hits"][0]["label"] == "cup", (cat, coffee)
    # the default model refuses this index, naming the model it was built with
    wrong = subprocess.run([sys.executable, "-m", "app.cli", "search", str(DATA / "photo_chelsea.jpg"),
                            "--collection", "caltech101", "--weights", "untrained", *dirs],
                           cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "built with model efficientnet-lite0" in wrong.stderr
    assert "--model efficientnet-lite0" in wrong.stderr and "Traceback" not in wrong.stderr
