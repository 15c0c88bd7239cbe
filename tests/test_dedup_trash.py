"""Safe clean-up of duplicates: keep one, move the others to the trash folder with a manifest, undo. Faults:
a full disk, a photo gone or locked, the trash on another drive (EXDEV), a kill -9 mid-clean-up. A photo is
always at its place or in the trash, recorded; nothing is ever deleted."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.config import Config
from app.service import dedup_trash
from app.service.build import BuildSpec, build_collection
from app.service.commit import read_state
from app.service.dedup_trash import TRASH, clean_groups, undo_clean
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder

SPEC = dict(kind="folder", name="pics", factory="IVF4,Flat", nprobe=4)


@pytest.fixture
def built(tmp_path):
    root = tmp_path / "photos"
    make_image_folder(root, per_class=6, seed=5)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    build_collection(config, BuildSpec(data=root, **SPEC), embedder=FakeEmbedder(), progress_bar=False)
    return config, root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and TRASH not in p.parts}


def _ids(config, *paths):
    table = read_state(config, "pics").table
    live = table.live_paths()
    return [live[p] for p in paths]


def _manifest(root: Path) -> list[dict]:
    return json.loads((root / TRASH / "pics" / "manifest.json").read_text())["entries"]


def test_clean_moves_all_but_the_keeper_and_undo_puts_them_back(built):
    config, root = built
    before = _files(root)
    keep, a, b = _ids(config, "circles/img_00.jpg", "circles/img_01.jpg", "stripes/img_00.jpg")
    done = clean_groups(config, "pics", [(keep, [keep, a, b])])
    assert [m["state"] for m in done.moves] == ["moved", "moved"]
    trash = root / TRASH / "pics"
    assert (trash / "circles/img_01.jpg").read_bytes() == before["circles/img_01.jpg"]
    assert not (root / "circles/img_01.jpg").exists() and (root / "circles/img_00.jpg").exists()
    state = read_state(config, "pics")
    assert state.table.live_count == 22 and "circles/img_01.jpg" not in state.table.live_paths()
    assert all(e["state"] == "moved" for e in _manifest(root))
    # the trash is never scanned: a rebuild does not add the moved photos back
    build_collection(config, BuildSpec(data=root, **SPEC), embedder=FakeEmbedder(), progress_bar=False)
    assert read_state(config, "pics").table.live_count == 22
    back = undo_clean(config, "pics", embedder=FakeEmbedder())
    assert [m["state"] for m in back.moves] == ["restored", "restored"]
    assert _files(root) == before
    assert read_state(config, "pics").table.live_count == 24
    assert not any(p.is_file() for p in trash.rglob("*.jpg"))


def test_undo_never_overwrites_a_file_now_at_the_original_path(built):
    config, root = built
    keep, a = _ids(config, "circles/img_00.jpg", "circles/img_01.jpg")
    moved = (root / "circles/img_01.jpg").read_bytes()
    clean_groups(config, "pics", [(keep, [keep, a])])
    (root / "circles/img_01.jpg").write_bytes(b"a new photo the user put here")
    back = undo_clean(config, "pics", embedder=FakeEmbedder())
    assert (root / "circles/img_01.jpg").read_bytes() == b"a new photo the user put here"
    assert (root / "circles/img_01 (restored 1).jpg").read_bytes() == moved
    assert "restored beside it" in back.moves[0]["note"]


def test_another_drive_copies_then_removes(built, monkeypatch):
    config, root = built
    keep, a = _ids(config, "squares/img_00.jpg", "squares/img_01.jpg")
    data = (root / "squares/img_01.jpg").read_bytes()
    real_rename = os.rename

    def rename(src, dst):  # a rename of a photo crosses drives; the temp-to-final rename inside the trash does not
        if TRASH not in str(src):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(dedup_trash.os, "rename", rename)
    done = clean_groups(config, "pics", [(keep, [keep, a])])
    assert done.moves[0]["state"] == "moved"
    assert (root / TRASH / "pics/squares/img_01.jpg").read_bytes() == data
    assert not (root / "squares/img_01.jpg").exists()


def test_a_full_disk_leaves_the_photo_in_place(built, monkeypatch):
    config, root = built
    keep, a, b = _ids(config, "checks/img_00.jpg", "checks/img_01.jpg", "checks/img_02.png")
    before = _files(root)
    monkeypatch.setattr(dedup_trash.os, "rename", lambda s, d: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))

    def full(fin, fout, *args):
        fout.write(fin.read(10))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dedup_trash.shutil, "copyfileobj", full)
    done = clean_groups(config, "pics", [(keep, [keep, a, b])])
    assert [m["state"] for m in done.moves] == ["failed", "failed"]
    assert "No space left" in done.moves[0]["note"]
    assert _files(root) == before  # every photo in place, no partial copy in the trash
    assert not [p for p in (root / TRASH).rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert read_state(config, "pics").table.live_count == 24
    assert [e["state"] for e in _manifest(root)] == ["failed", "failed"]


def test_a_photo_gone_or_locked_is_recorded_and_the_others_move(built, monkeypatch):
    config, root = built
    keep, gone, locked, fine = _ids(config, "stripes/img_00.jpg", "stripes/img_01.jpg", "stripes/img_02.png",
                                    "stripes/img_03.jpg")
    (root / "stripes/img_01.jpg").unlink()
    real_rename = os.rename

    def rename(src, dst):
        if str(src).endswith("img_02.png"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_rename(src, dst)

    monkeypatch.setattr(dedup_trash.os, "rename", rename)
    done = clean_groups(config, "pics", [(keep, [keep, gone, locked, fine])])
    states = {m["stored"]: (m["state"], m.get("note", "")) for m in done.moves}
    assert states["stripes/img_01.jpg"][0] == "failed" and "No such file" in states["stripes/img_01.jpg"][1]
    assert states["stripes/img_02.png"] == ("failed", "Permission denied")
    assert states["stripes/img_03.jpg"][0] == "moved"
    assert (root / "stripes/img_02.png").exists() and (root / TRASH / "pics/stripes/img_03.jpg").exists()
    assert read_state(config, "pics").table.live_count == 23  # only the moved one left the collection


KILLED_CLEANUP = """
import sys, time
from app.config import Config
from app.service import dedup_trash
real = dedup_trash.move_file
def slow(src, dst):
    real(src, dst)
    time.sleep(0.3)
