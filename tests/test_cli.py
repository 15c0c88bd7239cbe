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
from app.core.features import feature_paths, load_features
from app.service.search import SearchService
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
    proc = run(search_args(config, query, "--collection", "shapes", "-k", "5", "--no-rerank"), cli_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "label", "file", "similarity"] and set(lines[1].replace(" ", "")) == {"-"}
    rows = [line.split() for line in lines[2 : lines.index("")]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][2:] == ["squares", "squares/" + query.name, "same", "photo"]  # the query itself: the top band
    assert float(rows[0][1]) == pytest.approx(1.0, abs=1e-3)
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert "5 hits in shapes (24 images)" in proc.stdout
    assert "UNTRAINED" in proc.stderr  # people are told the results mean nothing


def test_search_json_is_parseable_with_hits(small_collection, cli_env):
    config, _, data = small_collection
    query = DATA / "photo_rocket.jpg"
    # raw neighbours, sorted by their cosine (re-ranked lists: tests/test_rerank.py, tests/test_dba.py)
    proc = run(search_args(config, query, "--collection", "shapes", "-k", "7", "--json", "--no-rerank"), cli_env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["collection"] == "shapes" and out["query"] == str(query)
    assert "untrained" in out["weights_id"] and out["engine"] in ("onnx", "torch-cpu", "torch-cuda")
    hits = out["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert len({h["id"] for h in hits}) == 7 and all(0 <= h["id"] < 24 for h in hits)
    assert all((data / h["path"]).is_file() and h["label"] == h["path"].split("/")[0] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert set(out["timings_ms"]) == {"hash", "decode", "copy", "preprocess", "embed", "search", "total"}


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
    assert_one_line_error(proc, "has not been built", "python scripts/build_index.py --kind caltech101")
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


def many_search_args(config: Config, images, *extra: str) -> list[str]:
    """``search_args`` with several IMAGE arguments (all before the options, as argparse wants them)."""
    images = [str(i) for i in images]
    args = search_args(config, images[0], *extra)
    i = args.index(images[0])
    args[i + 1 : i + 1] = images[1:]
    return args


def json_lines(stdout: str) -> list[dict]:
    lines = stdout.splitlines()
    assert lines and all(line.strip() for line in lines), stdout  # one object per line, no blank lines
    return [json.loads(line) for line in lines]


def collection_path(data: Path, query: str) -> str:
    """The path a collection hit shows for the collection image ``query``."""
    return Path(query).resolve().relative_to(data.resolve()).as_posix()


def test_search_many_files_and_a_folder_print_one_json_line_each_in_order(small_collection, cli_env):
    config, _, data = small_collection
    first, last = data / "circles" / "img_01.jpg", data / "checks" / "img_02.png"
    folder = data / "stripes"
    folder_files = [folder / name for name in sorted(p.name for p in folder.iterdir())]
    assert len(folder_files) == 6
    proc = run(many_search_args(config, [first, folder, last], "--collection", "shapes", "-k", "3", "--json"),
               cli_env)
    assert proc.returncode == 0, proc.stderr
    out = json_lines(proc.stdout)
    expected = [first, *folder_files, last]
    assert [o["query"] for o in out] == [str(p) for p in expected]  # the argument, or the file in the folder
    for o in out:
        assert "error" not in o
        assert o["model"] == "resnet50" and o["collection"] == "shapes"
        assert "untrained" in o["weights_id"] and o["engine"] in ("onnx", "torch-cpu", "torch-cuda")
        assert set(o["timings_ms"]) == {"hash", "decode", "copy", "preprocess", "embed", "search", "total"}
        hits = o["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert hits[0]["path"] == collection_path(data, o["query"]), o
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert all(h["score"] < 0.9999 for h in hits[1:])


def test_search_failing_queries_give_error_objects_and_the_others_still_run(small_collection, cli_env, tmp_path):
    config, _, data = small_collection
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are my notes, renamed .jpg\n")
    missing = tmp_path / "gone" / "holiday.jpg"
    good_a, good_b = data / "squares" / "img_00.jpg", data / "circles" / "img_05.png"
    queries = [good_a, notes, missing, good_b]
    proc = run(many_search_args(config, queries, "--collection", "shapes", "-k", "2", "--json"), cli_env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    out = json_lines(proc.stdout)
    assert [o["query"] for o in out] == [str(q) for q in queries]
    assert all(o["model"] == "resnet50" for o in out)
    bad, gone = out[1], out[2]
    for o in (bad, gone):
        assert set(o) == {"query", "model", "error"}, o
        assert o["error"] and "\n" not in o["error"]
    assert "not an image" in bad["error"]
    assert "holiday.jpg" in gone["error"]
    for o, query in ((out[0], good_a), (out[3], good_b)):  # before and after the failures
        assert "error" not in o and len(o["hits"]) == 2
        assert o["hits"][0]["path"] == collection_path(data, str(query))
        assert o["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_search_many_queries_print_a_query_header_before_each_table(small_collection, cli_env):
    config, _, data = small_collection
    queries = [data / "checks" / "img_00.jpg", data / "squares" / "img_04.jpg", data / "stripes" / "img_02.png"]
    proc = run(many_search_args(config, queries, "--collection", "shapes", "-k", "4"), cli_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("query: ")]
    assert [lines[i] for i in headers] == [f"query: {q}" for q in queries]
    for i, query in zip(headers, queries, strict=True):
        assert lines[i + 1].split() == ["rank", "score", "label", "file", "similarity"]
        assert set(lines[i + 2].replace(" ", "")) == {"-"}
        rows = [line.split() for line in lines[i + 3 : i + 7]]
        assert [r[0] for r in rows] == ["1", "2", "3", "4"]
        assert rows[0][3] == collection_path(data, str(query)) and float(rows[0][1]) == pytest.approx(1.0, abs=1e-3)
        assert lines[i + 7] == "" and lines[i + 8].startswith("4 hits in shapes (24 images)")
    assert proc.stdout.count("hits in shapes") == 3


def test_search_a_folder_without_images_is_a_one_line_error(small_collection, cli_env, tmp_path):
    config, _, _ = small_collection
    folder = tmp_path / "documents"
    (folder / "sub").mkdir(parents=True)
    (folder / "readme.txt").write_text("no pictures here\n")
    (folder / "sub" / "notes.md").write_text("# nor here\n")
    proc = run(search_args(config, folder, "--collection", "shapes"), cli_env)
    assert_one_line_error(proc, "No image files", str(folder))
    assert proc.stdout == ""
    # with --json, beside a good query: the folder is a failed query of its own, the other still runs
    good = sorted(config_images(small_collection))[0]
    proc = run(["-m", "app.cli", "search", str(folder), str(good), *search_args(config, good)[4:],
                "--collection", "shapes", "--json"], cli_env)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 2 and [line["query"] for line in lines] == [str(folder), str(good)]
    assert "No image files" in lines[0]["error"] and lines[1]["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def config_images(small_collection) -> list[Path]:
    return list(small_collection[2].glob("*/*.jpg"))


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


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, which a shell's background job (pytest run with ``&``) has
    ignored, and a child inherits; Python then turns it into KeyboardInterrupt as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def build_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["scripts/build_index.py", "--kind", "folder", "--data", str(data), "--name", "tiny",
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
    assert manifest["count"] == 8 and manifest["limit"] == 8 and manifest["kind"] == "folder"
    assert manifest["factory"] == "IVF2,Flat" and manifest["tuning"] == {"fixed": True}
    assert not (out / "features" / "tiny.parts").exists() and temp_files(out) == []
    # labels spread over the three classes, and the result is searchable in-process
    table = load_features(out / "features", "tiny")[1].to_json()
    assert {it["label"] for it in table["items"]} == {"circles", "stripes", "checks"}
    config = Config(indexes_dir=out / "indexes", features_dir=out / "features", weights="untrained")
    hits = SearchService(config, embedder=embedder).search_item("tiny", 3, k=8).hits
    assert hits[0].id == 3 and sorted(h.id for h in hits) == list(range(8))  # all, though nprobe=1 of 2


def test_the_old_spelling_of_kind_still_builds_with_a_notice(reference_build, tiny_folder, cli_env, tmp_path):
    """``--collection KIND`` was build's dataset layout; it is ``--kind`` now, and the old spelling still works."""
    _, ref = reference_build
    assert "--kind" not in ref.stderr  # the new spelling: no notice
    old = ["--collection" if a == "--kind" else a for a in build_args(tiny_folder, tmp_path)]
    proc = run(old, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert "note: --collection folder is now spelled --kind folder" in proc.stderr
    assert json.loads((tmp_path / "indexes" / "tiny.manifest.json").read_text())["kind"] == "folder"
    clash = run([*old[:1], "--kind", "voc2012", *old[1:]], cli_env)
    assert_one_line_error(clash, "--kind voc2012 and --collection folder disagree")


def test_build_script_refuses_a_missing_data_folder(cli_env, tmp_path):
    proc = run(build_args(tmp_path / "nowhere", tmp_path), cli_env)
    assert_one_line_error(proc, "nowhere", "--data")


def test_build_json_prints_the_manifest_as_written(tiny_folder, cli_env, tmp_path):
    proc = run(build_args(tiny_folder, tmp_path, "--json"), cli_env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"manifest", "stats", "skipped", "changes"} and out["skipped"] == []
    assert out["changes"]["summary"] == "added 8, changed 0, removed 0, unchanged 0" and out["changes"]["full_build"]
    written = json.loads((tmp_path / "indexes" / "tiny.manifest.json").read_text())
    assert out["manifest"] == written and written["schema_version"] == 3
    for key in ("model", "weights_id", "dim", "count", "factory", "nprobe", "k_factor", "tuning", "index_bytes"):
        assert key in written, key
    assert (written["count"], written["factory"], written["nprobe"]) == (8, "IVF2,Flat", 1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_build_resumes_to_identical_output(reference_build, tiny_folder, cli_env, tmp_path, sig):
    ref, ref_proc = reference_build
    assert ref_proc.returncode == 0, ref_proc.stderr
    proc = subprocess.Popen([sys.executable, *build_args(tiny_folder, tmp_path)], cwd=ROOT, env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
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
    new_npy = feature_paths(tmp_path / "features", "tiny")[0]
    ref_npy = feature_paths(ref / "features", "tiny")[0]
    assert new_npy.read_bytes() == ref_npy.read_bytes()
    a, b = (load_features(d / "features", "tiny")[1].to_json() for d in (tmp_path, ref))
    a.pop("created"), b.pop("created")
    assert a == b
    assert np.load(new_npy).shape == (8, 2048)
    assert not (tmp_path / "features" / "tiny.parts").exists() and temp_files(tmp_path) == []


def test_cli_build_subcommand_matches_the_script(reference_build, tiny_folder, cli_env, tmp_path, monkeypatch,
                                                 capsys):
    from app.cli.main import main

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
