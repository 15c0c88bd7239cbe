"""Hostile requests against the real web app (app.web.guard and Gradio's routes behind it).

Path traversal through every file-serving route, the Host header, cross-origin state changes, and
oversized bodies refused before they are read. The app runs on 127.0.0.1 from a thread; raw sockets
send what an HTTP client library would not.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.parse

import pytest

from app.service.search import SearchService
from tests.fakes import SpyEmbedder, free_port, running_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(small_collection, embedder):
    config = small_collection[0].with_(port=free_port(), max_upload_mb=1)
    service = SearchService(config, embedder=SpyEmbedder(embedder))
    with running_app(config, service) as url:
        yield config, url


def raw(port: int, request: bytes, body: bytes = b"", *, read_timeout: float = 5.0) -> tuple[int, bytes, float]:
    """Send ``request`` (and ``body``) on a fresh connection; (status, response, seconds to the status line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        t = time.monotonic()
        s.sendall(request + body)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        took = time.monotonic() - t
        try:
            s.settimeout(0.5)
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data, took


def get(port: int, target: str, host: str | None = None) -> int:
    host = host or f"127.0.0.1:{port}"
    return raw(port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())[0]


# -- paths ---------------------------------------------------------------------------------------------
def test_path_traversal_is_refused_on_every_file_route(served, tmp_path):
    config, _ = served
    port = config.port
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    thumbs = config.cache_dir / "thumbnails"
    thumbs.mkdir(parents=True, exist_ok=True)
    link = thumbs / "escape.jpg"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(secret, link)  # a link inside a served folder, pointing out of it
    try:
        root = str(thumbs)
        attempts = [
            f"{root}/../../../../../../etc/passwd",
            f"{root}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            f"{root}/%252e%252e/%252e%252e/etc/passwd",
            "/etc/passwd",
            str(secret),
            f"{root}\\..\\..\\..\\..\\etc\\passwd",
            f"{root}/..%2f..%2f..%2f..%2fetc%2fpasswd",
            str(link),
        ]
        for path in attempts:
            for prefix in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/static/", "/assets/"):
                target = prefix + urllib.parse.quote(path, safe="/%\\") if "%" not in path else prefix + path
                status = get(port, target)
                assert status in (400, 403, 404), (target, status)
    finally:
        link.unlink()
    assert get(port, "/gradio_api/file=" + urllib.parse.quote(str(secret))) == 403
    # while a real rendering in the same folder is served
    from app.core.thumbnails import Thumbnails

    photo = next(config.indexes_dir.parent.glob("photos/*/*.jpg"))
    thumb = Thumbnails(thumbs).thumb(photo)
    assert thumb.ok and get(port, "/gradio_api/file=" + urllib.parse.quote(str(thumb.path))) == 200


# -- Host and Origin ---------------------------------------------------------------------------------------
def test_another_host_header_gets_400(served):
    config, _ = served
    for host in ("evil.example", f"evil.example:{config.port}", "127.0.0.1", f"127.0.0.1.nip.io:{config.port}"):
        assert get(config.port, "/", host=host) == 400, host
    assert get(config.port, "/") == 200


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)),
                                                  "Connection": "close", **headers}.items())
    return raw(port, f"POST {path} HTTP/1.1\r\n{head}\r\n".encode(), body)[0]


@pytest.mark.parametrize("path, ctype, body", [
    ("/gradio_api/upload", "multipart/form-data; boundary=XyZ",
     b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
     b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ--\r\n"),
    ("/gradio_api/queue/join", "application/json",
     b'{"data": [null, "shapes", 5], "fn_index": 0, "session_hash": "abc", "event_data": null, "trigger_id": 1}'),
])
def test_cross_origin_posts_are_refused(served, path, ctype, body):
    config, _ = served
    port = config.port
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"http://localhost.evil:{port}"):
        assert _post(port, path, body, {"Content-Type": ctype, "Origin": origin}) == 403, origin
    assert _post(port, path, body, {"Content-Type": ctype, "Sec-Fetch-Site": "cross-site"}) == 403
    # The page's own origin, and scripts that send none, get through to Gradio.
    for headers in ({"Origin": f"http://127.0.0.1:{port}"}, {"Origin": f"http://localhost:{port}"}, {}):
        assert _post(port, path, body, {"Content-Type": ctype, **headers}) not in (403, 400), headers


# -- size ------------------------------------------------------------------------------------------------
def test_an_oversized_upload_gets_413_before_its_body_is_sent(served):
    """A 200 MB Content-Length: the answer comes at once, with a few bytes of the body sent."""
    config, _ = served
    port = config.port
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 209715200\r\n\r\n").encode()
    status, _, took = raw(port, head, b"--XyZ\r\n")
    assert status == 413 and took < 2.0


def test_a_chunked_body_over_the_limit_is_cut_off(served):
    """No Content-Length: the body is counted as it arrives and refused once past the limit (1 MB here)."""
    config, _ = served
    port = config.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   "Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"x" * 65536
        sent, answer = 0, b""
        s.settimeout(0.05)
        while sent < 20 * 1024 * 1024 and not answer:  # at most 20 MB, then give up
            try:
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                answer = s.recv(4096)
            except (TimeoutError, socket.timeout):
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        if not answer:
            s.settimeout(5)
            try:
                answer = s.recv(4096)
            except OSError:
                answer = b""
    assert answer.startswith(b"HTTP/1.1 413") or answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert sent < 4 * 1024 * 1024  # refused soon after the 1 MB limit (plus the framing allowance)
