"""Issue 19, watching a folder: an added, a changed, a moved and a deleted file are each applied within
5 s; a burst of events is one change; the folder disappearing (moved away, or deleted and restored) never
deletes the collection; a restart catches up; Ctrl-C stops the command. Every wait is bounded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.config import Config
from app.service.commit import read_state
from app.service.library import index_folder
from app.service.watch import FolderWatcher
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image

WITHIN_S = 5.0


def eventually(check, seconds: float = WITHIN_S) -> float:
    """Wait until ``check()`` is true; returns the seconds it took (fails after ``seconds``)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {check.__doc__ or check}")


def live(config: Config) -> dict[str, int]:
    return read_state(config, "mine").table.live_paths()


class Running:
    """A FolderWatcher run in a thread, stopped (and joined, bounded) on exit."""

    def __init__(self, config: Config, **kw) -> None:
        self.statuses: list[str] = []
        self.watcher = FolderWatcher(config, "mine", embedder=FakeEmbedder(), debounce_s=0.3,
                                     on_status=lambda s: self.statuses.append(f"{s.state}: {s.message}"), **kw)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watcher.run, args=(self.stop,), kwargs={"max_seconds": 120},
                                       daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        eventually(lambda: self.watcher.status.state == "watching" and self.watcher.status.changes >= 1)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the watcher did not stop"


@pytest.fixture
def built(tmp_path: Path):
    root = tmp_path / "photos"
    make_image_folder(root, classes=("trips", "home"), per_class=3, seed=3)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    index_folder(config, "mine", root, embedder=FakeEmbedder())
    return config, root


def test_added_changed_moved_and_deleted_files_are_each_applied_within_5_s(built):
    config, root = built
    with Running(config) as run:
        synthetic_image(2, 40).save(root / "trips" / "new.jpg")
        took = eventually(lambda: "trips/new.jpg" in live(config))
        print(f"added: {took:.2f} s")

        before = live(config)["trips/img_00.jpg"]
        synthetic_image(3, 41).save(root / "trips" / "img_00.jpg")  # same name, another picture
        took = eventually(lambda: live(config).get("trips/img_00.jpg", before) != before)
        print(f"changed: {took:.2f} s")

        moved_id = live(config)["home/img_01.jpg"]
        os.rename(root / "home" / "img_01.jpg", root / "trips" / "moved.jpg")
        took = eventually(lambda: "home/img_01.jpg" not in live(config) and "trips/moved.jpg" in live(config))
        print(f"moved: {took:.2f} s")
        assert moved_id not in live(config).values()  # a move is a delete and an add (the vector reused)
        os.rename(root / "trips" / "moved.jpg", root / "home" / "img_01.jpg")  # and back: indexed again
        eventually(lambda: "home/img_01.jpg" in live(config) and "trips/moved.jpg" not in live(config))
        assert read_state(config, "mine").table.excluded == []  # gone from disk is not "deleted on purpose"

        (root / "home" / "img_02.png").unlink()
        took = eventually(lambda: "home/img_02.png" not in live(config))
        print(f"deleted: {took:.2f} s")

        eventually(lambda: run.watcher.status.message.startswith("removed: "))  # reported after its commit
        changes = run.watcher.status.changes
        staging = root.parent / "staging"  # written beside, then moved in at once: a burst, even on a busy machine
        staging.mkdir()
        for v in range(8):
            synthetic_image(1, 60 + v).save(staging / f"burst_{v}.jpg")
        for v in range(8):  # a burst: one change
            os.rename(staging / f"burst_{v}.jpg", root / "home" / f"burst_{v}.jpg")
        eventually(lambda: sum(p.startswith("home/burst_") for p in live(config)) == 8)
        time.sleep(0.5)
        assert run.watcher.status.changes == changes + 1, run.statuses[-4:]

        (root / ".hidden").mkdir()
        synthetic_image(1, 70).save(root / ".hidden" / "x.jpg")
        (root / "trips" / "@eaDir").mkdir()
        synthetic_image(1, 71).save(root / "trips" / "@eaDir" / "thumb.jpg")
        (root / "notes.txt").write_text("not an image")
        time.sleep(1.0)
        assert not any(".hidden" in p or "@eaDir" in p for p in live(config))
        assert len(live(config)) == 6 + 1 - 1 + 8


def test_the_folder_disappearing_keeps_the_collection_and_coming_back_catches_up(built, tmp_path):
    config, root = built
    count = len(live(config))
    with Running(config) as run:
        away = tmp_path / "unmounted"
        shutil.move(root, away)  # the drive goes away
        eventually(lambda: run.watcher.status.state == "waiting")
        assert "the folder is gone" in run.watcher.status.message and "kept" in run.watcher.status.message
        time.sleep(1.0)
        assert len(live(config)) == count

        synthetic_image(2, 80).save(away / "trips" / "while_away.jpg")
        shutil.move(away, root)  # back, with a new file
        eventually(lambda: "trips/while_away.jpg" in live(config))
        eventually(lambda: run.watcher.status.state == "watching")  # the catch-up reports after its commit

        copy = tmp_path / "copy"
        shutil.copytree(root, copy)
        shutil.rmtree(root)  # every file deleted, then the folder: nothing is applied
        eventually(lambda: run.watcher.status.state == "waiting")
        root.mkdir()  # an empty mount point: still waiting
        time.sleep(1.0)
        assert run.watcher.status.state == "waiting" and "empty" in run.watcher.status.message
        assert len(live(config)) == count + 1
        shutil.rmtree(root)
        shutil.copytree(copy, root)
        eventually(lambda: any("caught up: added 0, changed 0, removed 0" in s for s in run.statuses[-3:]))
        assert len(live(config)) == count + 1


def test_a_restart_catches_up_with_what_changed_while_it_was_off(built):
    config, root = built
    with Running(config):
        pass
    synthetic_image(2, 90).save(root / "trips" / "offline.jpg")
    (root / "home" / "img_00.jpg").unlink()
    with Running(config) as run:
        assert "trips/offline.jpg" in live(config) and "home/img_00.jpg" not in live(config)
        assert any("caught up: added 1, changed 0, removed 1" in s for s in run.statuses)


def test_watch_command_applies_a_change_and_stops_on_ctrl_c(tmp_path, cli_env):
    data = tmp_path / "photos"
    make_image_folder(data, classes=("a", "b"), per_class=2, seed=6)
    dirs = ["--indexes", str(tmp_path / "indexes"), "--features", str(tmp_path / "features")]
    root = Path(__file__).resolve().parent.parent
    built = subprocess.run([sys.executable, "scripts/build_index.py", "--collection", "folder", "--data", str(data),
                            "--name", "mine", "--weights", "untrained", "--workers", "0", "--factory", "Flat",
                            "--no-progress", *dirs], cwd=root, env=cli_env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "watch", "--collection", "mine", "--debounce", "0.2",
                             "--for", "120", *dirs], cwd=root, env=cli_env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # ignored in a background job
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        eventually(lambda: any("caught up: added 0" in line for line in lines), 60)
        synthetic_image(0, 33).save(data / "a" / "new.jpg")
        eventually(lambda: any("updated: added 1" in line for line in lines), 60)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    reader.join(timeout=5)
    text = "".join(lines)
    assert "watching" in text and "stopped watching" in text and "Traceback" not in text, text
