"""Download, verify and install the demo collections and the ImageNet ResNet-50 weights.

Command line (``app/cli/download.py``; ``data_download.sh`` wraps the first form)::

    python -m app.cli download datasets caltech101 voc2012 [--data DIR]   # or: datasets all
    python -m app.cli download weights [--weights-dir DIR]
    python -m app.cli download check [--data DIR] [--weights-dir DIR]

Layout under the data folder::

    <data>/.downloads/<archive>            kept after install; ``<archive>.part`` while incomplete
    <data>/caltech101/101_ObjectCategories/<category>/<file>
    <data>/voc2012/VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main/trainval.txt,...}
    <data>/<name>/.complete                JSON marker, written last

Downloads resume from ``.part`` files with HTTP Range requests and are checksummed before
anything is extracted. Archives are extracted into ``<data>/.staging-<name>-XXXX`` and renamed
into place only once complete, so an interrupted run never leaves a collection that looks
installed. Tests point everything at a local server with the ``sources=`` / ``url=`` parameters.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from app.errors import DownloadError
from app.files.atomic import fsync_dir, write_json

__all__ = [
    "SOURCES", "Source", "download_dataset", "dataset_present", "download_file", "safe_extract",
    "ensure_imagenet_weights", "imagenet_weights_path",
]

CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
CHUNK_BYTES = 1 << 16
USER_AGENT = "reverse-image-search-downloader/1"


@dataclass(frozen=True)
class Source:
    """One downloadable collection: where the archive is and what it must contain."""

    url: str
    filename: str
    checksum: str
    algo: str = "md5"
    inner_archive: str | None = None  # an archive inside the archive that holds the images
    layout_dirs: tuple[str, ...] = ()  # folders (non-empty) that must exist under <data>/<name>
    layout_files: tuple[str, ...] = ()  # files that must exist under <data>/<name>
    local_copy: str = "what to put in <data>/<name>"  # for the offline hint


# URLs and md5 sums as used by the installed torchvision (0.29):
# torchvision/datasets/caltech.py (Caltech101.download) and torchvision/datasets/voc.py
# (DATASET_YEAR_DICT["2012"]). Caltech's zip holds caltech-101/101_ObjectCategories.tar.gz.
SOURCES: dict[str, Source] = {
    "caltech101": Source(
        url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
        filename="caltech-101.zip",
        checksum="3138e1922a9193bfa496528edbbc45d0",
        inner_archive="101_ObjectCategories.tar.gz",
        layout_dirs=("101_ObjectCategories",),
        local_copy="an extracted 101_ObjectCategories folder",
    ),
    "voc2012": Source(
        url="https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        filename="VOCtrainval_11-May-2012.tar",
        checksum="6cd6e144f989b92b3379bac3b3de84fd",
        layout_dirs=("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/Annotations"),
        layout_files=("VOCdevkit/VOC2012/ImageSets/Main/trainval.txt",),
        local_copy="an extracted VOCdevkit folder (containing VOC2012)",
    ),
}


# --- Generic resumable download ---


class _Incomplete(Exception):
    """The stream ended early; the ``.part`` file can be resumed."""


def _checksum_ok(path: Path, checksum: str, algo: str) -> tuple[bool, str]:
    """Hash ``path``; ``checksum`` may be a hex prefix of 8+ chars (as torch.hub's check_hash)."""
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, algo).hexdigest()
    expected = checksum.lower()
    return len(expected) >= 8 and digest.startswith(expected), digest


def _is_gdrive(url: str) -> bool:
    return urlparse(url).hostname in ("drive.google.com", "drive.usercontent.google.com")


