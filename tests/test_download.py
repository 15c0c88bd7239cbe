"""Tests of app.net.download against a local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from PIL import Image

import app.net.download as dl
from app.cli.main import main as cli_main
from app.errors import DownloadError
from app.net.download import (
    Source,
    dataset_present,
    download_dataset,
    download_file,
    ensure_imagenet_weights,
    safe_extract,
)
from tests.fakes import QuietHTTPServer

REPO = Path(__file__).resolve().parent.parent
SERVER_LIFETIME_S = 60


# --- a tiny HTTP file server with optional Range support ---------------------------------------


class FileServer:
    """Serves ``files`` (path -> bytes); records (path, Range header) of every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.truncate_next = 0  # answer this many requests with half the body, then hang up
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if server.truncate_next:
                    server.truncate_next -= 1
                    payload = payload[: len(payload) // 2]
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.timer = threading.Timer(SERVER_LIFETIME_S, self.httpd.shutdown)
        self.timer.daemon = True

    def add(self, name: str, data: bytes) -> str:
        self.files["/" + name] = data
        return f"{self.url}/{name}"


@pytest.fixture
def server():
    srv = FileServer()
    srv.thread.start()
    srv.timer.start()
    try:
        yield srv
    finally:
        srv.timer.cancel()
        srv.httpd.shutdown()
        srv.httpd.server_close()


# --- fake archives -----------------------------------------------------------------------------


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="JPEG")
    return buf.getvalue()


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


CALTECH_FILES = {
    f"101_ObjectCategories/{cat}/image_000{i}.jpg": _jpeg((40 * i, 100, 7 * len(cat)))
    for cat in ("airplanes", "Faces", "BACKGROUND_Google") for i in (1, 2)
}


def caltech_archive(outer: str = "zip") -> bytes:
    """Like the real caltech-101.zip: an outer archive holding 101_ObjectCategories.tar.gz."""
    inner = {"caltech-101/101_ObjectCategories.tar.gz": _tar(CALTECH_FILES, "w:gz"),
             "caltech-101/Annotations.tar": _tar({"Annotations/x.mat": b"mat"}),
             "caltech-101/show_annotation.m": b"% matlab"}
    return _zip(inner) if outer == "zip" else _tar(inner, "w:gz")


def voc_archive() -> bytes:
    base = "VOCdevkit/VOC2012"
    return _tar({
        f"{base}/JPEGImages/2008_000001.jpg": _jpeg((1, 2, 3)),
        f"{base}/JPEGImages/2008_000002.jpg": _jpeg((4, 5, 6)),
        f"{base}/Annotations/2008_000001.xml": b"<annotation><object><name>dog</name></object></annotation>",
        f"{base}/Annotations/2008_000002.xml": b"<annotation><object><name>cat</name></object></annotation>",
        f"{base}/ImageSets/Main/trainval.txt": b"2008_000001\n2008_000002\n",
    })


def fake_sources(server: FileServer, outer: str = "zip") -> dict[str, Source]:
    cal, voc = caltech_archive(outer), voc_archive()
    name = "caltech-101.zip" if outer == "zip" else "caltech-101.tar.gz"
    return {
        "caltech101": replace(dl.SOURCES["caltech101"], url=server.add(name, cal), filename=name,
                              checksum=_md5(cal)),
        "voc2012": replace(dl.SOURCES["voc2012"], url=server.add("voc.tar", voc),
                           checksum=hashlib.sha256(voc).hexdigest(), algo="sha256"),
    }


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _leftovers(data: Path) -> list[str]:
    return sorted(p.name for p in data.glob(".staging-*"))


