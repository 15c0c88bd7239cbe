"""Retrieval-quality evaluation: metrics by hand, leave-one-out, the sweep, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.index.faiss_index import IndexConfig
from app.index.faiss_store import load_index
from app.metrics.evaluate import (
    evaluate_collection,
    exact_neighbours,
    format_result,
    ranking_metrics,
    relevant_counts,
    retune_collection,
    sweep_configs,
    sweep_grid,
)

ROOT = Path(__file__).resolve().parent.parent


def test_relevant_counts_single_and_multi_label():
    caltech = [("a",), ("a",), ("b",), ("a",), ()]
    assert relevant_counts(caltech).tolist() == [2, 2, 0, 2, 0]
    voc = [("cat", "dog"), ("dog",), ("car",), ("cat",), ("car", "person")]
    # item 0 shares a class with 1 (dog) and 3 (cat); item 4 with 2 (car).
    assert relevant_counts(voc).tolist() == [2, 1, 1, 1, 1]


def test_ranking_metrics_by_hand():
    labels = [("a",), ("a",), ("a",), ("b",), ("b",), ("c",)]
    n_rel = relevant_counts(labels)
    # Query 0 (2 relevant: 1, 2): ranked 3, 1, 4, 2 -> hits at ranks 2 and 4.
    # Query 3 (1 relevant: 4): ranked 4 first. Query 5 has no relevant item: left out.
    m = ranking_metrics([[3, 1, 4, 2], [4, 0, 1, 2], [0, 1, 2, 3]], [0, 3, 5], labels, n_rel, k=10)
    ap0 = (1 / 2 + 2 / 4) / 2
    assert m["queries"] == 2
    assert m["map_at_10"] == pytest.approx(round((ap0 + 1.0) / 2, 4))
    assert m["mhr_at_10"] == pytest.approx(1.0)
    assert m["precision_at_5"] == pytest.approx(round((2 / 5 + 1 / 5) / 2, 4))


def test_multi_label_relevance_is_any_shared_class():
    labels = [("cat", "dog"), ("dog",), ("car",)]
    m = ranking_metrics([[1, 2]], [0], labels, relevant_counts(labels), k=10)
    assert m["map_at_10"] == 1.0 and m["precision_at_5"] == pytest.approx(0.2)


def test_exact_neighbours_exclude_the_query():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((50, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[7] = v[3]  # a duplicate: found, but the query itself never is
    ids = exact_neighbours(v, np.array([3, 10]), 5)
    assert 3 not in ids[0] and ids[0][0] == 7
    assert 10 not in ids[1]


def test_evaluate_small_collection(small_collection):
    config, result, _ = small_collection
    r = evaluate_collection(config, "shapes")
    json.dumps(r)
    assert r["count"] == 24 and r["queries"] == 24 and r["k"] == 10
    for key in ("map_at_10", "mhr_at_10", "precision_at_5"):
        assert 0.0 <= r["exact"][key] <= 1.0 and 0.0 <= r["ann"][key] <= 1.0
        assert r[key] == r["ann"][key]
    assert 0.0 <= r["ann_recall_at_5"] <= 1.0
    assert r["index_bytes"] == result.manifest["index_bytes"] and r["flat_bytes"] == 24 * 2048 * 4
    assert r["search_ms_per_query"] > 0 and r["untrained"] is True
    text = format_result(r)
    assert "mAP@10" in text and "UNTRAINED" in text

    sample = evaluate_collection(config, "shapes", queries=10, seed=1)
    assert sample["queries"] == 10


@pytest.mark.slow
def test_sweep_rows_include_the_old_demo_reference():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2500, 256)).astype(np.float32) * (1.0 / np.sqrt(1 + np.arange(256)))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = sweep_configs(v, IndexConfig("PCAR128,IVF64,SQ8", nprobe=16, k_factor=1))
    names = {(r["factory"], r["nprobe"]) for r in rows}
    assert ("Flat", 1) in names and ("IVF100,PQ8np", 1) in names
    flat = next(r for r in rows if r["factory"] == "Flat")
    assert flat["recall_at_5"] == 1.0 and 99 < flat["pct_of_flat"] < 101
    assert any(r["note"] == "tuned choice" for r in rows)
    for r in rows:
        assert 0 <= r["recall_at_5"] <= 1 and r["bytes"] > 0 and r["ms_per_query"] > 0


def test_sweep_grid_adds_the_tuned_dimension():
    grid = sweep_grid(8000, 2048, IndexConfig("PCAR320,IVF64,SQ8", nprobe=16))
    assert any(f.startswith("PCAR320,") for f, *_ in grid)
    assert grid[1][0] == "IVF100,PQ8np" and grid[1][1][0] == 1


def test_retune_keeps_the_manifest_and_loads(small_collection, tmp_path):
    config, result, _ = small_collection
    copy = config.with_(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features")
    shutil.copytree(config.indexes_dir, copy.indexes_dir)
    shutil.copytree(config.features_dir, copy.features_dir)
    m = retune_collection(copy, "shapes")
    old = result.manifest
    for key in ("weights_id", "collection", "dataset_root", "features_fingerprint"):
        assert m.get(key) == old.get(key)
    assert m["tuning"]["chosen"]["factory"] == m["factory"]
    index, _ = load_index(copy.indexes_dir, "shapes", weights_id=old["weights_id"])
    assert index.ntotal == 24


@pytest.mark.slow
def test_cli_json(small_collection):
    config, _, data = small_collection
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--kind", "folder", "--name", "shapes",
         "--data", str(data), "--weights", "untrained", "--indexes", str(config.indexes_dir),
         "--features", str(config.features_dir), "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in ("map_at_10", "mhr_at_10", "precision_at_5", "exact", "ann", "ann_recall_at_5", "index_bytes",
                "flat_bytes", "search_ms_per_query"):
        assert key in r
