"""Issue 12, fuzzing: the image loader and the URL parser, address policy and fetcher take hostile input
and only the typed errors of app/errors.py come out: no other exception, no hang.

Hypothesis runs derandomised (the same inputs on every run) with no example database, within a time
budget per test (``BUDGET_S``) and a per-example deadline; ``faulthandler`` stops the whole run if
something hangs inside C code. Inputs that once failed are kept in tests/data/fuzz/ and replayed first.
"""

from __future__ import annotations

import faulthandler
import io
import ipaddress
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import app.net.fetch as fetch_mod
from app.core.images import load_image
from app.core.models import get_model
from app.core.preprocess import preprocess
from app.errors import FetchError, InvalidImageError
from app.net.fetch import fetch_url
from app.net.urlpolicy import address_refusal, parse_url

BUDGET_S = 20.0  # generating stops after this; what remains of max_examples returns at once
HANG_S = 120  # faulthandler ends the process (with every thread's traceback) past this
FUZZ_DATA = Path(__file__).parent / "data" / "fuzz"
# max_examples take about 10-15 s each on the development machine; BUDGET_S caps a slower one.
FUZZ = settings(max_examples=6_000, deadline=5_000, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])  # no_hang spans the whole run


class Budget:
    """Counts the examples that ran, and says when the time budget is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start: float | None = None
        self.ran = 0

    def spent(self) -> bool:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        if now - self.start > self.seconds:
            return True
        self.ran += 1
        return False


@pytest.fixture
def no_hang():
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- the image loader -----------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    """Small valid files of every format and feature the loader handles: the fuzzer mutates these."""
    rng = np.random.default_rng(12)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [Image.new("RGB", (16, 12), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    palette = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    return {
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg-exif": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg-progressive": _encode(rgb, "JPEG", progressive=True),
        "jpeg-cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "png": _encode(rgb, "PNG"),
        "png-16": _encode(Image.fromarray(rng.integers(0, 65536, (12, 16), dtype=np.uint16)), "PNG"),
        "png-palette": _encode(palette, "PNG"),
        "png-rgba": _encode(rgb.convert("RGBA"), "PNG"),
        "gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp": _encode(rgb, "WEBP", quality=70),
        "webp-anim": _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
        "bmp": _encode(rgb, "BMP"),
        "tiff": _encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff-1bit": _encode(rgb.convert("1"), "TIFF", compression="group4"),
        "avif": _encode(rgb, "AVIF"),
        "heic": (FUZZ_DATA.parent / "photos" / "blocks.heic").read_bytes(),
        "heic-thumbnail": (FUZZ_DATA.parent / "photos" / "blocks_thumb.heic").read_bytes(),
        "dng": (FUZZ_DATA.parent / "photos" / "blocks_orient6.dng").read_bytes(),
    }


SEEDS = _seeds()
MAGIC = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8 ", b"BM", b"II*\0", b"MM\0*",
         b"\0\0\0\x1cftypavif", b"\0\0\0\x18ftypheic", b"<svg", b"%PDF-",
         b"II*\0\x08\0\0\0\x01\0\x12\xc6\x01\0\x04\0\0\0\x01\x04\0\0"]  # the last: a DNG's first directory


@st.composite
def mutated(draw) -> bytes:
    """A seed file with 1 to 8 edits: bit flips, bytes set, big numbers written (length and size
    fields), insertions, deletions, copies and a truncation."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "set", "number", "insert", "delete", "copy", "truncate"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif op == "number":
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1))
            data[pos : pos + 4] = struct.pack(draw(st.sampled_from([">I", "<I"])), value)
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "copy":
            data[pos:pos] = data[draw(st.integers(0, len(data) - 1)) :][: draw(st.integers(1, 256))]
        else:
            del data[pos:]
    return bytes(data)


IMAGE_INPUTS = st.one_of(
    mutated(),
    st.binary(max_size=4096),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=2048)),
)


def _check_image(data: bytes, draft: int | None, max_pixels: int) -> None:
    """The property: an RGB image within the pixel limit that preprocesses to finite numbers, or
    InvalidImageError with a one-line message. Anything else propagates and fails the test."""
    try:
        img = load_image(data, draft_size=draft, max_pixels=max_pixels)
    except InvalidImageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert img.mode == "RGB" and img.width > 0 and img.height > 0 and img.width * img.height <= max_pixels
    arr = preprocess(img, _PP)
    assert arr.shape == (3, 224, 224) and np.isfinite(arr).all()