# --- datasets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("outer", ["zip", "tar.gz"])
def test_caltech_download_verify_extract_then_skip(server, tmp_path, outer):
    sources = fake_sources(server, outer)
    target = download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False)

    assert target == tmp_path / "caltech101"
    for rel, data in CALTECH_FILES.items():
        assert (target / rel).read_bytes() == data
    assert sorted(p.name for p in target.iterdir()) == [".complete", "101_ObjectCategories"]
    marker = json.loads((target / ".complete").read_text())
    assert marker["source_url"] == sources["caltech101"].url
    assert marker["checksum"] == f"md5:{sources['caltech101'].checksum}"
    assert marker["completed_at"]
    assert (tmp_path / ".downloads" / sources["caltech101"].filename).is_file()
    assert not list((tmp_path / ".downloads").glob("*.part"))
    assert _leftovers(tmp_path) == []
    assert dataset_present("caltech101", tmp_path, sources=sources)

    seen = len(server.requests)
    assert seen == 1
    assert download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False) == target
    assert len(server.requests) == seen  # no network the second time


def test_voc_download_with_sha256_and_base_url_override(server, tmp_path):
    sources = fake_sources(server)
    voc = sources["voc2012"]
    server.add(voc.filename, server.files["/voc.tar"])  # served under its official file name
    target = download_dataset("voc2012", tmp_path, sources=sources, progress_bar=False,
                              base_url_override=server.url + "/", keep_archive=False)
    assert list((tmp_path / ".downloads").iterdir()) == []
    base = target / "VOCdevkit" / "VOC2012"
    assert sorted(p.name for p in (base / "JPEGImages").iterdir()) == ["2008_000001.jpg", "2008_000002.jpg"]
    assert (base / "ImageSets/Main/trainval.txt").read_text().split() == ["2008_000001", "2008_000002"]
    assert json.loads((target / ".complete").read_text())["checksum"].startswith("sha256:")
    assert server.requests == [(f"/{voc.filename}", None)]
    download_dataset("voc2012", tmp_path, sources=sources, progress_bar=False)
    assert len(server.requests) == 1


def test_user_copy_without_marker_counts_as_present(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories" / "ants"
    cats.mkdir(parents=True)
    (cats / "a.jpg").write_bytes(_jpeg((0, 0, 0)))
    sources = {"caltech101": replace(dl.SOURCES["caltech101"], url=closed_port_url("x.zip"))}
    assert dataset_present("caltech101", tmp_path, sources=sources)
    assert download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False).is_dir()
    assert not (tmp_path / "caltech101" / ".complete").exists()
    assert not (tmp_path / "voc2012").exists() and not dataset_present("voc2012", tmp_path)


def test_incomplete_existing_folder_is_moved_aside(server, tmp_path):
    (tmp_path / "caltech101").mkdir()
    (tmp_path / "caltech101" / "notes.txt").write_text("mine")
    download_dataset("caltech101", tmp_path, sources=fake_sources(server), progress_bar=False)
    assert (tmp_path / "caltech101" / ".complete").is_file()
    (aside,) = tmp_path.glob(".old-caltech101-*")
    assert (aside / "notes.txt").read_text() == "mine"


def test_bad_checksum_leaves_nothing(server, tmp_path):
    sources = fake_sources(server)
    sources["caltech101"] = replace(sources["caltech101"], checksum="0" * 32)
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False)
    assert "deleted" in str(err.value)
    assert not (tmp_path / "caltech101").exists()
    assert list((tmp_path / ".downloads").iterdir()) == []  # neither the file nor its .part
    assert not dataset_present("caltech101", tmp_path, sources=sources)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_extraction_leaves_no_collection(server, tmp_path, monkeypatch, exc):
    sources = fake_sources(server)
    real_extractall = tarfile.TarFile.extractall

    def half_then_fail(self, path=".", members=None, *, numeric_owner=False, filter=None):
        for m in self.getmembers()[:3]:
            self.extract(m, path, filter=filter)
        raise exc

    monkeypatch.setattr(tarfile.TarFile, "extractall", half_then_fail)
    with pytest.raises(DownloadError if isinstance(exc, OSError) else KeyboardInterrupt):
        download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False)
    assert not (tmp_path / "caltech101").exists()
    assert _leftovers(tmp_path) == []
    assert not dataset_present("caltech101", tmp_path, sources=sources)

    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    seen = len(server.requests)
    download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False)
    assert (tmp_path / "caltech101" / ".complete").is_file()
    assert len(server.requests) == seen  # the verified archive was reused


