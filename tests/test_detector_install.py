"""The detector installer (app/service/detector_install.py) with a stand-in for each command it runs:
a fake venv, a fake npm tarball (files with their own checksums), a fake converter that writes the
stand-in ONNX model. An install stopped at any step leaves the previous install or none, never a
half-made one, and no work folder."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from app.core.detectors import SourceFile, detector_dir, detector_model_path, detectors_dir, read_record
from app.errors import DetectorUnavailableError, DownloadError
from app.service.detector_install import install_detector
from tests.detector_fakes import SPEC, cup_at_check_box, write_fake_model

FILES = {"models/fake.json": b'{"format": "graph-model"}', "models/fake.bin": b"\x00\x01weights" * 100}
FAKE = dataclasses.replace(
    SPEC,
    files=tuple(SourceFile(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in FILES.items()),
    graph_file="models/fake.json",
)
STEPS = ("venv", "pip", "npm", "convert")


class Commands:
    """Plays each command the installer runs; ``stop_at`` raises KeyboardInterrupt there instead."""

    def __init__(self, *, stop_at: str | None = None, files: dict[str, bytes] = FILES, objects=None) -> None:
        self.stop_at, self.files, self.seen = stop_at, files, []
        self.objects = cup_at_check_box() if objects is None else objects

    def __call__(self, cmd) -> None:
        cmd = [str(c) for c in cmd]
        step = ("venv" if cmd[1:3] == ["-m", "venv"] else "pip" if "pip" in cmd else
                "npm" if cmd[0].endswith("npm") else "convert" if "tf2onnx.convert" in cmd else "?")
        self.seen.append(step)
        if step == self.stop_at:
            raise KeyboardInterrupt
        if step == "npm":
            dest = Path(cmd[cmd.index("--pack-destination") + 1])
            with tarfile.open(dest / "fake-1.0.0.tgz", "w:gz") as tar:
                for path, data in self.files.items():
                    info = tarfile.TarInfo(f"package/{path}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        elif step == "convert":
            assert Path(cmd[cmd.index("--tfjs") + 1]).read_bytes() == self.files[FAKE.graph_file]
            write_fake_model(Path(cmd[cmd.index("--output") + 1]), self.objects)


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in detectors_dir(cache).glob(".install-*") if not p.name.endswith(".lock"))


def test_install_converts_checks_and_caches(tmp_path):
    commands = Commands()
    result = install_detector(tmp_path, FAKE, run=commands, log=lambda _: None, python="python3")
    assert commands.seen == list(STEPS) and result.installed
    assert detector_model_path(tmp_path, FAKE) == detector_dir(tmp_path, FAKE) / "model.onnx"
    assert read_record(tmp_path, FAKE)["check"]["iou"] > 0.9 and not _leftovers(tmp_path)
    again = Commands()
    assert not install_detector(tmp_path, FAKE, run=again, log=lambda _: None).installed and again.seen == []


@pytest.mark.parametrize("step", STEPS)
def test_an_install_stopped_at_any_step_leaves_nothing_half_made(tmp_path, step):
    with pytest.raises(KeyboardInterrupt):
        install_detector(tmp_path, FAKE, run=Commands(stop_at=step), log=lambda _: None, python="python3")
    assert not detector_dir(tmp_path, FAKE).exists() and not _leftovers(tmp_path)
    # over a good install, a stopped --force keeps the good one
    install_detector(tmp_path, FAKE, run=Commands(), log=lambda _: None, python="python3")
    before = detector_model_path(tmp_path, FAKE).read_bytes()
    with pytest.raises(KeyboardInterrupt):
        install_detector(tmp_path, FAKE, force=True, run=Commands(stop_at=step), log=lambda _: None, python="python3")
    assert detector_model_path(tmp_path, FAKE).read_bytes() == before and not _leftovers(tmp_path)


def test_a_source_file_with_another_checksum_is_refused(tmp_path):
    altered = {**FILES, "models/fake.bin": FILES["models/fake.bin"][:-1] + b"!"}
    with pytest.raises(DownloadError, match="does not match its checksum"):
        install_detector(tmp_path, FAKE, run=Commands(files=altered), log=lambda _: None, python="python3")
    assert not detector_dir(tmp_path, FAKE).exists() and not _leftovers(tmp_path)


def test_a_conversion_that_fails_its_check_installs_nothing(tmp_path):
    with pytest.raises(DetectorUnavailableError, match="failed its check"):
        install_detector(tmp_path, FAKE, run=Commands(objects=[]), log=lambda _: None, python="python3")
    assert not detector_dir(tmp_path, FAKE).exists() and not _leftovers(tmp_path)


def test_a_killed_installs_work_folder_is_removed_by_the_next(tmp_path):
    stale = detectors_dir(tmp_path) / f".install-{FAKE.name}-killed"
    (stale / "venv").mkdir(parents=True)
    install_detector(tmp_path, FAKE, run=Commands(), log=lambda _: None, python="python3")
    assert not stale.exists()