_PP = get_model("resnet50").preprocessing
IMAGE_BUDGET = Budget(BUDGET_S)


@pytest.mark.slow
@FUZZ
@given(data=IMAGE_INPUTS, draft=st.sampled_from([None, 8, 232]), max_pixels=st.sampled_from([4096, 1_000_000]))
def test_fuzz_image_loader_raises_only_the_typed_error(no_hang, data, draft, max_pixels):
    if IMAGE_BUDGET.spent():
        return
    _check_image(data, draft, max_pixels)


def test_fuzz_image_budget_ran_enough_examples():
    """Runs after the fuzz test above (file order): the budget let a meaningful number of examples run."""
    if IMAGE_BUDGET.start is None:
        pytest.skip("the image fuzz did not run (deselected)")
    print(f"image fuzz: {IMAGE_BUDGET.ran} examples in {min(time.monotonic() - IMAGE_BUDGET.start, BUDGET_S):.1f} s")
    assert IMAGE_BUDGET.ran >= 200


# Small hostile files kept as regression cases (tests/data/README.md), and what each must say. The fuzz
# itself has found no failing input so far; one it finds goes here with the fragment its message needs.
SAVED = {
    "gif-huge-frame.bin": "too large",  # a 10x10 GIF holding a 30000x30000 frame, 36 bytes
    "png-chunk-2gb.bin": "damaged or truncated PNG",  # a chunk announcing 2 GB in a 44-byte file
    "png-ztxt-bomb.bin": "PNG metadata",  # 4 MB of zTXt text in 4 kB
    "heic-header.bin": "damaged or truncated HEIF",
    "heic-truncated.bin": "damaged or truncated",
    "heic-grid-bomb.bin": "too large",  # a 128x128 HEIC grid whose ispe and grid box declare 8000x8000
    "avif-ispe-bomb.bin": "too large",  # a 64x48 AVIF whose ispe declares 10000x10000
    "dng-truncated-preview.bin": "camera RAW",  # cut inside its JPEG preview
    "dng-preview-bomb.bin": "too large",  # a DNG whose JPEG preview declares 20000x20000
    "dng-no-preview.bin": "no readable embedded preview",
    "tiff-header-only.bin": "damaged or truncated TIFF",  # 4 bytes; once crashed the RAW sniffing (struct.error)
    "avif-truncated.bin": "damaged or truncated AVIF",
}


def test_every_saved_input_is_listed():
    assert sorted(p.name for p in FUZZ_DATA.glob("*.bin")) == sorted(SAVED)


@pytest.mark.parametrize("name", sorted(SAVED))
def test_saved_inputs_give_the_typed_error_they_should(name):
    data = (FUZZ_DATA / name).read_bytes()
    for draft in (None, 8, 232):
        _check_image(data, draft, 1_000_000)
        with pytest.raises(InvalidImageError, match=SAVED[name]):
            load_image(data, draft_size=draft)


# -- the URL parser, the address policy and the fetcher --------------------------------------------------

_octet = st.integers(0, 300)
_number = st.one_of(_octet.map(str), st.integers(0, 2**33).map(str), st.integers(0, 2**32).map(hex),
                    _octet.map(lambda v: "0" + oct(v)[2:]), st.sampled_from(["0x", "00", "08", "0x0g", ""]))
