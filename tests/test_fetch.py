"""Tests for :mod:`app.net.fetch`: URL and address checks, pinning, redirects, size and time limits.

Every server here binds 127.0.0.1 on a random port, runs in a daemon thread and is shut down by
the ``serve`` fixture. Name resolution is faked (``FakeDNS``); real ``getaddrinfo`` is only ever
called with ``AI_NUMERICHOST``, so no test touches the network.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

import app.net.fetch as fetch_mod
from app.errors import FetchError
from app.net.fetch import DEFAULT_MAX_BYTES, address_refusal, fetch_url
from tests.fakes import QuietHTTPServer

REAL_GETADDRINFO = socket.getaddrinfo
REAL_CONNECT_SOCKET = fetch_mod._connect_socket

Handler = http.server.BaseHTTPRequestHandler
Route = Callable[[Handler], None]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 90)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]


class LocalServer:
    """A tiny HTTP(S) server on 127.0.0.1 that answers from a ``{path: route}`` table."""

    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.seen: list[SeenRequest] = []
        owner = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                owner.seen.append(
                    SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                route = owner.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                # The client hangs up on purpose in the limit tests; that is not an error here.
                with contextlib.suppress(OSError):
                    route(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.seen]


@pytest.fixture
def serve() -> Iterator[Callable[..., LocalServer]]:
    servers: list[LocalServer] = []

    def start(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> LocalServer:
        server = LocalServer(routes, tls)
        server.thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


class FakeDNS:
    """Stands in for ``socket.getaddrinfo``: ``answers[host]`` lists the answer of each call.

    The last answer repeats. IP literals go to the real function with ``AI_NUMERICHOST``; any
    other name fails as unknown.
    """

    def __init__(self, answers: dict[str, list[list[str]]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[str] = []

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        self.calls.append(host)
        if host in self.answers:
            seq = self.answers[host]
            ips = seq[min(self.calls.count(host), len(seq)) - 1]
            infos = []
            for ip in ips:
                if ":" in ip:
                    infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
                else:
                    infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
            return infos
        return REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every socket address fetch_url connects to (the connection itself still happens)."""
    seen: list[tuple] = []

    def recording(family, sockaddr, timeout):
        seen.append(tuple(sockaddr[:2]))
        return REAL_CONNECT_SOCKET(family, sockaddr, timeout)

    monkeypatch.setattr(fetch_mod, "_connect_socket", recording)
    return seen


def send_body(data: bytes, *, content_length: bool = True, chunked: bool = False) -> Route:
    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        elif content_length:
            h.send_header("Content-Length", str(len(data)))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if chunked:
            for i in range(0, len(data), 700):
                piece = data[i : i + 700]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            h.wfile.write(b"0\r\n\r\n")
        else:
            h.wfile.write(data)

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(h: Handler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


# --------------------------------------------------------------------------- happy path


def test_fetches_png_from_local_server(serve, png_bytes: bytes) -> None:
    server = serve({"/img.png": send_body(png_bytes)})
    assert fetch_url(server.url("/img.png"), allow_loopback=True) == png_bytes
    headers = server.seen[0].headers
    assert headers["accept"] == "image/*"
    assert "reverse-image-search" in headers["user-agent"]
    assert headers["host"] == f"127.0.0.1:{server.port}"


def test_query_string_and_non_ascii_path_are_sent_encoded(serve, png_bytes: bytes) -> None:
    server = serve({"/caf%C3%A9.png": send_body(png_bytes)})
    assert fetch_url(server.url("/café.png?size=large#frag"), allow_loopback=True) == png_bytes
    assert server.paths == ["/caf%C3%A9.png?size=large"]


def test_default_max_bytes_is_20_mb() -> None:
    assert DEFAULT_MAX_BYTES == 20 * 1024 * 1024


# --------------------------------------------------------------------------- address checks

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("::", "unspecified"),
    ("240.0.0.1", ""),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("::ffff:127.0.0.1", "embeds 127.0.0.1"),
    ("::ffff:10.0.0.1", "embeds 10.0.0.1"),
    ("::ffff:8.8.8.8", "IPv4-mapped"),
    ("64:ff9b::a00:1", "NAT64"),
    ("64:ff9b::808:808", "NAT64"),
    ("64:ff9b:1::1", "NAT64"),
    ("2002:a00:1::1", "6to4 range, embeds 10.0.0.1"),
    ("2002:7f00:1::1", "embeds 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo range, embeds 10.0.0.1"),
    ("fec0::1", "site-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("192.0.0.8", ""),
    ("192.0.2.1", ""),
    ("198.18.0.1", ""),
    ("2001:db8::1", "documentation"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_classifier_refuses(address: str, reason: str) -> None:
    refusal = address_refusal(address)
    assert refusal is not None
    assert reason in refusal


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001:82b::200e"],
)
def test_classifier_accepts_public_addresses(address: str) -> None:
    assert address_refusal(address) is None
    assert address_refusal(address, allow_loopback=True) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.5.5.5", "::1"])
def test_allow_loopback_allows_loopback(address: str) -> None:
    assert address_refusal(address, allow_loopback=True) is None


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "fc00::1",
        "100.64.0.1",
    ],
)
def test_allow_loopback_allows_nothing_else(address: str) -> None:
    assert address_refusal(address, allow_loopback=True) is not None