def _gdrive_confirm(html: str, cookies: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """Parse Google Drive's "file too large to scan" page into (form action, query params)."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"', html)
    hidden = r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"'
    params = dict(re.findall(hidden, html))
    if form:
        return form.group(1).replace("&amp;", "&"), params
    token = next((v for k, v in cookies.items() if k.startswith("download_warning")), None)
    return None, ({"confirm": token} if token else {})


def _get(session: Any, url: str, headers: dict[str, str]) -> Any:
    """GET with streaming and timeouts; handles Google Drive's large-file confirmation page."""
    timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    if _is_gdrive(resp.url) and "text/html" in resp.headers.get("Content-Type", ""):
        action, params = _gdrive_confirm(resp.text, resp.cookies.get_dict())
        resp.close()
        if not params:
            raise DownloadError(f"Google Drive refused the download of {url} (quota exceeded?)")
        resp = session.get(action or url, params=params, headers=headers, stream=True,
                           timeout=timeout)
    return resp


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    return start, (int(m.group(2)) if m.group(2) != "*" else None)


def _fetch_into(session: Any, url: str, part: Path, progress_bar: bool) -> None:
    """Bring ``part`` up to the full remote file, resuming from its current size when possible."""
    from tqdm import tqdm

    for _restart in range(2):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with _get(session, url, headers) as resp:
            if resp.status_code == 416 and offset:
                if _content_range(resp.headers.get("Content-Range"))[1] == offset:
                    return  # the part file already holds the whole file
                part.unlink()  # bigger than the remote file or unknown: start over
                continue
            if resp.status_code == 206:
                start, total = _content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    part.unlink()
                    continue
                mode = "ab"
            elif resp.status_code == 200:  # fresh download, or a server that ignores Range
                offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            else:
                raise DownloadError(f"HTTP {resp.status_code} {resp.reason} from {url}")
            with open(part, mode) as fh, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name[: -len(".part")], file=sys.stderr, disable=not progress_bar,
            ) as bar:
                for chunk in resp.iter_content(CHUNK_BYTES):
                    fh.write(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        if total is not None and part.stat().st_size != total:
            raise _Incomplete(f"got {part.stat().st_size} of {total} bytes")
        return
    raise DownloadError(f"the server at {url} keeps answering with an unusable byte range")


def _describe(exc: BaseException) -> str:
    """A short reason for a network failure (requests' own messages are very long)."""
    import requests

    if isinstance(exc, _Incomplete):
        return f"the transfer stopped early ({exc})"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection dropped mid-transfer"
    if isinstance(exc, (requests.ConnectTimeout, requests.ReadTimeout)) or "timed out" in str(exc):
        return "timed out (offline, or the server is not answering)"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect (offline, or the host is unreachable)"
    return f"{type(exc).__name__}: {exc}"


def download_file(
    url: str, dest: str | os.PathLike[str], *, checksum: str | None = None, algo: str = "md5",
    progress_bar: bool = True, retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest`` (via ``dest.part``, resumable) and verify it.

    An existing ``dest`` whose checksum matches is returned without any network access.
    ``algo`` is ``"md5"`` or ``"sha256"``. Raises :class:`DownloadError` on network failure
    (the ``.part`` file is kept for resuming) or checksum mismatch (the file is deleted).
    """
    import requests

    if algo not in ("md5", "sha256"):
        raise ValueError(f"unsupported checksum algorithm {algo!r}")
    dest = Path(dest)
    if dest.exists():
        if checksum is None or _checksum_ok(dest, checksum, algo)[0]:
            return dest
        dest.unlink()  # corrupt leftover: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with requests.Session() as session:
        for attempt in range(1, retries + 1):
            before = part.stat().st_size if part.exists() else 0
            try:
                _fetch_into(session, url, part, progress_bar)
                break
            except (requests.RequestException, _Incomplete) as exc:
                dropped = isinstance(exc, (requests.exceptions.ChunkedEncodingError, _Incomplete))
                if attempt < retries and (dropped or part.exists() and part.stat().st_size > before):
                    continue  # the connection dropped mid-transfer: resume right away
                resume = f"; rerun to resume from {part.name}" if part.exists() else ""
                raise DownloadError(f"download of {url} failed: {_describe(exc)}{resume}") from None
            except OSError as exc:  # local disk trouble (full, read-only...)
                raise DownloadError(f"could not write {part}: {exc}") from exc
    if checksum:
        ok, digest = _checksum_ok(part, checksum, algo)
        if not ok:
            part.unlink()
            raise DownloadError(
                f"checksum mismatch for {dest.name}: expected {algo} {checksum}, got {digest}; "
                "the corrupt download was deleted",
                hint="Run the command again; if it keeps failing, a proxy or mirror is serving "
                "a different file.",
            )
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


# --- Safe extraction ---


def _unsafe_name(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or bool(re.match(r"^[A-Za-z]:", name))


def safe_extract(archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str]) -> None:
    """Extract a tar (any compression) or zip archive into ``dest_dir``.

    The whole archive is refused (:class:`DownloadError`) if any member has an absolute path,
    a ``..`` component, is a device, or is a link pointing outside ``dest_dir``; tar members are
    additionally extracted with ``filter="data"``.
    """
    archive, dest = Path(archive), Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                    if _unsafe_name(info.filename) or is_link:
                        raise DownloadError(
                            f"refusing unsafe member {info.filename!r} in {archive.name}")
                zf.extractall(dest)
            return
        with tarfile.open(archive, "r:*") as tf:
            for m in tf.getmembers():
                bad = _unsafe_name(m.name) or m.isdev()
                if m.issym() or m.islnk():
                    base = (root / m.name).parent if m.issym() else root
                    target = (base / m.linkname).resolve()
                    bad = bad or m.linkname.startswith("/") or not target.is_relative_to(root)
                if bad:
                    raise DownloadError(f"refusing unsafe member {m.name!r} in {archive.name}")
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DownloadError(f"cannot extract {archive.name}: {exc}") from exc


# --- Datasets ---


def _layout_ok(src: Source, folder: Path) -> bool:
    dirs_ok = all((folder / d).is_dir() and any((folder / d).iterdir()) for d in src.layout_dirs)
    return dirs_ok and all((folder / f).is_file() for f in src.layout_files)


def _source(name: str, sources: Mapping[str, Source] | None) -> Source:
    table = SOURCES if sources is None else sources
    if name not in table:
        raise DownloadError(f"unknown dataset {name!r}", hint=f"Known: {', '.join(table)}.")
    return table[name]


def dataset_present(name: str, data_dir: str | os.PathLike[str], *,
                    sources: Mapping[str, Source] | None = None) -> bool:
    """True if ``<data_dir>/<name>`` has the expected layout (ours or a user's own copy)."""
    return _layout_ok(_source(name, sources), Path(data_dir) / name)


def download_dataset(
    name: str, data_dir: str | os.PathLike[str], *, base_url_override: str | None = None,
    sources: Mapping[str, Source] | None = None, progress_bar: bool = True, keep_archive: bool = True,
) -> Path:
    """Make sure ``<data_dir>/<name>`` is installed; download, verify and extract if needed.

    ``base_url_override`` replaces the folder part of the source URL (the file name is kept);
    ``sources`` replaces the whole table (tests). Returns ``<data_dir>/<name>``.
    """
    src = _source(name, sources)
    data_dir = Path(data_dir)
    target = data_dir / name
    if _layout_ok(src, target):
        return target
    if base_url_override:
        src = replace(src, url=f"{base_url_override.rstrip('/')}/{src.filename}")
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / ".downloads" / src.filename
    local_hint = (f"To use a local copy instead, copy or symlink {src.local_copy} to {target}/, "
                  f"put the archive {src.filename} in {archive.parent}/, or pass --data DIR.")
    try:
        download_file(src.url, archive, checksum=src.checksum, algo=src.algo, progress_bar=progress_bar)
    except DownloadError as exc:
        hint = " ".join(h for h in (exc.hint, local_hint) if h)
        raise DownloadError(f"{name}: {exc}", hint=hint) from None

    for stale in data_dir.glob(f".staging-{name}-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=data_dir))
    try:
        out = staging / name
        if src.inner_archive:
            safe_extract(archive, staging / "outer")
            inner = next((staging / "outer").rglob(src.inner_archive), None)
            if inner is None:
                raise DownloadError(f"{src.filename} does not contain {src.inner_archive}")
            safe_extract(inner, out)
        else:
            safe_extract(archive, out)
        if not _layout_ok(src, out):
            raise DownloadError(f"{src.filename} does not have the expected layout for {name}")
        if target.exists() or target.is_symlink():  # an incomplete earlier copy: keep it aside
            aside = data_dir / f".old-{name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
            os.replace(target, aside)
            print(f"note: moved the incomplete {target} to {aside}", file=sys.stderr)
        os.replace(out, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(target / ".complete", {
        "name": name, "source_url": src.url, "archive": src.filename,
        "checksum": f"{src.algo}:{src.checksum}",
        "completed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    })
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target


# --- Weights ---


def _weights_url() -> str:
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError as exc:
        raise DownloadError(f"torchvision is not importable ({exc})") from exc
    return ResNet50_Weights.DEFAULT.url


def imagenet_weights_path(*, checkpoints_dir: str | os.PathLike[str] | None = None,
                          url: str | None = None) -> Path:
    """Where torchvision looks for the ResNet-50 weights: ``<torch hub dir>/checkpoints/<file>``."""
    if checkpoints_dir is None:
        import torch.hub

        checkpoints_dir = Path(torch.hub.get_dir()) / "checkpoints"
    return Path(checkpoints_dir) / os.path.basename(urlparse(url or _weights_url()).path)


def ensure_imagenet_weights(
    progress_bar: bool = True, *, checkpoints_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
) -> Path:
    """Return the cached ResNet-50 ImageNet weights file, downloading it first if needed.

    The sha256 prefix embedded in the file name (``resnet50-<hex>.pth``) is verified, as
    ``torch.hub`` does with ``check_hash=True``.
    """
    url = url or _weights_url()
    path = imagenet_weights_path(checkpoints_dir=checkpoints_dir, url=url)
    if path.is_file():
        return path
    match = re.search(r"-([a-f0-9]{8,})\.", path.name)
    try:
        return download_file(url, path, checksum=match.group(1) if match else None,
                             algo="sha256", progress_bar=progress_bar)
    except DownloadError as exc:
        hint = (f"Copy the file {path.name} into {path.parent}/, or run with --weights "
                "/path/to/file.pth (or --weights untrained for a demo with random weights: "
                "not real results).")
        raise DownloadError(f"ResNet-50 weights: {exc}", hint=hint) from None
