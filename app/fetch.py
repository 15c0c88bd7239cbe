"""Server-side fetching of image URLs, hardened against server-side request forgery (SSRF).

:func:`fetch_url` downloads the raw bytes behind an ``http``/``https`` URL that a user typed in.
Because the request is made *by the server*, the URL must not be able to reach anything that only
the server can reach (localhost, the LAN, cloud metadata services...). For every hop it:

1. parses the URL and refuses other schemes, non-default ports, user:password@ and bad host names;
2. resolves the host name once (``socket.getaddrinfo``) and refuses the hop if *any* resolved
   address is not a public internet address (see :func:`address_refusal`);
3. connects to one of exactly those checked addresses (no second lookup, so DNS rebinding between
   the check and the connect is impossible), while the ``Host`` header, TLS SNI and certificate
   verification all use the original host name;
4. follows at most ``max_redirects`` redirects by hand, re-running all of the above on each;
5. streams the body with a byte cap, a per-read timeout and one wall-clock deadline for everything.

Why not ``requests-hardened`` (Saleor, 1.3.0, maintained): it does pin the connection to the
address it checked, but it checks only the *first* address getaddrinfo returns, it leaves schemes,
ports and user-info unchecked, and it has no total deadline or streaming size cap. Redirects would
have to be followed by hand anyway (to check the port of every hop), so the library would cover
about thirty lines of this module in exchange for a dependency and a filter that is looser than
ours. This module therefore uses the standard library only: ``http.client`` on a socket that we
connect ourselves, which also gives the watchdog below a socket to stop when the deadline passes.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

from .errors import FetchError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
USER_AGENT = "reverse-image-search/1.0 (image URL fetcher)"
MAX_URL_LENGTH = 8192

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_SIZE = 64 * 1024
_MIB = 1024 * 1024
_HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")
_HINT = "Check the address, or download the image and upload the file instead."

# Ranges refused on top of what the ``ipaddress`` properties already cover. Some of them are
# covered by ``is_private``/``is_reserved`` on recent Pythons only, so they are listed explicitly.
_BLOCKED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "'this network' range"),
        ("100.64.0.0/10", "carrier-grade NAT range"),
        ("192.0.0.0/24", "IETF protocol assignments range"),
        ("192.88.99.0/24", "6to4 relay anycast range"),
        ("198.18.0.0/15", "benchmarking range"),
        ("255.255.255.255/32", "broadcast address"),
        ("::/96", "IPv4-compatible IPv6 range"),
        ("::ffff:0:0/96", "IPv4-mapped IPv6 range"),
        ("64:ff9b::/96", "NAT64 range"),
        ("64:ff9b:1::/48", "local-use NAT64 range"),
        ("100::/64", "discard-only range"),
        ("2001::/32", "Teredo range"),
        ("2001:10::/28", "ORCHID range"),
        ("2001:20::/28", "ORCHIDv2 range"),
        ("2001:db8::/32", "documentation range"),
        ("2002::/16", "6to4 range"),
        ("3fff::/20", "documentation range"),
        ("5f00::/16", "segment-routing range"),
        ("fc00::/7", "unique-local range"),
        ("fec0::/10", "site-local range"),
    )
)


def address_refusal(address: IPAddress | str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` must not be contacted, or ``None`` when it is a public internet address.

    ``allow_loopback`` lets 127.0.0.0/8 and ::1 through (for tests), and nothing else.
    Addresses that embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) are always refused;
    for the first three the reason names the embedded address.
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not a valid IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip.teredo is not None:
            embedded = ip.teredo[1]
        if embedded is not None:
            kind = next(reason for net, reason in _BLOCKED_NETWORKS if ip in net)
            return f"{kind}, embeds {embedded}"
    if ip.is_loopback:
        return None if allow_loopback else "loopback address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    for net, reason in _BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return reason
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local range"
    if ip.is_private:
        return "private network"
    if ip.is_reserved:
        return "reserved range"
    if not ip.is_global:
        return "not a public internet address"
    return None


@dataclass(frozen=True)
class _Target:
    """One validated hop: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, lower case, without brackets
    port: int
    request_target: str  # path and query, ASCII

    @property
    def default_port(self) -> int:
        return _DEFAULT_PORTS[self.scheme]


