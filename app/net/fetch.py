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
import socket
import ssl
import threading
import time
import urllib.parse

from app.errors import FetchError
from app.net.urlpolicy import Target, address_refusal, parse_url

__all__ = ["DEFAULT_MAX_BYTES", "address_refusal", "fetch_url"]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
USER_AGENT = "reverse-image-search/1.0 (image URL fetcher)"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_SIZE = 64 * 1024
_MIB = 1024 * 1024
_HINT = "Check the address, or download the image and upload the file instead."

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

    def __init__(self, target: Target, sock: socket.socket) -> None:
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
            target = parse_url(current, allow_loopback=allow_loopback)
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


def _resolve_checked(
    target: Target, clock: _Deadline, *, allow_loopback: bool
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
    target: Target,
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
    target: Target,
    addresses: list[tuple[socket.AddressFamily, tuple]],
    clock: _Deadline,
    watchdog: _Watchdog,
    *,
    max_bytes: int,
    connect_timeout: float,
    read_timeout: float,
) -> tuple[bytes, str | None]:
    """Make one GET request. Returns ``(body, None)``, or ``(b"", location)`` for a redirect."""
    conn: _PinnedHTTPConnection | None = None
    response: http.client.HTTPResponse | None = None
    try:
        sock = _open_connection(target, addresses, clock, watchdog, connect_timeout=connect_timeout,
                                read_timeout=read_timeout)
        conn = _PinnedHTTPConnection(target, sock)
        conn.request("GET", target.request_target, headers={
            "User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity", "Connection": "close",
        })
        response = conn.getresponse()
        location = _redirect_or_check(response, target.host)
        if location is not None:
            return b"", location
        return _read_body(response, target.host, clock, watchdog, max_bytes), None
    except FetchError:
        raise
    except (ssl.SSLError, TimeoutError, http.client.HTTPException, OSError) as exc:
        raise _transport_error(exc, target.host, clock, watchdog, read_timeout) from exc
    finally:
        if response is not None:
            response.close()
        if conn is not None:
            conn.close()
        watchdog.disarm()


def _redirect_or_check(response: http.client.HTTPResponse, host: str) -> str | None:
    """The redirect's ``Location``, or None for a 2xx identity-encoded answer; raises for anything else."""
    status = response.status
    if status in _REDIRECT_STATUSES:
        location = response.getheader("Location")
        if not location:
            raise FetchError(f"The server at {host} answered with a redirect (HTTP {status}) but did not say where to.")
        return location
    if status >= 400:
        raise FetchError(f"The server at {host} answered HTTP {status} ({response.reason or 'error'}).", hint=_HINT)
    if not 200 <= status < 300:
        raise FetchError(f"The server at {host} answered with unexpected HTTP status {status}.")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise FetchError(f"The server at {host} sent a compressed ({encoding}) response, which is not supported.")
    return None


def _transport_error(exc: BaseException, host: str, clock: _Deadline, watchdog: _Watchdog,
                     read_timeout: float) -> FetchError:
    """The one-line FetchError for a failure below HTTP (TLS, timeouts, broken responses, sockets).

    A failure caused by the total deadline (its watchdog closed the socket) says so instead.
    """
    if watchdog.fired or clock.expired():
        return clock.error(host)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FetchError(f"The secure connection to {host} could not be verified ({exc.verify_message}).",
                          hint=_HINT)
    if isinstance(exc, ssl.SSLError):
        return FetchError(f"The secure connection to {host} failed ({exc.reason or exc}).", hint=_HINT)
    if isinstance(exc, TimeoutError):  # socket.timeout during a read
        return FetchError(f"The server at {host} stopped sending data for more than {read_timeout:g} s.",
                          hint=_HINT)
    if isinstance(exc, http.client.HTTPException):
        return FetchError(f"The server at {host} sent an invalid or incomplete HTTP response "
                          f"({type(exc).__name__}).", hint=_HINT)
    return FetchError(f"The connection to {host} failed ({getattr(exc, 'strerror', None) or exc}).", hint=_HINT)


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