def test_classifier_refuses_garbage() -> None:
    assert address_refusal("not-an-ip") is not None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/img.png", "http://[::1]/img.png", "http://localhost/img.png"]
)
def test_loopback_refused_by_default(dns: FakeDNS, connects: list, url: str) -> None:
    dns.answers["localhost"] = [["127.0.0.1"]]
    with pytest.raises(FetchError, match="is not allowed"):
        fetch_url(url)
    assert connects == []


def test_hostname_resolving_to_private_address_is_refused_without_connecting(
    dns: FakeDNS, connects: list
) -> None:
    dns.answers["cdn.example"] = [["10.0.0.1"]]
    with pytest.raises(FetchError, match=r"10\.0\.0\.1 of cdn\.example is not allowed \(private"):
        fetch_url("https://cdn.example/cat.jpg")
    assert dns.calls == ["cdn.example"]
    assert connects == []


def test_any_bad_address_among_several_is_refused(dns: FakeDNS, connects: list) -> None:
    dns.answers["mixed.example"] = [["93.184.216.34", "169.254.169.254"]]
    with pytest.raises(FetchError, match="169.254.169.254.*not allowed"):
        fetch_url("http://mixed.example/cat.jpg")
    assert connects == []


def test_allow_loopback_does_not_allow_private(dns: FakeDNS, connects: list) -> None:
    dns.answers["images.test"] = [["192.168.0.10"]]
    with pytest.raises(FetchError, match="not allowed"):
        fetch_url("http://images.test:8080/x.png", allow_loopback=True)
    assert connects == []


def test_allow_loopback_opens_other_ports_only_for_loopback(dns: FakeDNS, connects: list) -> None:
    dns.answers["images.test"] = [["93.184.216.34"]]
    with pytest.raises(FetchError, match="default port"):
        fetch_url("http://images.test:8080/x.png", allow_loopback=True)
    assert connects == []


def test_unknown_host_is_a_fetch_error(dns: FakeDNS) -> None:
    with pytest.raises(FetchError, match="could not be found"):
        fetch_url("http://no-such-host.example/x.png")


# --------------------------------------------------------------------------- URL checks


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/a.png", "http:// and https://"),
        ("file:///etc/passwd", "http:// and https://"),
        ("javascript:alert(1)", "http:// and https://"),
        ("data:image/png;base64,AAAA", "http:// and https://"),
        ("//example.com/a.png", "http:// and https://"),
        ("example.com/a.png", "http:// and https://"),
        ("", "empty"),
        ("http://example.com:8080/a.png", "default port"),
        ("https://example.com:80/a.png", "default port"),
        ("http://example.com:99999/a.png", "port"),
        ("http://example.com:0/a.png", "port"),
        ("http://user:pass@example.com/a.png", "user name or password"),
        ("http://user@example.com/a.png", "user name or password"),
        ("http://example.com\\@10.0.0.1/a.png", "user name or password"),
        ("http:///a.png", "no host"),
        ("http://:80/a.png", "no host"),
        ("http://exa mple.com/a.png", "spaces or control"),
        ("http://example.com/a\n.png", "spaces or control"),
        ("http://xn--zz.com/a.png", "not valid"),
        ("http://a..b/a.png", "not valid"),
        ("http://\u2488.com/a.png", "not valid"),
        ("http://exa$mple.com/a.png", "not valid"),
        ("http://[fe80::1%25eth0]/a.png", "zone"),
        ("http://[1.2.3.4]/a.png", "not valid"),
    ],
)
def test_bad_urls_are_refused_before_any_lookup(
    dns: FakeDNS, connects: list, url: str, message: str
) -> None:
    with pytest.raises(FetchError, match=message):
        fetch_url(url)
    assert dns.calls == []
    assert connects == []


