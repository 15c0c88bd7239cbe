"""The request guard in front of the whole web app (Gradio and the API): what a request must be.

:class:`RequestGuard` is an ASGI middleware that answers, before Gradio sees the request:

* **400** to a ``Host`` header that is not a name this server is reached by (DNS rebinding: Gradio does
  not check it); on loopback that is ``127.0.0.1:PORT``, ``localhost:PORT`` and ``[::1]:PORT``;
* **403** to a state-changing request (POST, PUT, PATCH, DELETE, and WebSocket handshakes) from a web
  page of another origin: an ``Origin`` header naming another host, ``Origin: null``, or
  ``Sec-Fetch-Site: cross-site``. Scripts (``gradio_client``, curl) send no ``Origin`` and pass;
* **413** to a body larger than the upload limit: at once when ``Content-Length`` says so (nothing
  of the body is read), and as soon as the limit is crossed for a body without a length;
* a readable "busy, try again" answer instead of Gradio's terse one when its queue is full (503 at
  once: a full queue never makes a client wait);
* **403** to Gradio's URL-proxy forms (``/gradio_api/file=http...``, ``/gradio_api/proxy=...``): the
  app fetches URLs itself, through the SSRF-safe :func:`app.net.fetch.fetch_url`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from typing import Iterable
from urllib.parse import urlsplit

_REFUSED_PATHS = re.compile(r"^/gradio_api/(?:file[=/]\s*[a-z][a-z0-9+.-]*:|proxy=)", re.IGNORECASE)
_WILDCARDS = ("0.0.0.0", "::", "")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_OVERHEAD = 1024 * 1024  # multipart framing and JSON around an upload of the maximum size
BUSY_MESSAGE = "The app is busy: too many searches are waiting. Try again in a moment."
_QUEUE_PATHS = re.compile(r"^/gradio_api/(?:queue/join|call/)")


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    host = host.strip().strip("[]").lower()
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values accepted: every name the server can legitimately be reached by."""
    bare = host.strip().strip("[]").lower()
    names: set[str] = set()
    if bare in _WILDCARDS or is_loopback(bare):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    if bare in _WILDCARDS:
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        try:
            names |= {_host_name(info[4][0]) for info in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
    else:
        names.add(_host_name(bare))
    names |= {_host_name(e) for e in extra if e}
    accepted = {f"{n}:{port}" for n in names}
    if port == 80:
        accepted |= names
    return frozenset(accepted)


class RequestGuard:
    """ASGI middleware: Host, Origin, body size and refused routes (see the module docstring)."""

    def __init__(self, app, allowed: Iterable[str], max_body: int | None = None) -> None:
        self.app = app
        self.allowed = frozenset(a.lower() for a in allowed)
        self.max_body = None if max_body is None else max_body + BODY_OVERHEAD

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1").strip() for k, v in scope.get("headers", ())}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _refuse(scope, receive, send, *refusal)
            return
        if scope["type"] == "http" and _QUEUE_PATHS.match(scope.get("path", "")):
            send = _busy_answer(send)
        if scope["type"] == "http" and self.max_body is not None and scope.get("method") in _BODY_METHODS:
            await self._limited(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        if headers.get("host", "").lower() not in self.allowed:
            return 400, "Invalid Host header"
        if _REFUSED_PATHS.match(scope.get("path", "")):
            return 403, "Not allowed"
        changes_state = scope["type"] == "websocket" or scope.get("method") in _BODY_METHODS
        if changes_state and not self._same_origin(headers):
            return 403, "Cross-origin request refused"
        length = headers.get("content-length")
        if self.max_body is not None and length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, "Request body too large"
        return None

    def _same_origin(self, headers: dict[str, str]) -> bool:
        if headers.get("sec-fetch-site", "") == "cross-site":
            return False
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser page (a script, gradio_client, curl)
        parts = urlsplit(origin.lower())
        return parts.scheme in ("http", "https") and parts.netloc in self.allowed

    async def _limited(self, scope, receive, send) -> None:
        """Pass the request on, cutting a body without a Content-Length off at the limit (413)."""
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive():
            if state["exceeded"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["exceeded"] = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await _refuse(scope, receive, send, 413, "Request body too large")


def _busy_answer(send):
    """``send``, with Gradio's "queue is full" 503 answered by :data:`BUSY_MESSAGE` (same status)."""
    held: dict = {}

    async def wrapped(message) -> None:
        if message["type"] == "http.response.start" and message.get("status") == 503:
            held["start"] = message
            return
        if "start" in held and message["type"] == "http.response.body":
            if message.get("more_body"):
                return
            body = json.dumps({"detail": BUSY_MESSAGE}).encode()
            start = held.pop("start")
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


async def _refuse(scope, receive, send, status: int, text: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    from starlette.responses import PlainTextResponse  # 0.13 s to import: only when a request is refused

    await PlainTextResponse(text, status_code=status)(scope, receive, send)
