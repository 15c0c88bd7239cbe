"""The command line, run as people run it: ``python -m app.cli`` and ``scripts/build_index.py``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.config import Config
from app.features import feature_paths
from app.search import SearchService
from tests.helpers import make_image_folder, temp_files

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"


def run(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def search_args(config: Config, image, *extra: str) -> list[str]:
    return ["-m", "app.cli", "search", str(image), "--indexes", str(config.indexes_dir),
            "--features", str(config.features_dir), "--weights", "untrained", *extra]


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


# -- python -m app.cli search ------------------------------------------------------------------


def test_search_prints_a_table_with_k_rows(small_collection, cli_env):
    config, _, data = small_collection
    query = sorted(data.glob("squares/*.jpg"))[1]
    proc = run(search_args(config, query, "--collection", "shapes", "-k", "5"), cli_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "label", "file"] and set(lines[1].replace(" ", "")) == {"-"}
    rows = [line.split() for line in lines[2 : lines.index("")]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][2:] == ["squares", "squares/" + query.name] and float(rows[0][1]) == pytest.approx(1.0, abs=1e-3)
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert "5 hits in shapes (24 images)" in proc.stdout
    assert "UNTRAINED" in proc.stderr  # people are told the results mean nothing


def test_search_json_is_parseable_with_hits(small_collection, cli_env):
    config, _, data = small_collection
    query = DATA / "photo_rocket.jpg"
    proc = run(search_args(config, query, "--collection", "shapes", "-k", "7", "--json"), cli_env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["collection"] == "shapes" and out["query"] == str(query)
    assert "untrained" in out["weights_id"] and out["engine"] in ("onnx", "torch-cpu", "torch-cuda")
    hits = out["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert len({h["id"] for h in hits}) == 7 and all(0 <= h["id"] < 24 for h in hits)
    assert all((data / h["path"]).is_file() and h["label"] == h["path"].split("/")[0] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert set(out["timings_ms"]) == {"decode", "embed", "search", "total"}


@pytest.mark.parametrize("case", ["not-an-image", "empty", "missing-file"])
def test_bad_image_exits_non_zero_with_a_one_line_reason(small_collection, cli_env, tmp_path, case):
    config, _, _ = small_collection
    image = tmp_path / "holiday.jpg"
    if case == "not-an-image":
        image.write_text("these are my notes, renamed .jpg\n")
    elif case == "empty":
        image.write_bytes(b"")
    proc = run(search_args(config, image, "--collection", "shapes"), cli_env)
    assert_one_line_error(proc, "holiday.jpg" if case != "not-an-image" else "not an image")
    assert proc.stdout == ""


def test_missing_index_exits_non_zero_with_the_build_command(small_collection, cli_env, tmp_path):
    config, _, data = small_collection
    image = next(data.glob("*/*.jpg"))
    proc = run(search_args(config, image, "--collection", "caltech101"), cli_env)
    assert_one_line_error(proc, "has not been built", "python scripts/build_index.py --collection caltech101")
    empty = Config(indexes_dir=tmp_path / "none", features_dir=tmp_path / "none")
    proc = run(search_args(empty, image, "--collection", "shapes"), cli_env)
    assert_one_line_error(proc, "shapes")


def test_other_weights_are_refused_with_both_ids(small_collection, cli_env):
    config, result, data = small_collection
    image = next(data.glob("*/*.jpg"))
    args = search_args(config, image, "--collection", "shapes")
    args[args.index("untrained")] = "imagenet"  # no download happens: the index is checked first
    line = assert_one_line_error(run(args, cli_env), result.manifest["weights_id"], "IMAGENET1K_V2")
    assert "--weights untrained" in line


def test_list_shows_the_built_collection(small_collection, cli_env):
    config, _, _ = small_collection
    proc = run(["-m", "app.cli", "list", "--json", "--indexes", str(config.indexes_dir),
                "--features", str(config.features_dir), "--weights", "untrained"], cli_env)
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["shapes"]["ready"] is True and infos["shapes"]["size"] == 24
    assert infos["caltech101"]["ready"] is False and "build_index.py" in infos["caltech101"]["build_command"]


# -- scripts/build_index.py --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "pics"
    make_image_folder(root, classes=("circles", "stripes", "checks"), per_class=3, seed=21)
    return root


def build_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["scripts/build_index.py", "--collection", "folder", "--data", str(data), "--name", "tiny",
            "--weights", "untrained", "--limit", "8", "--indexes", str(out / "indexes"),
            "--features", str(out / "features"), "--workers", "0", "--batch-size", "2", "--chunk-size", "2",
            "--factory", "IVF2,Flat", "--nprobe", "1", "--no-progress", *extra]  # tuning: see test_build_real


@pytest.fixture(scope="module")
def reference_build(tiny_folder, cli_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref-build")
    proc = run(build_args(tiny_folder, out), cli_env)
    return out, proc


def test_build_script_builds_a_sample_and_prints_the_summary(reference_build, embedder):
    out, proc = reference_build
    assert proc.returncode == 0, proc.stderr
    assert "built tiny: 8 images indexed, 0 skipped" in proc.stdout
    assert "embedding:" in proc.stdout and "index:" in proc.stdout and "resumed" not in proc.stdout
    assert "UNTRAINED" in proc.stderr
    assert "index: IVF2,Flat nprobe=1" in proc.stdout
    manifest = json.loads((out / "indexes" / "tiny.manifest.json").read_text())
    assert manifest["count"] == 8 and manifest["limit"] == 8 and manifest["collection"] == "folder"
    assert manifest["factory"] == "IVF2,Flat" and manifest["tuning"] == {"fixed": True}
    assert not (out / "features" / "tiny.parts").exists() and temp_files(out) == []
    # labels spread over the three classes, and the result is searchable in-process
    table = json.loads(feature_paths(out / "features", "tiny")[1].read_text())
    assert {it["label"] for it in table["items"]} == {"circles", "stripes", "checks"}
    config = Config(indexes_dir=out / "indexes", features_dir=out / "features", weights="untrained")
    hits = SearchService(config, embedder=embedder).search_item("tiny", 3, k=8).hits
    assert hits[0].id == 3 and sorted(h.id for h in hits) == list(range(8))  # all, though nprobe=1 of 2


def test_build_script_refuses_a_missing_data_folder(cli_env, tmp_path):
    proc = run(build_args(tmp_path / "nowhere", tmp_path), cli_env)
    assert_one_line_error(proc, "nowhere", "--data")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_build_resumes_to_identical_output(reference_build, tiny_folder, cli_env, tmp_path, sig):
    ref, ref_proc = reference_build
    assert ref_proc.returncode == 0, ref_proc.stderr
    proc = subprocess.Popen([sys.executable, *build_args(tiny_folder, tmp_path)], cwd=ROOT, env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_chunk = tmp_path / "features" / "tiny.parts" / "chunk-000000.npz"
    deadline = time.monotonic() + 180
    while not first_chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), stderr
    if sig == signal.SIGINT:
        assert "interrupted" in stderr and "Traceback" not in stderr
    assert first_chunk.exists()
    assert not feature_paths(tmp_path / "features", "tiny")[0].exists()
    assert not (tmp_path / "indexes" / "tiny.faiss").exists()

    again = run(build_args(tiny_folder, tmp_path), cli_env)
    assert again.returncode == 0, again.stderr
    assert "built tiny: 8 images indexed" in again.stdout and "resumed from an earlier run" in again.stdout
    new_npy, new_table = feature_paths(tmp_path / "features", "tiny")
    ref_npy, ref_table = feature_paths(ref / "features", "tiny")
    assert new_npy.read_bytes() == ref_npy.read_bytes()
    a, b = json.loads(new_table.read_text()), json.loads(ref_table.read_text())
    a.pop("created"), b.pop("created")
    assert a == b
    assert np.load(new_npy).shape == (8, 2048)
    assert not (tmp_path / "features" / "tiny.parts").exists() and temp_files(tmp_path) == []


def test_cli_build_subcommand_matches_the_script(reference_build, tiny_folder, cli_env, tmp_path, monkeypatch,
                                                 capsys):
    from app.cli import main

    ref, ref_proc = reference_build
    assert ref_proc.returncode == 0, ref_proc.stderr
    monkeypatch.setenv("XDG_CACHE_HOME", cli_env["XDG_CACHE_HOME"])  # the session's ONNX export
    args = build_args(tiny_folder, tmp_path)[1:]  # the script's options, without the script
    assert main(["build", *args]) == 0
    out = capsys.readouterr()
    assert "built tiny: 8 images indexed, 0 skipped" in out.out and "UNTRAINED" in out.err
    new_npy, ref_npy = feature_paths(tmp_path / "features", "tiny")[0], feature_paths(ref / "features", "tiny")[0]
    assert new_npy.read_bytes() == ref_npy.read_bytes()  # same vectors in-process as in the subprocess

    assert main(["build", *args[:-1], "--chunk-size", "0", "--no-progress"]) == 2
    assert "--chunk-size must be a positive number" in capsys.readouterr().err
