"""Issue 12, SSRF: every way of writing an internal address is refused before any connection, and
endless or slow-drip answers are cut off by the size cap and the deadline.

Name resolution is a recorder that knows only the names a test gives it; connections go through a
recorder too, and the only server is a local one on 127.0.0.1 (a random port).
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import app.net.fetch as fetch_mod
from app.errors import FetchError
from app.net.fetch import fetch_url
from app.net.urlpolicy import address_refusal, parse_url
from tests.fakes import QuietHTTPServer, serving

PUBLIC_IP = "93.184.216.34"  # what the fake public name resolves to (never really dialled)
REAL_CONNECT = fetch_mod._connect_socket

Handler = http.server.BaseHTTPRequestHandler


class Network:
    """The fake resolver and connection recorder: ``names`` maps a host name to its addresses;
    ``route`` sends connections for an address to a local port (the test server) instead."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.route: dict[str, int] = {}
        self.lookups: list[str] = []
        self.connects: list[str] = []

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port, 0, 0) if ":" in ip else (ip, port)) for ip in self.names[host]]

    def connect(self, family, sockaddr, timeout):
        self.connects.append(sockaddr[0])
        if sockaddr[0] in self.route:
            return REAL_CONNECT(socket.AF_INET, ("127.0.0.1", self.route[sockaddr[0]]), timeout)
        raise AssertionError(f"the fetcher connected to {sockaddr}")


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Network:
    fake = Network()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(fetch_mod, "_connect_socket", fake.connect)
    return fake


@pytest.fixture
def server() -> Iterator[tuple[dict[str, Callable[[Handler], None]], int]]:
    """A local HTTP server answering from a ``{path: route}`` table: (routes, port)."""
    routes: dict[str, Callable[[Handler], None]] = {}

    class _Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def do_GET(self) -> None:  # noqa: N802
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            try:
                route(self)
            except OSError:  # the client hung up, as the limit tests want
                pass

        def log_message(self, *args) -> None:
            return

    httpd = QuietHTTPServer(("127.0.0.1", 0), _Handler)
    with serving(httpd):
        yield routes, httpd.server_address[1]


# -- every form of an internal address ------------------------------------------------------------

INTERNAL_HOSTS = [
    "127.0.0.1", "127.1", "localhost", "localhost.", "LOCALHOST", "app.localhost", "[::1]",
    "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "0x7f000001", "017700000001", "0177.0.0.1",
    "127.000.000.001", "127.0.0.1.", "0", "0.0.0.0", "[::]", "[0:0:0:0:0:0:0:1]",
    "169.254.169.254", "100.100.100.200", "[fd00::1]", "[64:ff9b::7f00:1]", "[::127.0.0.1]",
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.0.1", "192.168.255.255",
]


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("host", INTERNAL_HOSTS)
def test_internal_address_forms_are_refused_before_any_lookup_or_connection(net: Network, host, scheme):
    with pytest.raises(FetchError, match="is not allowed") as info:
        fetch_url(f"{scheme}://{host}/latest/meta-data/")
    assert net.lookups == [] and net.connects == []
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("written", "meant"), [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("017700000001", "127.0.0.1"),
    ("0x5d.184.216.34", PUBLIC_IP), ("93.0xb8.55330", PUBLIC_IP), ("1.2.3.04", "1.2.3.4"),
    ("8.8.8.8.", "8.8.8.8"),
])
def test_numeric_hosts_mean_what_browsers_read_in_them(written: str, meant: str):
    assert parse_url(f"http://{written}/a.png", allow_loopback=True).host == meant
    assert socket.inet_ntoa(socket.inet_aton(written.rstrip("."))) == meant  # what the C resolver reads too


@pytest.mark.parametrize(("written", "meant"), [("0", "0.0.0.0"), ("0x7f.1", "127.0.0.1"), ("0xa.0.1", "10.0.0.1")])
def test_refusal_names_the_address_and_how_it_was_written(written: str, meant: str):
    with pytest.raises(FetchError, match=rf"The address {meant} \(written {written} in the URL\) is not allowed"):
        parse_url(f"http://{written}/", allow_loopback=False)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "1.2.3.256", "1.2.65536", "0x100000000", "09.1.1.1",
                                  "images.example.123", "cdn.0x1f"])
def test_malformed_numeric_hosts_are_refused(net: Network, host: str):
    with pytest.raises(FetchError, match="not valid"):
        fetch_url(f"http://{host}/a.png")
    assert net.lookups == [] and net.connects == []


def test_unbracketed_ipv6_is_refused(net: Network):
    with pytest.raises(FetchError, match="port"):
        fetch_url("http://fd00::1/a.png")
    assert net.lookups == [] and net.connects == []


def _seeded_addresses(network: str, n: int, seed: int) -> list[str]:
    net = ipaddress.ip_network(network)
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, net.num_addresses, size=n)
    return [str(net.network_address + int(o)) for o in offsets]


