"""Scanning a folder of someone's own photos: every image file below it, and every entry left out
with its reason. Real folders are messy; the scan never hangs and never crashes on them.

Skipped and reported (a :class:`Skipped` each: the path relative to the root, and why):

* symbolic link loops (a link to itself, links in a ring, a link to a folder above it) and broken links;
* FIFOs, sockets and device files (only ``stat``-ed, never opened: reading a FIFO blocks forever);
* unreadable files and folders (permission denied);
* names that are not valid UTF-8 (they could not be shown, stored as JSON or served);
* empty (zero-byte) image files;
* formats the loader cannot decode, such as JPEG XL, Photoshop and SVG ("unsupported format");
* hidden folders (``.thumbnails``, ``.git``...) and hidden image files, unless ``include_hidden``;
* folders nested deeper than ``max_depth``.

Entries the exclude rules match (:mod:`app.core.exclude`: known litter such as ``@eaDir``, ``--exclude``
patterns, the folder's ``.risignore``) are left out before any of that, and only counted per pattern
(``ScanResult.excluded``).

Files with other extensions (documents, videos) are not images and are not reported. Symbolic links
to files and folders are followed; each real folder is scanned once, which is what ends loops.

:func:`file_stamp` gives what an incremental build compares: size, ``mtime_ns`` and a content hash.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from app.core.camera_formats import HEIF_SUFFIXES, RAW_SUFFIXES
from app.core.exclude import ExcludeRules, exclude_rules
from app.errors import DatasetError, InvalidImageError

# What the loader (app.core.images) decodes: HEIC/HEIF through pillow-heif, camera RAW files from their
# embedded JPEG preview (app.core.camera_formats).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".jfif", ".avif"}
                           | HEIF_SUFFIXES | RAW_SUFFIXES)
# Image formats people have in their photo folders that the loader cannot decode.
UNSUPPORTED_SUFFIXES = {".jxl": "JPEG XL", ".psd": "Photoshop", ".svg": "SVG"}
MAX_DEPTH = 64
HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Skipped:
    """An entry left out of a collection, and why (one line)."""

    path: str  # relative to the scanned root, posix; undecodable bytes shown as \\xNN
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class FileStamp(NamedTuple):
    """What identifies one version of a file: size, modification time and a hash of its bytes.

    ``hash`` is ``""`` until computed (a scan gives size and mtime only; hashing reads the file). A named
    tuple: a million of them are made when a large collection's table is read.
    """

    size: int
    mtime_ns: int
    hash: str = ""

    def same_stat(self, other: "FileStamp") -> bool:
        return self.size == other.size and self.mtime_ns == other.mtime_ns


@dataclass(frozen=True)
class ScanResult:
    files: tuple[tuple[str, FileStamp], ...]  # (relative posix path, stamp without hash), sorted by path
    skipped: tuple[Skipped, ...]
    excluded: tuple[tuple[str, int], ...] = ()  # (pattern, entries it left out), most first


def display_name(name: str) -> str:
    """A name as people can read it: bytes that are not UTF-8 (kept by ``os`` as surrogates) become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _stat_reason(exc: OSError, is_link: bool) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT and is_link:
        return "broken symbolic link"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read ({exc.strerror or exc})"


def scan_folder(root: str | os.PathLike, *, include_hidden: bool = False, max_depth: int = MAX_DEPTH,
                suffixes: frozenset[str] = IMAGE_SUFFIXES, exclude: Sequence[str] = (),
                default_excludes: bool = True) -> ScanResult:
    """Every image file below ``root`` (see the module docstring for what is skipped and reported).

    ``exclude``: gitignore-style patterns left out on top of the defaults (``default_excludes``) and
    ``root/.risignore``."""
    root = Path(root)
    try:
        top = os.stat(root)
    except OSError as exc:
        raise DatasetError(f"{root} does not exist." if not root.exists() else f"{root} cannot be read ({exc}).",
                           hint="Pass --data pointing at a folder of images (sub-folders become labels).") from exc
    if not stat.S_ISDIR(top.st_mode):
        raise DatasetError(f"{root} is not a folder.",
                           hint="Pass --data pointing at a folder of images (sub-folders become labels).")
    files: list[tuple[str, FileStamp]] = []
    skipped: list[Skipped] = []
    rules = exclude_rules(root, exclude, defaults=default_excludes)
    visited = {(top.st_dev, top.st_ino)}
    stack: list[tuple[str, str, int]] = [(str(root), "", 0)]  # (folder, its path relative to root, depth)
    while stack:
        folder, rel, depth = stack.pop()
        subfolders = _scan_one(folder, rel, depth, include_hidden, max_depth, suffixes, visited, files, skipped,
                               rules)
        stack.extend(reversed(subfolders))  # depth first, in name order
    files.sort(key=lambda f: f[0])
    return ScanResult(tuple(files), tuple(sorted(skipped, key=lambda s: s.path)), rules.summary())


