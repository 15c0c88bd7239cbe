"""app.core.scan: messy photo folders are scanned without hanging or crashing, and every entry left out
is reported with its reason. Each case is generated in tmp_path."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from app.core.datasets import load_dataset
from app.core.scan import file_stamp, scan_folder
from app.errors import DatasetError, InvalidImageError
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder

DEADLINE_S = 60  # a hang fails the test instead of blocking the suite


def finishes(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` run in a thread that must finish within ``DEADLINE_S``; its result."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def messy(tmp_path, monkeypatch):
    """A folder with 8 good images and one of each messy case; returns (root, expected reasons by path)."""
    root = tmp_path / "photos"
    good = make_image_folder(root, classes=("cats", "dogs"), per_class=4, seed=7)
    jpeg = good[0].read_bytes()
    expected: dict[str, str] = {}

    os.symlink("loop.jpg", root / "loop.jpg")  # a link to itself
    os.symlink("ring_b.jpg", root / "ring_a.jpg")  # links in a ring
    os.symlink("ring_a.jpg", root / "ring_b.jpg")
    expected |= {"loop.jpg": "symbolic link loop", "ring_a.jpg": "symbolic link loop",
                 "ring_b.jpg": "symbolic link loop"}
    os.symlink("..", root / "cats" / "up")  # a link to a folder above: scanned once, not forever
    expected["cats/up"] = "symbolic link loop (folder already scanned)"
    os.symlink("nowhere.jpg", root / "gone.jpg")
    expected["gone.jpg"] = "broken symbolic link"

    os.mkfifo(root / "pipe.jpg")  # opening it would block until a writer comes
    expected["pipe.jpg"] = "FIFO"
    os.symlink("/dev/null", root / "null.jpg")  # a character device
    expected["null.jpg"] = "character device"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "dogs" / "s.sock"))
    expected["dogs/s.sock"] = "socket"

    (root / "dogs" / "locked.jpg").write_bytes(jpeg)
    os.chmod(root / "dogs" / "locked.jpg", 0)
    if os.geteuid() == 0:  # root reads everything: make the check see what another user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).endswith("locked.jpg")
                            else real_access(p, mode, **kw))
    expected["dogs/locked.jpg"] = "permission denied"

    bad = os.path.join(os.fsencode(root / "cats"), b"caf\xe9.jpg")  # Latin-1, not UTF-8
    with open(bad, "wb") as fh:
        fh.write(jpeg)
    expected["cats/caf\\xe9.jpg"] = "not valid UTF-8"
    (root / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty file (0 bytes)"
    (root / "IMG_0001.JXL").write_bytes(b"\xff\x0a jxl")
    expected["IMG_0001.JXL"] = "unsupported format (JPEG XL"

    for hidden in (".cache", "cats/.git"):
        (root / hidden).mkdir()
        (root / hidden / "thumb.jpg").write_bytes(jpeg)
    expected |= {".cache": "hidden folder", "cats/.git": "hidden folder"}
    (root / ".secret.jpg").write_bytes(jpeg)
    expected[".secret.jpg"] = "hidden file"
    (root / "notes.txt").write_text("not an image, not reported")
    yield root, expected, {p.relative_to(root).as_posix() for p in good}
    sock.close()


def test_every_messy_entry_is_skipped_with_its_reason(messy):
    root, expected, good = messy
    result = finishes(scan_folder, root)
    assert {path for path, _ in result.files} == good
    reasons = {s.path: s.reason for s in result.skipped}
    assert set(reasons) == set(expected), sorted(set(reasons) ^ set(expected))
    for path, fragment in expected.items():
        assert fragment in reasons[path], (path, reasons[path])
        assert "\n" not in reasons[path]
    assert all(stamp.size > 0 and stamp.mtime_ns > 0 and stamp.hash == "" for _, stamp in result.files)


def test_hidden_folders_are_scanned_when_asked(messy):
    root, _, good = messy
    paths = {path for path, _ in scan_folder(root, include_hidden=True).files}
    assert paths == good | {".cache/thumb.jpg", "cats/.git/thumb.jpg", ".secret.jpg"}


def test_deep_nesting_is_cut_and_reported(tmp_path):
    deep = tmp_path / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    make_image_folder(deep, classes=("x",), per_class=1)
    make_image_folder(tmp_path / "a", classes=("y",), per_class=1)
    result = scan_folder(tmp_path, max_depth=3)
    assert [p for p, _ in result.files] == ["a/y/img_00.jpg"]
    assert [(s.path, s.reason) for s in result.skipped] == [("a/b/c/d", "nested deeper than 3 folders")]


def test_a_folder_collection_builds_from_a_messy_folder_and_reports_every_skip(messy, tmp_path):
    """The whole build: no hang on the FIFO, the scan's skips and the decoder's in one report."""
    from app.config import Config
    from app.service.build import BuildSpec, build_collection

    root, expected, good = messy
    (root / "dogs" / "really_svg.jpg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>' * 20)
    ds = load_dataset("folder", root)
    assert {it.path for it in ds.items} == good | {"dogs/really_svg.jpg"}
    assert all(it.labels == (it.path.split("/")[0],) for it in ds.items)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    result = finishes(build_collection, config, BuildSpec(kind="folder", data=root, name="messy", factory="Flat"),
                      embedder=FakeEmbedder(), progress_bar=False)
    assert result.manifest.count == len(good)
    reasons = {s["path"]: s["reason"] for s in result.skipped}
    assert set(reasons) == set(expected) | {"dogs/really_svg.jpg"}
    assert "unsupported format: SVG" in reasons["dogs/really_svg.jpg"]  # named by its first bytes, not its suffix
    assert result.manifest.skipped == len(reasons)


def test_file_stamp_hashes_content_and_refuses_what_it_cannot_read(tmp_path, monkeypatch):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    sa, sb = file_stamp(a), file_stamp(b)
    assert sa.size == sb.size == 3_000_000 and len(sa.hash) == 32 and sa.hash != sb.hash
    assert file_stamp(a) == sa
    os.mkfifo(tmp_path / "p.jpg")
    with pytest.raises(InvalidImageError, match="FIFO"):
        finishes(file_stamp, tmp_path / "p.jpg")
    with pytest.raises(InvalidImageError, match="Cannot read"):
        file_stamp(tmp_path / "missing.jpg")
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if str(p).endswith("a.jpg") else real_open(p, *a, **k))
    with pytest.raises(InvalidImageError, match="Permission denied"):
        file_stamp(a)


def test_a_folder_of_only_unusable_entries_says_why(tmp_path):
    root = tmp_path / "phone"
    root.mkdir()
    (root / "IMG_1.jxl").write_bytes(b"\xff\x0a jxl")
    (root / "IMG_2.jxl").write_bytes(b"\xff\x0a jxl")
    with pytest.raises(DatasetError, match=r"No images found .*2 entries skipped.*unsupported format \(JPEG XL"):
        load_dataset("folder", root)