dedup_trash.move_file = slow
config = Config(indexes_dir=sys.argv[1], features_dir=sys.argv[2], workers=0)
ids = [int(x) for x in sys.argv[3].split(",")]
dedup_trash.clean_groups(config, "pics", [(ids[0], ids)])
"""


def test_kill_9_during_a_clean_up_then_undo_restores_everything(built):
    config, root = built
    before = _files(root)
    ids = read_state(config, "pics").table.live_ids().tolist()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLEANUP, str(config.indexes_dir), str(config.features_dir),
                             ",".join(map(str, ids))], env=env)
    manifest = root / TRASH / "pics" / "manifest.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and sum(e["state"] == "moved" for e in json.loads(manifest.read_text())["entries"]) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the clean-up ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    entries = json.loads(manifest.read_text())["entries"]
    assert 3 <= sum(e["state"] == "moved" for e in entries) < len(ids) - 1
    for e in entries:  # every photo is at its place or in the trash
        assert Path(e["path"]).exists() or Path(e["to"]).exists()
    undo_clean(config, "pics", embedder=FakeEmbedder())
    assert _files(root) == before
    assert read_state(config, "pics").table.live_count == 24


def test_cli_clean_and_undo(tmp_path, embedder, model_cache, monkeypatch, capsys):
    """``duplicates --tier exact --clean`` keeps the keeper of each group; ``--undo`` brings the rest back."""
    import shutil

    from app.cli.main import main

    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / "reverse-image-search").symlink_to(model_cache, target_is_directory=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))  # the session's ONNX export, not the user's cache
    root = tmp_path / "photos"
    make_image_folder(root, per_class=3, seed=2)
    shutil.copyfile(root / "circles/img_00.jpg", root / "circles/img_00 copy.jpg")
    shutil.copyfile(root / "circles/img_00.jpg", root / "img_00 again.jpg")
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=model_cache,
                    weights="untrained", workers=0)
    build_collection(config, BuildSpec(kind="folder", data=root, name="pics"), embedder=embedder, progress_bar=False)
    before = _files(root)
    where = ["--collection", "pics", "--indexes", str(config.indexes_dir), "--features", str(config.features_dir)]
    assert main(["duplicates", *where, "--tier", "exact", "--clean", "--json"]) == 0
    moves = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(moves) == 2 and all(m["state"] == "moved" for m in moves)
    assert (root / "circles/img_00.jpg").exists()  # the keeper: same size, the oldest file
    assert read_state(config, "pics").table.live_count == 12
    assert main(["duplicates", *where, "--tier", "exact", "--json"]) == 0
    assert capsys.readouterr().out == ""  # no exact copies left
    assert main(["duplicates", *where, "--undo"]) == 0
    out = capsys.readouterr().out
    assert "2 photos restored" in out
    assert _files(root) == before and read_state(config, "pics").table.live_count == 14
    assert main(["duplicates", *where, "--clean"]) == 2  # --clean needs a tier
    assert "--clean needs --tier" in capsys.readouterr().err


def test_a_full_disk_while_recording_a_move_still_lets_undo_restore(built, monkeypatch):
    """The manifest cannot be written after a photo moved: the clean-up stops with the typed error, the
    manifest still says the photo was being moved, and undo finds it in the trash."""
    from app.errors import StorageError

    config, root = built
    before = _files(root)
    keep, a, b = _ids(config, "circles/img_03.jpg", "circles/img_04.jpg", "circles/img_05.png")
    real_save = dedup_trash.TrashManifest.save
    calls = []

    def save(self):
        calls.append(1)
        if len(calls) == 2:  # the record after the first move
            raise StorageError("No space left on device while writing manifest.json")
        real_save(self)

    monkeypatch.setattr(dedup_trash.TrashManifest, "save", save)
    with pytest.raises(StorageError):
        clean_groups(config, "pics", [(keep, [keep, a, b])])
    monkeypatch.setattr(dedup_trash.TrashManifest, "save", real_save)
    assert [e["state"] for e in _manifest(root)] == ["moving"]
    assert (root / TRASH / "pics/circles/img_04.jpg").exists() and (root / "circles/img_05.png").exists()
    undo_clean(config, "pics", embedder=FakeEmbedder())
    assert _files(root) == before
    assert read_state(config, "pics").table.live_count == 24