def test_non_text_url_is_refused() -> None:
    with pytest.raises(FetchError):
        fetch_url(b"http://example.com/")  # type: ignore[arg-type]


def test_explicit_default_port_is_accepted_and_checked_ip_is_dialled(
    dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialled: list[tuple] = []

    def refuse(family, sockaddr, timeout):
        dialled.append(tuple(sockaddr[:2]))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(fetch_mod, "_connect_socket", refuse)
    dns.answers["example.com"] = [["93.184.216.34"]]
    with pytest.raises(FetchError, match="example.com refused the connection"):
        fetch_url("http://example.com:80/a.png")
    assert dialled == [("93.184.216.34", 80)]


def test_idna_host_is_resolved_in_ascii_form(dns: FakeDNS, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(family, sockaddr, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(fetch_mod, "_connect_socket", refuse)
    dns.answers["xn--mnchen-3ya.de"] = [["93.184.216.34"]]
    with pytest.raises(FetchError, match="refused"):
        fetch_url("https://münchen.de/a.png")
    assert dns.calls == ["xn--mnchen-3ya.de"]


def test_connect_timeout_is_reported_readably(
    dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hang(family, sockaddr, timeout):
        raise TimeoutError("timed out")

    monkeypatch.setattr(fetch_mod, "_connect_socket", hang)
    dns.answers["example.com"] = [["93.184.216.34"]]
    with pytest.raises(FetchError, match=r"The server at example.com did not answer within 3 s\."):
        fetch_url("https://example.com/a.png")


# --------------------------------------------------------------------------- pinning


def test_connection_goes_to_the_checked_address(
    serve, dns: FakeDNS, connects: list, png_bytes: bytes
) -> None:
    server = serve({"/img.png": send_body(png_bytes)})
    # A second lookup would get another answer (DNS rebinding); 127.0.0.2 is not served.
    dns.answers["images.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    assert fetch_url(server.url("/img.png", host="images.test"), allow_loopback=True) == png_bytes
    assert dns.calls.count("images.test") == 1
    assert connects == [("127.0.0.1", server.port)]
    assert server.seen[0].headers["host"] == f"images.test:{server.port}"


def test_every_hop_is_resolved_exactly_once(serve, dns: FakeDNS, png_bytes: bytes) -> None:
    server = serve({"/img.png": send_body(png_bytes)})
    server.routes["/hop"] = redirect(server.url("/img.png", host="images.test"))
    dns.answers["images.test"] = [["127.0.0.1"]]
    assert fetch_url(server.url("/hop", host="images.test"), allow_loopback=True) == png_bytes
    assert dns.calls.count("images.test") == 2
    assert [r.headers["host"] for r in server.seen] == [f"images.test:{server.port}"] * 2


def test_rebinding_on_the_next_hop_is_refused(serve, dns: FakeDNS, connects: list) -> None:
    server = serve({})
    server.routes["/hop"] = redirect(server.url("/img.png", host="images.test"))
    dns.answers["images.test"] = [["127.0.0.1"], ["10.0.0.1"]]
    with pytest.raises(FetchError, match=r"10\.0\.0\.1 of images\.test is not allowed"):
        fetch_url(server.url("/hop", host="images.test"), allow_loopback=True)
    assert dns.calls.count("images.test") == 2
    assert connects == [("127.0.0.1", server.port)]


# --------------------------------------------------------------------------- redirects


def test_two_redirects_are_followed(serve, png_bytes: bytes) -> None:
    server = serve({"/img.png": send_body(png_bytes), "/a/r2": redirect("../img.png", 301)})
    server.routes["/r1"] = redirect("/a/r2", 307)  # relative Location headers
    assert fetch_url(server.url("/r1"), allow_loopback=True) == png_bytes
    assert server.paths == ["/r1", "/a/r2", "/img.png"]


def test_three_redirects_are_the_limit(serve, png_bytes: bytes) -> None:
    server = serve({"/img.png": send_body(png_bytes)})
    server.routes["/r1"] = redirect("/r2")
    server.routes["/r2"] = redirect("/r3", 303)
    server.routes["/r3"] = redirect(server.url("/img.png"), 308)
    assert fetch_url(server.url("/r1"), allow_loopback=True) == png_bytes


def test_four_redirects_are_refused(serve, png_bytes: bytes) -> None:
    server = serve({"/img.png": send_body(png_bytes)})
    server.routes.update({f"/r{i}": redirect(f"/r{i + 1}") for i in range(1, 4)})
    server.routes["/r4"] = redirect("/img.png")
    with pytest.raises(FetchError, match="redirected more than 3 times"):
        fetch_url(server.url("/r1"), allow_loopback=True)
    assert server.paths == ["/r1", "/r2", "/r3", "/r4"]


def test_redirect_to_private_address_is_refused(serve, dns: FakeDNS, connects: list) -> None:
    server = serve({"/r": redirect("http://10.0.0.1/img.png")})
    with pytest.raises(FetchError, match=r"10\.0\.0\.1 is not allowed"):
        fetch_url(server.url("/r"), allow_loopback=True)
    assert connects == [("127.0.0.1", server.port)]


def test_redirect_to_host_resolving_to_private_address_is_refused(
    serve, dns: FakeDNS, connects: list
) -> None:
    dns.answers["cdn.example"] = [["10.0.0.1"]]
    server = serve({"/r": redirect("https://cdn.example/img.png")})
    with pytest.raises(FetchError, match="not allowed"):
        fetch_url(server.url("/r"), allow_loopback=True)
    assert connects == [("127.0.0.1", server.port)]


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://example.com/x.png", "gopher://127.0.0.1/"]
)
def test_redirect_to_other_scheme_is_refused(serve, location: str) -> None:
    server = serve({"/r": redirect(location)})
    with pytest.raises(FetchError, match="http:// and https://"):
        fetch_url(server.url("/r"), allow_loopback=True)


def test_redirect_without_location_is_refused(serve) -> None:
    def no_location(h: Handler) -> None:
        h.send_response(302)
        h.send_header("Content-Length", "0")
        h.end_headers()

    server = serve({"/r": no_location})
    with pytest.raises(FetchError, match="302"):
        fetch_url(server.url("/r"), allow_loopback=True)


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_status_is_reported(serve, status: int) -> None:
    def fail(h: Handler) -> None:
        h.send_error(status)

    server = serve({"/x.png": fail})
    with pytest.raises(FetchError, match=str(status)):
        fetch_url(server.url("/x.png"), allow_loopback=True)


def test_missing_page_is_404(serve) -> None:
    server = serve({})
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(server.url("/missing.png"), allow_loopback=True)


def test_connection_refused_is_reported(serve) -> None:
    server = serve({})
    port = server.port
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(FetchError, match="refused the connection"):
        fetch_url(f"http://127.0.0.1:{port}/x.png", allow_loopback=True)


def test_truncated_body_is_refused(serve) -> None:
    def short(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "5000")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"x" * 100)
        h.close_connection = True

    server = serve({"/x.png": short})
    with pytest.raises(FetchError, match="closed before"):
        fetch_url(server.url("/x.png"), allow_loopback=True)


def test_compressed_response_is_refused(serve) -> None:
    def gz(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", "4")
        h.end_headers()
        h.wfile.write(b"abcd")

    server = serve({"/x.png": gz})
    with pytest.raises(FetchError, match="compressed"):
        fetch_url(server.url("/x.png"), allow_loopback=True)


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize(
    "route",
    [
        send_body(b"x" * 5000),  # honest Content-Length, refused before reading
        send_body(b"x" * 5000, chunked=True),  # no Content-Length
        send_body(b"x" * 5000, content_length=False),  # read until the server closes
    ],
    ids=["content-length", "chunked", "close-delimited"],
)
def test_body_over_max_bytes_is_refused(serve, route: Route) -> None:
    server = serve({"/big.png": route})
    with pytest.raises(FetchError, match=r"larger than the .* MB \(1000 bytes\) limit"):
        fetch_url(server.url("/big.png"), allow_loopback=True, max_bytes=1000)


def test_body_of_exactly_max_bytes_is_accepted(serve) -> None:
    server = serve({"/ok.png": send_body(b"y" * 1000, chunked=True)})
    assert fetch_url(server.url("/ok.png"), allow_loopback=True, max_bytes=1000) == b"y" * 1000


def test_too_large_content_length_is_refused_before_reading(serve) -> None:
    def huge(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(DEFAULT_MAX_BYTES + 1))
        h.end_headers()  # no body at all: only the announced length can trigger the refusal

    server = serve({"/huge.png": huge})
    with pytest.raises(FetchError, match=r"larger than the 20 MB limit"):
        fetch_url(server.url("/huge.png"), allow_loopback=True)


# --------------------------------------------------------------------------- time limits


def _drip_body(h: Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", "1000")
    h.end_headers()
    for _ in range(60):  # at most 6 s; the client gives up long before
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.1)


def _drip_headers(h: Handler) -> None:
    h.close_connection = True
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
    for _ in range(60):
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(0.1)


@pytest.mark.parametrize("route", [_drip_body, _drip_headers], ids=["body", "headers"])
def test_slow_drip_is_stopped_by_the_deadline(serve, route: Route) -> None:
    server = serve({"/slow.png": route})
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 1 s"):
        fetch_url(server.url("/slow.png"), allow_loopback=True, deadline=1.0, read_timeout=0.5)
    assert time.monotonic() - start < 3.0


def test_stalled_server_hits_the_read_timeout(serve) -> None:
    def stall(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "10")
        h.end_headers()
        h.wfile.flush()
        time.sleep(1.5)

    server = serve({"/stall.png": stall})
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"stopped sending data for more than 0.3 s"):
        fetch_url(server.url("/stall.png"), allow_loopback=True, read_timeout=0.3, deadline=5.0)
    assert time.monotonic() - start < 1.5


def test_invalid_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        fetch_url("http://example.com/", max_bytes=0)
    with pytest.raises(ValueError):
        fetch_url("http://example.com/", max_redirects=-1)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=images.test",
            "-addext",
            "subjectAltName=DNS:images.test",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def tls_server(serve, tls_files: tuple[Path, Path], png_bytes: bytes) -> tuple[LocalServer, list]:
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sni: list = []
    context.sni_callback = lambda sslobj, name, ctx: sni.append(name)
    return serve({"/img.png": send_body(png_bytes)}, tls=context), sni


def _trust(monkeypatch: pytest.MonkeyPatch, cert: Path) -> None:
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    monkeypatch.setattr(fetch_mod, "_tls_context", lambda: context)


def test_https_verifies_the_url_host_name_while_dialling_the_checked_ip(
    tls_server,
    tls_files,
    dns: FakeDNS,
    connects: list,
    monkeypatch: pytest.MonkeyPatch,
    png_bytes: bytes,
) -> None:
    server, sni = tls_server
    _trust(monkeypatch, tls_files[0])
    dns.answers["images.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    url = server.url("/img.png", host="images.test", scheme="https")
    assert fetch_url(url, allow_loopback=True) == png_bytes
    assert sni == ["images.test"]
    assert connects == [("127.0.0.1", server.port)]
    assert server.seen[0].headers["host"] == f"images.test:{server.port}"


def test_https_certificate_for_another_name_is_refused(
    tls_server, tls_files, dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = tls_server
    _trust(monkeypatch, tls_files[0])
    dns.answers["other.test"] = [["127.0.0.1"]]
    with pytest.raises(FetchError, match="could not be verified"):
        fetch_url(server.url("/img.png", host="other.test", scheme="https"), allow_loopback=True)
    assert server.seen == []


def test_https_untrusted_certificate_is_refused(tls_server, dns: FakeDNS) -> None:
    server, _ = tls_server
    dns.answers["images.test"] = [["127.0.0.1"]]
    with pytest.raises(FetchError, match="could not be verified"):
        fetch_url(server.url("/img.png", host="images.test", scheme="https"), allow_loopback=True)
