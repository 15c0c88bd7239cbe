"""The management commands as people run them: ``scripts/build_index.py`` again (incremental),
``python -m app.cli count|add|delete|rename|drop``, in subprocesses with the untrained ResNet-50."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import make_image_folder, synthetic_image
from tests.test_cli import assert_one_line_error, run


def dirs(out: Path) -> list[str]:
    return ["--indexes", str(out / "indexes"), "--features", str(out / "features")]


def build(data: Path, out: Path, *extra: str) -> list[str]:
    return ["scripts/build_index.py", "--collection", "folder", "--data", str(data), "--name", "mine",
            "--weights", "untrained", "--workers", "0", "--factory", "IVF2,Flat", "--nprobe", "2", "--no-progress",
            *dirs(out), *extra]


def cli(command: str, out: Path, *extra: str) -> list[str]:
    return ["-m", "app.cli", command, "--collection", "mine", *dirs(out), *extra]


def count(out: Path, env) -> int:
    proc = run(cli("count", out), env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


def test_build_count_then_3_added_2_deleted_1_changed_rerun_reports_exactly_that(tmp_path, cli_env):
    data = tmp_path / "photos"
    make_image_folder(data, classes=("cats", "dogs", "boats"), per_class=4, seed=2)
    (data / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")  # not valid: never counted
    (data / "IMG_7.JXL").write_bytes(b"\xff\x0a jxl")
    first = run(build(data, tmp_path), cli_env)
    assert first.returncode == 0, first.stderr
    assert "built mine: 12 images indexed, 2 skipped" in first.stdout
    assert "added 12, changed 0, removed 0, unchanged 0" in first.stdout
    assert "skipped IMG_7.JXL: unsupported format (JPEG XL" in first.stderr
    assert count(tmp_path, cli_env) == 12

    for v in range(3):
        synthetic_image(v, 50 + v, seed=8).save(data / "boats" / f"new_{v}.jpg")
    (data / "cats" / "img_00.jpg").unlink()
    (data / "dogs" / "img_02.png").unlink()
    synthetic_image(2, 77, seed=8).save(data / "cats" / "img_01.jpg")  # same name, other picture
    again = run(build(data, tmp_path), cli_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == "added 3, changed 1, removed 2, unchanged 9"
    assert "mine: 13 images (resnet50)" in again.stdout
    assert count(tmp_path, cli_env) == 13

    same = run(build(data, tmp_path), cli_env)
    assert same.stdout.splitlines()[0] == "added 0, changed 0, removed 0, unchanged 13"
    assert "index unchanged" in same.stdout


@pytest.fixture
def built_mine(tmp_path, cli_env):
    data = tmp_path / "photos"
    make_image_folder(data, classes=("cats", "dogs"), per_class=3, seed=4)
    proc = run(build(data, tmp_path), cli_env)
    assert proc.returncode == 0, proc.stderr
    return data


def test_add_delete_rename_drop(tmp_path, cli_env, built_mine):
    data = built_mine
    extra = tmp_path / "extra"
    make_image_folder(extra, classes=("birds",), per_class=2, seed=6)
    added = run(cli("add", tmp_path, str(extra), str(data / "cats" / "img_00.jpg"), "--weights", "untrained"),
                cli_env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[0] == "added 2, changed 0, removed 0, unchanged 1"
    assert count(tmp_path, cli_env) == 8

    search = run(["-m", "app.cli", "search", str(extra / "birds" / "img_01.jpg"), "--collection", "mine",
                  *dirs(tmp_path), "--weights", "untrained", "--json", "-k", "1"], cli_env)
    hit = json.loads(search.stdout)["hits"][0]
    assert hit["path"] == (extra / "birds" / "img_01.jpg").as_posix() and hit["score"] == pytest.approx(1, abs=1e-3)

    gone = run(cli("delete", tmp_path, "--id", str(hit["id"]), "0", "--json"), cli_env)
    assert gone.returncode == 0, gone.stderr
    out = json.loads(gone.stdout)
    assert (out["removed"], out["count"], sorted(out["removed_ids"])) == (2, 6, sorted([hit["id"], 0]))
    by_path = run(cli("delete", tmp_path, "--path", str(data / "dogs")), cli_env)
    assert by_path.stdout.splitlines()[0] == "added 0, changed 0, removed 3, unchanged 3"
    missing = run(cli("delete", tmp_path, "--id", "999"), cli_env)
    assert_one_line_error(missing, "999", "nothing was deleted")
    assert count(tmp_path, cli_env) == 3

    renamed = run(cli("rename", tmp_path, "--to", "holiday"), cli_env)
    assert renamed.stdout.strip() == "renamed mine to holiday (3 images)"
    assert_one_line_error(run(cli("count", tmp_path), cli_env), "mine")
    dropped = run(["-m", "app.cli", "drop", "--collection", "holiday", *dirs(tmp_path)], cli_env)
    assert dropped.returncode == 0, dropped.stderr
    lines = dropped.stdout.splitlines()
    assert lines[0] == "dropped holiday: removed 5 files"
    assert sorted(Path(line.strip()).name for line in lines[1:]) == [
        "holiday.dba.npz", "holiday.faiss", "holiday.manifest.json", "holiday.npy", "holiday.sqlite"]
    assert (data / "cats" / "img_01.jpg").is_file() and (extra / "birds" / "img_00.jpg").is_file()
    assert list((tmp_path / "features").iterdir()) == []


def test_management_errors_are_one_line(tmp_path, cli_env):
    assert_one_line_error(run(cli("count", tmp_path), cli_env), "has not been built")
    assert_one_line_error(run(cli("drop", tmp_path), cli_env), "no collection named 'mine'")
    proc = run(["-m", "app.cli", "rename", "--collection", "a", "--to", "../escape", *dirs(tmp_path)], cli_env)
    assert_one_line_error(proc, "not a valid collection name")
    (tmp_path / "outside.manifest.json").write_text("{}")  # drop never reaches outside its folders
    proc = run(["-m", "app.cli", "drop", "--collection", "../outside", *dirs(tmp_path)], cli_env)
    assert_one_line_error(proc, "not a collection name")
    assert (tmp_path / "outside.manifest.json").is_file()