def test_connection_refused_has_local_copy_hint(tmp_path):
    sources = {"caltech101": replace(dl.SOURCES["caltech101"], url=closed_port_url("c.zip"))}
    with pytest.raises(DownloadError, match="cannot connect") as err:
        download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False)
    hint = err.value.hint or ""
    assert f"101_ObjectCategories folder to {tmp_path / 'caltech101'}/" in hint
    assert "--data DIR" in hint
    assert not (tmp_path / "caltech101").exists()


def test_cli_reports_error_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dl.SOURCES, "voc2012",
                        replace(dl.SOURCES["voc2012"], url=closed_port_url("v.tar")))
    assert cli_main(["download", "datasets", "voc2012", "--data", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: voc2012: ") and len(err.strip().splitlines()) == 1  # the reason and the hint
    assert "VOCdevkit" in err and "Traceback" not in err


# --- the downloader itself ---------------------------------------------------------------------


PAYLOAD = os.urandom(300_000)


def test_resume_requests_only_the_rest(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    half = len(PAYLOAD) // 2
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:half])
    out = download_file(url, tmp_path / "blob.bin", checksum=_md5(PAYLOAD), progress_bar=False)
    assert out.read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", f"bytes={half}-")]
    assert not (tmp_path / "blob.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    server.ignore_range = True
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:1000])
    out = download_file(url, tmp_path / "blob.bin", checksum=hashlib.sha256(PAYLOAD).hexdigest(),
                        algo="sha256", progress_bar=False)
    assert out.read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", "bytes=1000-")]


