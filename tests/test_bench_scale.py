"""The scale benchmark: its vectors (seeded, independent of N, cached), exact ground truth, recall, targets,
the size flags, and a tiny full run (N = 2,000 and 5,000 from a generated 32-d source collection) through
the library and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from app.cli.main import main
from app.config import Config
from app.errors import DatasetError
from app.metrics import scale_data as sd
from app.metrics.scale import (
    CHANGE,
    TARGETS,
    ScaleOptions,
    check_targets,
    format_scale,
    recall,
    run_scale,
    sizes_from,
)
from app.metrics.scale_build import write_collection

ROOT = Path(__file__).resolve().parent.parent
DIM = 32
REAL = 600  # the generated source's "real" vectors


def _source(seed: int = 5) -> sd.SourceVectors:
    """30 seeded clusters of unit vectors, labelled by cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, DIM)).astype(np.float32)
    which = rng.integers(0, 30, size=REAL)
    v = centres[which] + 0.35 * rng.standard_normal((REAL, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return sd.SourceVectors("src", v, [(f"c{c}",) for c in which], "efficientnet-lite0", "gen/32", "imagenet", "fp-gen")


@pytest.fixture(scope="module")
def source_config(tmp_path_factory) -> Config:
    """A built 32-d source collection named ``src`` (written by the benchmark's own writer)."""
    base = tmp_path_factory.mktemp("scale-src")
    cfg = Config(indexes_dir=base / "indexes", features_dir=base / "features", cache_dir=base / "cache", workers=0)
    src = _source()
    write_collection(cfg, "src", src, src.vectors, base / "photos", dba_on=False, factory="IVF8,Flat", nprobe=8)
    return cfg


# -- the vectors -----------------------------------------------------------------------------------


def test_noisy_vectors_keep_the_real_rows_and_add_seeded_unit_copies(tmp_path):
    src = _source()
    v = sd.noisy_vectors(src, 2000, seed=1, sigma=0.05, cache=tmp_path)
    assert v.shape == (2000, DIM) and v.dtype == np.float32
    np.testing.assert_array_equal(v[:REAL], src.vectors)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    origin = src.vectors[np.arange(REAL, 2000) % REAL]
    cos = np.einsum("ij,ij->i", v[REAL:], origin)
    assert 0.5 < cos.min() and cos.max() < 1.0  # copies, near their origin, never equal to it
    assert abs(sd.copy_cosines(src, v) - float(cos.mean())) < 0.02
    # a row does not depend on N; another seed gives other copies
    small = sd.noisy_vectors(src, 1000, seed=1, sigma=0.05, cache=tmp_path / "other")
    np.testing.assert_array_equal(small, v[:1000])
    assert not np.allclose(sd.noisy_vectors(src, 1000, seed=2, sigma=0.05, cache=tmp_path)[REAL:], v[REAL:1000])


def test_noisy_vectors_are_reused_from_the_cache(tmp_path):
    src = _source()
    sd.noisy_vectors(src, 1500, seed=0, sigma=0.01, cache=tmp_path)
    (made,) = tmp_path.glob("vectors-1500-*.npy")
    stamp = made.stat().st_mtime_ns
    again = sd.noisy_vectors(src, 1500, seed=0, sigma=0.01, cache=tmp_path)
    assert made.stat().st_mtime_ns == stamp and again.shape == (1500, DIM)
    sd.noisy_vectors(src, 1500, seed=0, sigma=0.02, cache=tmp_path)
    assert len(list(tmp_path.glob("vectors-1500-*.npy"))) == 2  # another sigma is another file


def test_synthetic_table_has_made_up_stamps_and_the_origins_labels(tmp_path):
    src = _source()
    table = sd.synthetic_table(src, 1300, "t", tmp_path)
    assert len(table) == 1300 and table.paths[REAL + 3] == f"synthetic/{REAL + 3:07d}.jpg"
    assert table.labels[REAL + 3] == src.labels[3]
    assert len({st.hash for st in table.stamps}) == 1300 and all(m is not None for m in table.meta)


def test_evict_and_file_state(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 10_000)
    assert sd.evict([f, tmp_path / "missing"]) == 10_000
    before = sd.files_state([tmp_path])
    (tmp_path / "b.bin").write_bytes(b"y" * 300)
    with open(f, "ab") as fh:  # appended in place: only the growth counts
        fh.write(b"z" * 50)
    assert sd.changed_bytes(before, sd.files_state([tmp_path])) == 350
    before = sd.files_state([tmp_path])
    tmp = tmp_path / "a.tmp"
    tmp.write_bytes(b"w" * 20)
    os.replace(tmp, f)  # replaced by a new file: counts whole
    assert sd.changed_bytes(before, sd.files_state([tmp_path])) == 20


# -- ground truth, recall, targets, sizes --------------------------------------------------------------


def test_recall_counts_the_true_top_k_found():
    truth = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    assert recall(truth, truth) == 1.0
    assert recall(np.array([[5, 4, 3, 2, 1], [6, 7, -1, -1, 0]]), truth) == pytest.approx(0.7)


def test_targets_pass_and_fail():
    good = {"n": 1_000_000, "query_p50_ms": 2.0, "index_bytes_per_vector": 60.0, "recall_at_5": 0.96,
            "startup_warm_s": 1.0, "add100_fraction": 0.001}
    t = check_targets(good)
    assert t["all_pass"] and set(TARGETS) <= set(t)
    bad = check_targets({**good, "recall_at_5": 0.9, "add100_fraction": None})
    assert not bad["all_pass"] and bad["recall_at_5"]["result"] == "FAIL" and bad["add100_fraction"]["result"] == "FAIL"
    assert bad["query_p50_ms"]["result"] == "PASS"


def test_sizes_from_the_flags():
    assert sizes_from(None, None) == (10_000, 100_000, 1_000_000)
    assert sizes_from(200_000, None) == (10_000, 100_000, 200_000)
    assert sizes_from(None, "5000,2000") == (2000, 5000)
    assert sizes_from(3000, "2000,5000") == (2000, 3000)
    with pytest.raises(DatasetError):
        sizes_from(None, "10k")
    with pytest.raises(DatasetError):
        sizes_from(500, None)


def test_bad_flags_are_one_line_errors(capsys, source_config):
    cfg = source_config
    assert main(["bench-scale", "--sizes", "ten", "--indexes", str(cfg.indexes_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sizes") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["bench-scale", "--n", "2000", "--collection", "nope", "--indexes", str(cfg.indexes_dir),
                 "--features", str(cfg.features_dir)]) == 2
    assert "nope" in capsys.readouterr().err


# -- a tiny full run -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(source_config, tmp_path_factory):
    work = tmp_path_factory.mktemp("scale-work")
    opts = ScaleOptions(source_config, source="src", sizes=(2000, 5000), work=work, queries=40, startup_runs=1)
    return run_scale(opts), work


KEYS = ("n", "build_s", "train_s", "commit_s", "dba_s", "index_factory", "index_bytes_per_vector", "rss_mb",
        "startup_cold_s", "startup_warm_s", "query_p50_ms", "query_p99_ms", "query_p50_ms_no_qe",
        "query_p99_ms_no_qe", "recall_at_5", "add100_s", "add100_bytes_written", "add100_fraction",
        "add100_files_bytes", "delete100_s", "delete100_bytes_written", "delete100_fraction", "table_bytes",
        "vectors_bytes")


@pytest.mark.slow
def test_tiny_run_reports_every_key_with_sane_values(tiny_run):
    result, work = tiny_run
    assert [r["n"] for r in result["results"]] == [2000, 5000]
    for r in result["results"]:
        assert set(KEYS) <= set(r), set(KEYS) - set(r)
        assert r["build_s"] >= 0 and r["index_bytes_per_vector"] > 0 and r["rss_mb"] > 0
        assert 0 < r["startup_warm_s"] and 0 < r["startup_cold_s"]
        assert 0 < r["query_p50_ms"] <= r["query_p99_ms"] and 0 < r["query_p50_ms_no_qe"] <= r["query_p99_ms_no_qe"]
        assert 0.0 <= r["recall_at_5"] <= 1.0 and r["recall_at_5"] > 0.5  # a sane index on clustered data
        assert r["vectors_bytes"] >= r["n"] * DIM * 4
        for change in ("add100", "delete100"):
            written, base = r[f"{change}_bytes_written"], r[f"{change}_base_bytes"]
            assert written > 0 and r[f"{change}_files_bytes"] > 0
            assert r[f"{change}_fraction"] == pytest.approx(written / base, abs=1e-4)
        assert r["add100_base_bytes"] == r["table_bytes"] + r["vectors_bytes"]  # the collection as built
        assert r["delete100_base_bytes"] > r["add100_base_bytes"]  # 100 rows more
        assert r["add100_index"] in ("updated in place", "retrained") and r["delete100_index"] != "unchanged"
    assert result["targets"]["n"] == 5000 and set(TARGETS) <= set(result["targets"])
    assert 0.5 < result["vectors"]["mean_cosine_copy_to_origin"] < 1.0
    assert result["total_s"] > 0
    assert not (work / "n2000").exists() and any((work / "cache").glob("vectors-5000-*.npy"))  # kept for reruns
    text = format_scale(result)
    assert "recall@5" in text and "Targets at N=5000" in text and "POSIX_FADV_DONTNEED" in text


@pytest.mark.slow
def test_cli_json_parses_and_a_temporary_work_folder_is_removed(source_config, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the default work folder goes
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    cfg = source_config
    rc = main(["bench-scale", "--n", "2000", "--collection", "src", "--indexes", str(cfg.indexes_dir),
               "--features", str(cfg.features_dir), "--queries", "20", "--startup-runs", "1", "--no-dba",
               "--factory", "IVF16,PQ8", "--nprobe", "8", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    (r,) = result["results"]
    assert r["n"] == 2000 and r["index_factory"] == "IVF16,PQ8" and r["dba_s"] is None
    assert r["add100_bytes_written"] > 0 and result["settings"]["dba"] is False
    assert not [p for p in os.listdir(tmp_path) if p.startswith("bench-scale-")]  # cleaned without --keep
    assert CHANGE == 100