@pytest.mark.parametrize("network", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
def test_private_ranges_are_refused_throughout_and_not_beyond(net: Network, network: str):
    block = ipaddress.ip_network(network)
    inside = [str(block.network_address), str(block.broadcast_address), *_seeded_addresses(network, 20, seed=12)]
    for address in inside:
        assert "private" in (address_refusal(address) or ""), address
        with pytest.raises(FetchError, match="private network"):
            fetch_url(f"http://{address}/a.png")
    # just outside the block are public addresses: the check is the range, not a prefix of the text
    for address in (block.network_address - 1, block.broadcast_address + 1):
        assert address_refusal(str(address)) is None, address
    assert net.lookups == [] and net.connects == []


@pytest.mark.parametrize("url", [
    "http://user@127.0.0.1/", "http://user:secret@127.0.0.1/", "http://images.example.com@127.0.0.1/",
    "http://images.example.com:80@127.0.0.1/", "http://127.0.0.1@images.example.com/",
    "http://user%40images.example.com@10.0.0.1/", "http://@127.0.0.1/",
])
def test_userinfo_tricks_are_refused(net: Network, url: str):
    net.names["images.example.com"] = [PUBLIC_IP]
    with pytest.raises(FetchError, match="user name or password"):
        fetch_url(url)
    assert net.lookups == [] and net.connects == []


@pytest.mark.parametrize("answer", [["10.1.2.3"], ["127.0.0.1"], ["169.254.169.254"], ["::1"], ["fd00::1"],
                                    ["::ffff:127.0.0.1"], ["64:ff9b::7f00:1"], [PUBLIC_IP, "192.168.1.7"]])
def test_public_looking_name_resolving_to_an_internal_address_is_refused(net: Network, answer: list[str]):
    net.names["images.example.com"] = answer
    with pytest.raises(FetchError, match="of images.example.com is not allowed"):
        fetch_url("https://images.example.com/cat.jpg")
    assert net.lookups == ["images.example.com"] and net.connects == []


def _redirect(location: str) -> Callable[[Handler], None]:
    def route(h: Handler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


@pytest.mark.parametrize("location", [
    "http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://localhost/admin", "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/", "http://10.0.0.1/", "http://0/",
    "http://user@127.0.0.1/", "http://internal.example/", "//internal.example/x.png",
])
def test_redirect_to_an_internal_address_is_refused(net: Network, server, location: str):
    routes, port = server
    routes["/r"] = _redirect(location)
    net.names.update({"images.example.com": [PUBLIC_IP], "internal.example": ["192.168.1.10"]})
    net.route[PUBLIC_IP] = port  # the "public" host is the local server; loopback stays forbidden
    with pytest.raises(FetchError, match="not allowed"):
        fetch_url("http://images.example.com/r")
    assert net.connects == [PUBLIC_IP]  # the first hop only


# -- endless and slow answers ------------------------------------------------------------------------


def _endless(chunk: bytes, pause: float, seconds: float = 10.0, chunked: bool = True) -> Callable[[Handler], None]:
    """A body that never ends (bounded here: ``seconds`` and 200,000 writes), chunked or close-delimited."""

    def route(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        h.close_connection = True
        h.end_headers()
        end = time.monotonic() + seconds
        for _ in range(200_000):
            if time.monotonic() > end:
                break
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            h.wfile.flush()
            if pause:
                time.sleep(pause)

    return route


def _endless_headers(line: bytes) -> Callable[[Handler], None]:
    def route(h: Handler) -> None:
        h.close_connection = True
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        end = time.monotonic() + 10
        for _ in range(200_000):
            if time.monotonic() > end:
                break
            h.wfile.write(line)
        h.wfile.flush()

    return route


def _timed(url: str, **kw) -> tuple[FetchError, float]:
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_url(url, allow_loopback=True, **kw)
    return info.value, time.monotonic() - start


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_endless_fast_body_is_cut_off_by_the_size_cap(server, chunked: bool):
    routes, port = server
    routes["/endless"] = _endless(b"\xff" * 65536, pause=0.0, chunked=chunked)
    error, seconds = _timed(f"http://127.0.0.1:{port}/endless", max_bytes=2_000_000, deadline=10.0)
    assert "larger than" in str(error) and "1.91 MB" in str(error)
    assert seconds < 3.0


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "close-delimited"])
def test_endless_slow_drip_under_the_cap_is_cut_off_by_the_deadline(server, chunked: bool):
    routes, port = server
    routes["/drip"] = _endless(b"x", pause=0.02, chunked=chunked)  # always under the read timeout
    error, seconds = _timed(f"http://127.0.0.1:{port}/drip", deadline=1.0, read_timeout=0.5)
    assert "took longer than 1 s" in str(error)
    assert 0.9 < seconds < 2.5


@pytest.mark.parametrize("line", [b"X-Drip: a\r\n", b"a"], ids=["many-headers", "one-endless-header"])
def test_endless_headers_are_refused(server, line: bytes):
    routes, port = server
    routes["/h"] = _endless_headers(line)
    error, seconds = _timed(f"http://127.0.0.1:{port}/h", deadline=5.0)
    assert "invalid or incomplete HTTP response" in str(error)
    assert seconds < 3.0


def test_server_that_keeps_dripping_after_the_cut_is_not_waited_for(server):
    """The fetch returns at the deadline even while the server thread is still writing."""
    routes, port = server
    writing = threading.Event()

    def drip(h: Handler) -> None:
        writing.set()
        _endless(b"y" * 10, pause=0.05, seconds=4.0)(h)

    routes["/d"] = drip
    error, seconds = _timed(f"http://127.0.0.1:{port}/d", deadline=0.8, read_timeout=0.4)
    assert writing.is_set() and "took longer than 0.8 s" in str(error) and seconds < 2.0