class _Deadline:
    """The wall-clock budget shared by every hop, lookup, connect and read of one fetch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def error(self, host: str) -> FetchError:
        return FetchError(
            f"Fetching the image from {host} took longer than {self.seconds:g} s, "
            "so it was stopped.",
            hint=_HINT,
        )


class _Watchdog:
    """Shuts the current connection down when the deadline passes, whatever call is blocking.

    Socket timeouts only bound each single read, so a server that drips a byte at a time (in the
    headers or in the body) would otherwise never be stopped. The watchdog holds a duplicate of
    the socket's descriptor: shutting that down unblocks reads on the original, TLS included.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def arm(self, sock: socket.socket) -> None:
        with self._lock:
            self._release()
            self._sock = sock.dup()
            if self.fired:
                self._shutdown()

    def disarm(self) -> None:
        with self._lock:
            self._release()

    def stop(self) -> None:
        self._timer.cancel()
        self.disarm()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            # The peer may have closed already (ENOTCONN): then there is nothing left to stop.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An ``http.client`` connection over a socket that we connected (and maybe wrapped in TLS).

    The host name given to the constructor is only used for the ``Host`` header; the connection
    never resolves or reconnects on its own.
    """

    def __init__(self, target: _Target, sock: socket.socket) -> None:
        super().__init__(target.host, target.port)
        self.default_port = target.default_port  # so Host carries the port only when not default
        self.sock = sock

    def connect(self) -> None:
        raise http.client.NotConnected("this connection cannot be reopened")


def fetch_url(
    url: str,
    *,
    allow_loopback: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    connect_timeout: float = 3.0,
    read_timeout: float = 5.0,
    deadline: float = 15.0,
    max_redirects: int = 3,
) -> bytes:
    """Download the body behind an ``http``/``https`` image URL and return it as raw bytes.

    Only public internet addresses on the default port (80/443) are contacted; see the module
    docstring for the full list of checks. The content is not inspected: the caller decodes it.

    ``allow_loopback`` (for tests only) additionally allows 127.0.0.0/8 and ::1, and allows any
    port on them. ``connect_timeout`` bounds each connection attempt, ``read_timeout`` each read,
    and ``deadline`` the whole fetch (every lookup, hop and the body). At most ``max_redirects``
    redirects are followed and at most ``max_bytes`` bytes are accepted.

    Raises :class:`~app.errors.FetchError` with a one-line reason for every failure, and
    ``ValueError`` only for nonsensical arguments (a bug in the caller).
    """
    if max_bytes <= 0 or connect_timeout <= 0 or read_timeout <= 0 or deadline <= 0:
        raise ValueError("max_bytes and the timeouts must be positive")
    if max_redirects < 0:
        raise ValueError("max_redirects must not be negative")

    clock = _Deadline(deadline)
    watchdog = _Watchdog(deadline)
    try:
        current = url
        for _hop in range(max_redirects + 1):
            target = _parse_url(current, allow_loopback=allow_loopback)
            addresses = _resolve_checked(target, clock, allow_loopback=allow_loopback)
            body, location = _fetch_hop(
                target,
                addresses,
                clock,
                watchdog,
                max_bytes=max_bytes,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
            if location is None:
                return body
            current = urllib.parse.urljoin(target.url, location)
        raise FetchError(
            f"The image URL redirected more than {max_redirects} times, so it was not followed.",
            hint=_HINT,
        )
    finally:
        watchdog.stop()


def _parse_url(url: str, *, allow_loopback: bool) -> _Target:
    """Validate one URL (the original or a redirect target) and split it into a :class:`_Target`."""
    if not isinstance(url, str):
        raise FetchError("The image URL must be text.")
    url = url.strip()
    if not url:
        raise FetchError("The image URL is empty.")
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"The image URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise FetchError("The image URL contains spaces or control characters.")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise FetchError(f"The image URL is not valid ({exc}).") from exc

    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        shown = f"'{scheme}:' URLs are" if scheme else "this URL is"
        raise FetchError(
            f"Only http:// and https:// image URLs can be fetched; {shown} not supported."
        )
    if "@" in parts.netloc:
        raise FetchError(
            "Image URLs with a user name or password (user:pass@host) are not allowed."
        )
    host = _normalize_host(parts.hostname or "", bracketed=parts.netloc.startswith("["))

    default_port = _DEFAULT_PORTS[scheme]
    try:
        port = parts.port
    except ValueError as exc:
        raise FetchError("The port in the image URL is not a valid number.") from exc
    if port is None:  # absent, or empty as in "http://host:/" (which means the default)
        port = default_port
    if port == 0:
        raise FetchError("The port in the image URL is not a valid number.")
    if port != default_port and not allow_loopback:
        raise FetchError(
            f"Only the default port ({default_port}) is allowed for {scheme}:// image URLs, "
            f"not port {port}."
        )

    safe = "/%:@!$&'()*+,;=-._~"
    path = urllib.parse.quote(parts.path or "/", safe=safe)
    if not path.startswith("/"):
        path = "/" + path
    query = urllib.parse.quote(parts.query, safe=safe + "?")
    request_target = f"{path}?{query}" if query else path
    return _Target(url=url, scheme=scheme, host=host, port=port, request_target=request_target)


def _normalize_host(host: str, *, bracketed: bool) -> str:
    """Return ``host`` as an ASCII host name or IP literal, or refuse it."""
    if not host:
        raise FetchError("The image URL has no host name.")
    if bracketed:
        if "%" in host:
            raise FetchError("IPv6 addresses with a zone (%) are not allowed in image URLs.")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise FetchError("The image URL contains an invalid IPv6 address.") from exc
    if not host.isascii():
        host = _idna(host, encode=True)
    host = host.lower()
    if len(host.rstrip(".")) > 253 or not _HOSTNAME_RE.match(host):
        raise FetchError("The host name in the image URL is not valid.")
    if any(label.startswith("xn--") for label in host.split(".")):
        _idna(host, encode=False)  # punycode labels must decode to a valid name
    return host


def _idna(host: str, *, encode: bool) -> str:
    """IDNA-encode a Unicode host name (UTS 46 mapping), or check that an ASCII one decodes."""
    import idna  # a dependency of requests; imported only for the rare non-ASCII host

    try:
        return idna.encode(host, uts46=True).decode("ascii") if encode else idna.decode(host)
    except idna.IDNAError as exc:
        raise FetchError(f"The host name in the image URL is not valid ({exc}).") from exc


def _resolve_checked(
    target: _Target, clock: _Deadline, *, allow_loopback: bool
) -> list[tuple[socket.AddressFamily, tuple]]:
    """Resolve ``target.host`` once; return its addresses, or refuse if any one is not allowed.

    The lookup runs in a daemon thread so that a hanging resolver cannot outlive the deadline.
    """
    remaining = clock.remaining()
    if remaining <= 0:
        raise clock.error(target.host)
    infos: list[tuple] = []
    failures: list[Exception] = []

    def lookup() -> None:
        try:
            infos.extend(
                socket.getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
            )
        except (OSError, UnicodeError) as exc:  # gaierror is an OSError
            failures.append(exc)

    worker = threading.Thread(target=lookup, name="fetch-url-dns", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive():
        raise clock.error(target.host)
    if failures or not infos:
        raise FetchError(f"The host name {target.host} could not be found.", hint=_HINT)

    addresses: list[tuple[socket.AddressFamily, tuple]] = []
    all_loopback = True
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        reason = address_refusal(text, allow_loopback=allow_loopback)
        if reason is not None:
            of_host = "" if text == target.host else f" of {target.host}"
            raise FetchError(f"The address {text}{of_host} is not allowed ({reason}).", hint=_HINT)
        all_loopback = all_loopback and ipaddress.ip_address(text).is_loopback
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise FetchError(f"The host name {target.host} has no IPv4 or IPv6 address.", hint=_HINT)
    if target.port != target.default_port and not all_loopback:
        # allow_loopback opens other ports for local test servers only, never for real hosts.
        raise FetchError(
            f"Only the default port ({target.default_port}) is allowed for {target.scheme}:// "
            f"image URLs, not port {target.port}."
        )
    return addresses


def _connect_socket(family: socket.AddressFamily, sockaddr: tuple, timeout: float) -> socket.socket:
    """Open a TCP connection to exactly ``sockaddr`` (no name resolution happens here)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """Certificate-verifying TLS context (the same CA bundle as ``requests`` when available)."""
    try:
        import certifi

        cafile: str | None = certifi.where()
    except ImportError:
        cafile = None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def _open_connection(
    target: _Target,
    addresses: list[tuple[socket.AddressFamily, tuple]],
    clock: _Deadline,
    watchdog: _Watchdog,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> socket.socket:
    """Connect to the first checked address that answers, then start TLS for https."""
    failure: OSError | None = None
    sock: socket.socket | None = None
    for family, sockaddr in addresses:
        remaining = clock.remaining()
        if remaining <= 0:
            raise clock.error(target.host)
        try:
            sock = _connect_socket(family, sockaddr, min(connect_timeout, remaining))
            break
        except OSError as exc:
            failure = exc
    if sock is None:
        if clock.expired():
            raise clock.error(target.host)
        if isinstance(failure, TimeoutError):
            raise FetchError(
                f"The server at {target.host} did not answer within {connect_timeout:g} s.",
                hint=_HINT,
            ) from failure
        if isinstance(failure, ConnectionRefusedError):
            raise FetchError(
                f"The server at {target.host} refused the connection.", hint=_HINT
            ) from failure
        detail = (failure.strerror if failure else None) or str(failure)
        raise FetchError(f"Could not connect to {target.host} ({detail}).", hint=_HINT) from failure

    sock.settimeout(read_timeout)
    watchdog.arm(sock)
    if target.scheme != "https":
        return sock
    try:
        # SNI and certificate verification use the name from the URL, not the address.
        return _tls_context().wrap_socket(sock, server_hostname=target.host)
    except BaseException:
        sock.close()
        raise


def _fetch_hop(
    target: _Target,
    addresses: list[tuple[socket.AddressFamily, tuple]],
    clock: _Deadline,
    watchdog: _Watchdog,
    *,
    max_bytes: int,
    connect_timeout: float,
    read_timeout: float,
) -> tuple[bytes, str | None]:
    """Make one GET request. Returns ``(body, None)``, or ``(b"", location)`` for a redirect."""
    host = target.host
    conn: _PinnedHTTPConnection | None = None
    response: http.client.HTTPResponse | None = None
    try:
        sock = _open_connection(
            target,
            addresses,
            clock,
            watchdog,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        conn = _PinnedHTTPConnection(target, sock)
        conn.request(
            "GET",
            target.request_target,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "image/*",
                "Accept-Encoding": "identity",
                "Connection": "close",
            },
        )
        response = conn.getresponse()
        status = response.status
        if status in _REDIRECT_STATUSES:
            location = response.getheader("Location")
            if not location:
                raise FetchError(
                    f"The server at {host} answered with a redirect (HTTP {status}) "
                    "but did not say where to."
                )
            return b"", location
        if status >= 400:
            raise FetchError(
                f"The server at {host} answered HTTP {status} ({response.reason or 'error'}).",
                hint=_HINT,
            )
        if not 200 <= status < 300:
            raise FetchError(f"The server at {host} answered with unexpected HTTP status {status}.")
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise FetchError(
                f"The server at {host} sent a compressed ({encoding}) response, "
                "which is not supported."
            )
        return _read_body(response, host, clock, watchdog, max_bytes), None
    except FetchError:
        raise
    except ssl.SSLCertVerificationError as exc:
        if watchdog.fired or clock.expired():
            raise clock.error(host) from exc
        raise FetchError(
            f"The secure connection to {host} could not be verified ({exc.verify_message}).",
            hint=_HINT,
        ) from exc
    except ssl.SSLError as exc:
        if watchdog.fired or clock.expired():
            raise clock.error(host) from exc
        raise FetchError(
            f"The secure connection to {host} failed ({exc.reason or exc}).", hint=_HINT
        ) from exc
    except TimeoutError as exc:  # socket.timeout during a read
        if watchdog.fired or clock.expired():
            raise clock.error(host) from exc
        raise FetchError(
            f"The server at {host} stopped sending data for more than {read_timeout:g} s.",
            hint=_HINT,
        ) from exc
    except http.client.HTTPException as exc:
        if watchdog.fired or clock.expired():
            raise clock.error(host) from exc
        raise FetchError(
            f"The server at {host} sent an invalid or incomplete HTTP response "
            f"({type(exc).__name__}).",
            hint=_HINT,
        ) from exc
    except OSError as exc:
        if watchdog.fired or clock.expired():
            raise clock.error(host) from exc
        raise FetchError(
            f"The connection to {host} failed ({exc.strerror or exc}).", hint=_HINT
        ) from exc
    finally:
        if response is not None:
            response.close()
        if conn is not None:
            conn.close()
        watchdog.disarm()


def _read_body(
    response: http.client.HTTPResponse,
    host: str,
    clock: _Deadline,
    watchdog: _Watchdog,
    max_bytes: int,
) -> bytes:
    """Stream the body, enforcing ``max_bytes`` as it arrives and the deadline between reads."""
    too_large = FetchError(
        f"The image at {host} is larger than the {_describe_limit(max_bytes)} limit.",
        hint="Use a smaller image.",
    )
    declared: int | None = None
    header = response.getheader("Content-Length")
    if header is not None and header.strip().isdigit():
        declared = int(header.strip())
        if declared > max_bytes:
            raise too_large
    chunks: list[bytes] = []
    total = 0
    while True:
        if watchdog.fired or clock.expired():
            raise clock.error(host)
        chunk = response.read1(min(_CHUNK_SIZE, max_bytes + 1 - total))
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise too_large
        chunks.append(chunk)
    if watchdog.fired:
        raise clock.error(host)
    if declared is not None and total < declared:
        raise FetchError(
            f"The connection to {host} closed before the whole image was received "
            f"({total} of {declared} bytes).",
            hint=_HINT,
        )
    return b"".join(chunks)


def _describe_limit(max_bytes: int) -> str:
    """``20 MB``, or ``0.00095 MB (1000 bytes)`` for limits below one megabyte."""
    text = f"{max_bytes / _MIB:.3g} MB"
    return text if max_bytes >= _MIB else f"{text} ({max_bytes} bytes)"