def _scan_one(folder: str, rel: str, depth: int, include_hidden: bool, max_depth: int, suffixes: frozenset[str],
              visited: set[tuple[int, int]], files: list, skipped: list,
              rules: ExcludeRules) -> list[tuple[str, str, int]]:
    """Scan one folder's entries into ``files``/``skipped``; returns the sub-folders to scan next."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        skipped.append(Skipped(display_name(rel) or ".", f"folder {_stat_reason(exc, False)}"))
        return []
    subfolders = []
    for entry in entries:
        name = entry.name
        shown = display_name(f"{rel}/{name}" if rel else name)
        relpath = f"{rel}/{name}" if rel else name
        suffix = os.path.splitext(name)[1].lower()
        is_link = False
        try:
            is_link = entry.is_symlink()
            st = os.stat(entry.path)  # follows links: a loop raises ELOOP here
        except OSError as exc:
            if (is_link or suffix in suffixes or suffix in UNSUPPORTED_SUFFIXES) and not rules.excluded(relpath, False):
                skipped.append(Skipped(shown, _stat_reason(exc, is_link)))
            continue
        if rules.excluded(relpath, stat.S_ISDIR(st.st_mode)):
            continue
        if stat.S_ISDIR(st.st_mode):
            if name.startswith(".") and not include_hidden:
                skipped.append(Skipped(shown, "hidden folder (skipped by default)"))
            elif not is_utf8(name):
                skipped.append(Skipped(shown, "folder name is not valid UTF-8"))
            elif (st.st_dev, st.st_ino) in visited:
                skipped.append(Skipped(shown, "symbolic link loop (folder already scanned)"))
            elif depth + 1 > max_depth:
                skipped.append(Skipped(shown, f"nested deeper than {max_depth} folders"))
            else:
                visited.add((st.st_dev, st.st_ino))
                subfolders.append((entry.path, relpath, depth + 1))
            continue
        if not stat.S_ISREG(st.st_mode):
            skipped.append(Skipped(shown, f"{_special_kind(st.st_mode)}, not a file"))
            continue
        reason = _file_reason(name, suffix, st, entry.path, include_hidden, suffixes)
        if reason is None:
            files.append((relpath, FileStamp(st.st_size, st.st_mtime_ns)))
        elif reason:
            skipped.append(Skipped(shown, reason))
    return subfolders


def _file_reason(name: str, suffix: str, st: os.stat_result, path: str, include_hidden: bool,
                 suffixes: frozenset[str]) -> str | None:
    """Why a regular file is left out (``""``: silently, not an image), or None to keep it."""
    if suffix in UNSUPPORTED_SUFFIXES:
        return f"unsupported format ({UNSUPPORTED_SUFFIXES[suffix]}; convert it to JPEG or PNG)"
    if suffix not in suffixes:
        return ""
    if name.startswith(".") and not include_hidden:
        return "hidden file (skipped by default)"
    if not is_utf8(name):
        return "file name is not valid UTF-8"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def file_stamp(path: str | os.PathLike) -> FileStamp:
    """Size, ``mtime_ns`` and BLAKE2b-128 hash of a regular file, read once.

    The file is opened non-blocking and checked to be a regular file before a byte is read, so a
    FIFO put in its place cannot hang the build. Raises :class:`InvalidImageError` with the reason.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InvalidImageError(f"Cannot read {display_name(os.fspath(path))}: {exc.strerror or exc}.") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImageError(f"{display_name(os.fspath(path))} is {_special_kind(st.st_mode)}, not a file.")
        h = hashlib.blake2b(digest_size=16)
        while True:
            block = os.read(fd, HASH_BLOCK)
            if not block:
                break
            h.update(block)
        return FileStamp(st.st_size, st.st_mtime_ns, h.hexdigest())
    except OSError as exc:
        raise InvalidImageError(f"Cannot read {display_name(os.fspath(path))}: {exc.strerror or exc}.") from exc
    finally:
        os.close(fd)


def scan_paths(paths: "list[str | os.PathLike]", *, suffixes: frozenset[str] = IMAGE_SUFFIXES,
               exclude: Sequence[str] = ()) -> ScanResult:
    """Files and folders a person named (``add``): a folder is scanned as :func:`scan_folder` does, a
    file is taken when a scan would take it (a hidden one too: it was named). Paths in the result are
    absolute (``os.path.abspath``: symbolic links are kept as given, as a folder scan keeps them)."""
    files: list[tuple[str, FileStamp]] = []
    skipped: list[Skipped] = []
    excluded: dict[str, int] = {}
    for given in paths:
        path = os.path.abspath(os.path.expanduser(os.fspath(given)))
        try:
            st = os.stat(path)
        except OSError as exc:
            reason = "no such file or folder" if not os.path.lexists(path) else _stat_reason(exc, os.path.islink(path))
            skipped.append(Skipped(display_name(path), reason))
            continue
        if stat.S_ISDIR(st.st_mode):
            found = scan_folder(path, suffixes=suffixes, exclude=exclude)
            for pattern, n in found.excluded:
                excluded[pattern] = excluded.get(pattern, 0) + n
            files += [(os.path.join(path, rel), stamp) for rel, stamp in found.files]
            skipped += [Skipped(display_name(os.path.join(path, s.path)), s.reason) for s in found.skipped]
        elif not stat.S_ISREG(st.st_mode):
            skipped.append(Skipped(display_name(path), f"{_special_kind(st.st_mode)}, not a file"))
        else:
            name = os.path.basename(path)
            reason = _file_reason(name, os.path.splitext(name)[1].lower(), st, path, True, suffixes)
            if reason is None:
                files.append((path, FileStamp(st.st_size, st.st_mtime_ns)))
            else:
                skipped.append(Skipped(display_name(path), reason or "not an image file (by its extension)"))
    files.sort(key=lambda f: f[0])
    return ScanResult(tuple(files), tuple(sorted(skipped, key=lambda s: s.path)),
                      tuple(sorted(excluded.items(), key=lambda kv: (-kv[1], kv[0]))))