NUMERIC_HOSTS = st.lists(_number, min_size=1, max_size=5).map(".".join)
KNOWN_HOSTS = st.sampled_from([
    "127.0.0.1", "127.1", "localhost", "localhost.", "LocalHost", "a.localhost", "[::1]", "[::ffff:127.0.0.1]",
    "2130706433", "0x7f.1", "017700000001", "0", "169.254.169.254", "100.100.100.200", "[fd00::1]",
    "[64:ff9b::7f00:1]", "[fe80::1%25eth0]", "10.0.0.1", "172.16.0.1", "192.168.1.1", "example.com",
    "images.example.com", "xn--mnchen-3ya.de", "münchen.de", "ex\u00adample.com", "[::]", "[v1.x]", "[]",
])
_label_chars = st.sampled_from(list("abcxyz019-_.%@:[]\\/?#") + ["xn--", "0x", "\u0130", "\uff0e", "\u3002"])
HOSTS = st.one_of(KNOWN_HOSTS, NUMERIC_HOSTS, st.lists(_label_chars, max_size=20).map("".join), st.text(max_size=12))
URLS = st.one_of(
    st.builds(
        lambda scheme, user, host, port, path, query: f"{scheme}{user}{host}{port}{path}{query}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "file://", "//", "http:/", "http:\\\\", ""]),
        st.sampled_from(["", "user@", "u:p@", "@", "example.com@", "a%40b@"]),
        HOSTS,
        st.sampled_from(["", ":", ":80", ":443", ":8080", ":0", ":65536", ":-1", ":0x50", ":８０"]),
        st.sampled_from(["", "/", "/a.png", "/../../etc/passwd", "/%2e%2e/", "/caf\u00e9"]) | st.text(max_size=20),
        st.sampled_from(["", "?a=1", "#frag", "?x=%00", "?\u2028"]),
    ),
    st.text(max_size=120),
)
_ADDRESSES = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "127.0.0.1", "10.0.0.1", "169.254.169.254", "::1",
              "::ffff:10.0.0.1", "fd00::1", "100.64.0.1", "0.0.0.0", "224.0.0.1"]


def _check_target(url: str, allow_loopback: bool) -> None:
    try:
        target = parse_url(url, allow_loopback=allow_loopback)
    except FetchError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    host = target.host
    assert host.isascii() and host and not any(ch.isspace() for ch in host)
    assert target.request_target.startswith("/") and target.request_target.isascii()
    assert not any(ch.isspace() or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in target.request_target)
    assert 1 <= target.port <= 65535 and (allow_loopback or target.port == target.default_port)
    try:
        ipaddress.ip_address(host)
    except ValueError:  # a name: not one of this machine's, and not one the C resolver reads as a number
        name = host.rstrip(".")
        assert allow_loopback or not (name == "localhost" or name.endswith(".localhost")), host
        with pytest.raises(OSError):
            socket.inet_aton(name)
    else:
        assert address_refusal(host, allow_loopback=allow_loopback) is None, host


class _Network:
    """A resolver answering every name with the drawn addresses, and connections that are refused."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.dialled: list[tuple[str, int]] = []

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        try:
            literal = [str(ipaddress.ip_address(host))]
        except ValueError:
            literal = None
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port, 0, 0) if ":" in ip else (ip, port)) for ip in (literal or self.answers)]

    def connect(self, family, sockaddr, timeout):
        self.dialled.append((sockaddr[0], sockaddr[1]))
        raise ConnectionRefusedError(111, "Connection refused")


URL_BUDGET = Budget(BUDGET_S)


@pytest.mark.slow
@settings(FUZZ, max_examples=4_000)
@given(url=URLS, allow_loopback=st.booleans(), answers=st.lists(st.sampled_from(_ADDRESSES), min_size=1, max_size=3))
def test_fuzz_url_policy_and_fetcher_raise_only_fetch_errors(no_hang, url, allow_loopback, answers):
    if URL_BUDGET.spent():
        return
    _check_target(url, allow_loopback)
    net = _Network(answers)
    real = socket.getaddrinfo, fetch_mod._connect_socket
    socket.getaddrinfo, fetch_mod._connect_socket = net.getaddrinfo, net.connect
    try:
        with pytest.raises(FetchError):  # every connection is refused, so nothing can succeed
            fetch_url(url, allow_loopback=allow_loopback, deadline=5.0)
    finally:
        socket.getaddrinfo, fetch_mod._connect_socket = real
    for address, _port in net.dialled:  # only allowed addresses are ever dialled
        assert address_refusal(address, allow_loopback=allow_loopback) is None, (url, address)


def test_fuzz_url_budget_ran_enough_examples():
    if URL_BUDGET.start is None:
        pytest.skip("the URL fuzz did not run (deselected)")
    print(f"URL fuzz: {URL_BUDGET.ran} examples in {min(time.monotonic() - URL_BUDGET.start, BUDGET_S):.1f} s")
    assert URL_BUDGET.ran >= 500