def test_part_already_complete_gets_416(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    assert download_file(url, tmp_path / "blob.bin", checksum=_md5(PAYLOAD), progress_bar=False).is_file()
    assert server.requests == [("/blob.bin", f"bytes={len(PAYLOAD)}-")]


def test_dropped_connection_resumes_automatically(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    server.truncate_next = 1
    out = download_file(url, tmp_path / "blob.bin", checksum=_md5(PAYLOAD), progress_bar=False)
    assert out.read_bytes() == PAYLOAD
    (_, first_range), (_, rng) = server.requests
    assert first_range is None  # then resumed from what had been written to disk
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
    assert 0 < resumed_at <= len(PAYLOAD) // 2


def test_http_error_is_a_download_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "/missing.bin", tmp_path / "m.bin", progress_bar=False)


def test_gdrive_confirmation_page_is_parsed():
    html = ('<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
            '<input type="hidden" name="id" value="abc"><input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="u-1"></form>')
    action, params = dl._gdrive_confirm(html, {})
    assert action == "https://drive.usercontent.google.com/download"
    assert params == {"id": "abc", "confirm": "t", "uuid": "u-1"}
    assert dl._gdrive_confirm("<html></html>", {"download_warning_123": "tok"}) == (None, {"confirm": "tok"})


# --- safe extraction ---------------------------------------------------------------------------


def _tar_with(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ok = tarfile.TarInfo("fine/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        info.size = len(data) if info.isfile() else 0
        tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("member", [
    _member("../evil.txt"),
    _member("fine/../../evil.txt"),
    _member("/tmp/evil-absolute.txt"),
    _member("escape", tarfile.SYMTYPE, "../../evil.txt"),
    _member("abs-link", tarfile.SYMTYPE, "/etc/passwd"),
    _member("hard", tarfile.LNKTYPE, "../evil.txt"),
    _member("dev", tarfile.CHRTYPE),
], ids=lambda m: m.name)
def test_unsafe_tar_members_are_refused(tmp_path, member):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(_tar_with(member, b"evil" if member.isfile() else b""))
    dest = tmp_path / "a" / "dest"
    with pytest.raises(DownloadError, match="unsafe member"):
        safe_extract(archive, dest)
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/evil-absolute.txt").exists()
    assert not (dest / "fine").exists()  # refused as a whole, before writing anything


def test_unsafe_zip_member_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip({"ok.txt": b"ok", "../evil.txt": b"evil"}))
    with pytest.raises(DownloadError, match="unsafe member"):
        safe_extract(archive, tmp_path / "dest")
    assert not list(tmp_path.rglob("evil*"))


def test_safe_links_inside_dest_are_kept(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar_with(_member("fine/alias.txt", tarfile.SYMTYPE, "ok.txt")))
    safe_extract(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "fine" / "alias.txt").read_text() == "ok"


def test_unsafe_archive_in_download_leaves_no_collection(server, tmp_path):
    bad = _zip({"caltech-101/101_ObjectCategories.tar.gz": _tar_with(_member("../evil.txt"), b"x")})
    sources = {"caltech101": replace(dl.SOURCES["caltech101"], url=server.add("c.zip", bad),
                                     checksum=_md5(bad))}
    with pytest.raises(DownloadError, match="unsafe member"):
        download_dataset("caltech101", tmp_path, sources=sources, progress_bar=False)
    assert not (tmp_path / "caltech101").exists() and _leftovers(tmp_path) == []
    assert not list(tmp_path.rglob("evil*"))


# --- weights -----------------------------------------------------------------------------------


WEIGHTS = b"not really a state dict " * 1000


def test_weights_download_verifies_hash_prefix(server, tmp_path):
    name = f"resnet50-{hashlib.sha256(WEIGHTS).hexdigest()[:8]}.pth"
    url = server.add(name, WEIGHTS)
    ckpt = tmp_path / "hub" / "checkpoints"
    path = ensure_imagenet_weights(False, checkpoints_dir=ckpt, url=url)
    assert path == ckpt / name and path.read_bytes() == WEIGHTS
    assert ensure_imagenet_weights(False, checkpoints_dir=ckpt, url=url) == path
    assert len(server.requests) == 1


def test_weights_wrong_hash_prefix_is_refused(server, tmp_path):
    url = server.add("resnet50-0badc0de.pth", WEIGHTS)
    ckpt = tmp_path / "checkpoints"
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        ensure_imagenet_weights(False, checkpoints_dir=ckpt, url=url)
    assert "--weights untrained" in (err.value.hint or "")
    assert list(ckpt.iterdir()) == []


def test_weights_offline_hint(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect") as err:
        ensure_imagenet_weights(False, checkpoints_dir=tmp_path,
                                url=closed_port_url("resnet50-11ad3fa6.pth"))
    assert f"resnet50-11ad3fa6.pth into {tmp_path}/" in err.value.hint
    assert "--weights /path/to/file.pth" in err.value.hint


def test_default_weights_location_follows_torch_hub(tmp_path, monkeypatch):
    torch_hub = pytest.importorskip("torch.hub")
    pytest.importorskip("torchvision")
    monkeypatch.setattr(torch_hub, "get_dir", lambda: str(tmp_path / "hub"))
    path = dl.imagenet_weights_path()
    assert path.parent == tmp_path / "hub" / "checkpoints"
    assert re.fullmatch(r"resnet50-[0-9a-f]{8,}\.pth", path.name)
    (path.parent).mkdir(parents=True)
    path.write_bytes(b"cached")
    assert ensure_imagenet_weights(False) == path  # present: no download attempted


# --- command line and shell wrapper ------------------------------------------------------------


def test_check_command(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert cli_main(["download", "check", "--data", str(tmp_path), "--weights-dir", str(ckpt)]) == 1
    assert "caltech101   missing" in capsys.readouterr().out


@pytest.mark.parametrize("args", [[], ["bogus"], ["caltech101", "--data"], ["--data", "x"]])
def test_shell_wrapper_usage(args):
    proc = subprocess.run([str(REPO / "data_download.sh"), *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0
    assert "usage: ./data_download.sh" in proc.stderr


def test_shell_wrapper_runs_the_module(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories" / "ants"
    cats.mkdir(parents=True)
    (cats / "a.jpg").write_bytes(_jpeg((0, 0, 0)))
    proc = subprocess.run([str(REPO / "data_download.sh"), "caltech101", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"caltech101: ready in {tmp_path / 'caltech101'}" in proc.stdout
