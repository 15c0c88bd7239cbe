"""What the server-side URL fetcher may contact: which URLs, and which IP addresses.

:func:`parse_url` accepts http(s) URLs on default ports with a valid host name and no user-info;
:func:`address_refusal` accepts public internet addresses only. :mod:`app.net.fetch` applies both on
every redirect hop, to every address a host name resolves to.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from app.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 8192
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")

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
class Target:
    """One validated hop: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, lower case, without brackets
    port: int
    request_target: str  # path and query, ASCII

    @property
    def default_port(self) -> int:
        return _DEFAULT_PORTS[self.scheme]


def parse_url(url: str, *, allow_loopback: bool) -> Target:
    """Validate one URL (the original or a redirect target) and split it into a :class:`Target`."""
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
    _refuse_local_host(host, written=parts.hostname or "", allow_loopback=allow_loopback)

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
    return Target(url=url, scheme=scheme, host=host, port=port, request_target=request_target)


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
    labels = host.rstrip(".").split(".")
    if _is_number(labels[-1]):  # WHATWG: a host that ends in a number is an IPv4 address, or invalid
        return _parse_ipv4(labels)
    return host


def _refuse_local_host(host: str, *, written: str, allow_loopback: bool) -> None:
    """Refuse, before any lookup, the names of this machine and IP literals that are not public."""
    name = host.rstrip(".")
    if (name == "localhost" or name.endswith(".localhost")) and not allow_loopback:
        raise FetchError(f"The host {host} is not allowed (it always means this computer).")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: its addresses are checked when it is resolved
    reason = address_refusal(host, allow_loopback=allow_loopback)
    if reason is not None:
        shown = f"{host} (written {written} in the URL)" if written.strip("[]") not in (host, host + ".") else host
        raise FetchError(f"The address {shown} is not allowed ({reason}).")


_NUMBER_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _is_number(label: str) -> bool:
    return bool(_NUMBER_RE.match(label))


def _parse_ipv4(labels: list[str]) -> str:
    """The dotted IPv4 address that ``labels`` mean (decimal, ``0x`` hex or ``0`` octal parts, 1 to 4 of
    them, the last filling the remaining bytes), as browsers parse it; refused when it is none."""
    invalid = FetchError("The host name in the image URL is not valid (a malformed numeric IPv4 address).")
    if len(labels) > 4 or not all(_is_number(label) for label in labels):
        raise invalid
    values = []
    for label in labels:
        if label.startswith("0x"):
            values.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if any(ch in "89" for ch in label):
                raise invalid
            values.append(int(label, 8))
        else:
            values.append(int(label))
    *leading, last = values
    if any(v > 255 for v in leading) or last >= 256 ** (5 - len(values)):
        raise invalid
    number = last
    for i, v in enumerate(leading):
        number += v << (8 * (3 - i))
    return str(ipaddress.IPv4Address(number))


def _idna(host: str, *, encode: bool) -> str:
    """IDNA-encode a Unicode host name (UTS 46 mapping), or check that an ASCII one decodes."""
    import idna  # a dependency of requests; imported only for the rare non-ASCII host

    try:
        return idna.encode(host, uts46=True).decode("ascii") if encode else idna.decode(host)
    except idna.IDNAError as exc:
        raise FetchError(f"The host name in the image URL is not valid ({exc}).") from exc
