"""A collection's vectors file: float32 rows in ``.npy`` format that only ever grow at the end.

Row ``i`` is item id ``i`` for ever (deleted items stay as tombstone rows), so an incremental change
only **appends** rows: :func:`append_rows` writes them after the last committed row, fsyncs, then
rewrites the header's row count in place (the header is written with room to grow,
:data:`HEADER_SLACK`). The committed row count is what the manifest and the table say, never the
header: a change that crashed before its manifest was written leaves extra rows (and perhaps a header
that counts them) which every reader ignores and the next change cuts off first. So the rows a
manifest names are never rewritten, and a crash at any point leaves the previous state whole.

**Checksums per chunk** of :data:`CHUNK_ROWS` rows (:func:`chunk_digests`, BLAKE2b-64): an append
recomputes only the last chunk's. Loading checks cheaply (:func:`check_vectors`: the header, the size
— a cut file is refused — and the last chunk plus a few sampled ones); ``python -m app.cli verify``
and a build check every chunk.

A file ``np.save`` wrote (collections made before this format) reads the same; it is rewritten whole,
with room, the first time rows must be appended and its header has none.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import mmap
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.files.atomic import atomic_writer, storage_error

MAGIC = b"\x93NUMPY"
HEADER_SLACK = 48  # spare header bytes: the row count may grow by this many digits in place
CHUNK_ROWS = 1024  # rows per checksum
SAMPLED_CHUNKS = 2  # chunks checked at load besides the last one
_WRITE_ROWS = 8192  # rows per write call (no whole-matrix copies)


class VectorsFileError(ValueError):
    """The vectors file is not what its collection records (cut, corrupted, another shape)."""


@dataclass(frozen=True)
class VectorsHeader:
    rows: int  # the rows the header counts (at least the committed ones)
    dim: int
    offset: int  # where row 0 starts
    size: int  # the file's size in bytes


def _header_bytes(rows: int, dim: int, length: int | None = None) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (int(rows), int(dim))})
    need = len(MAGIC) + 4 + len(text) + 1
    if length is None:
        length = -(-(need + HEADER_SLACK) // 64) * 64
    if need > length:
        raise OverflowError("the header has no room for this shape")
    body = text.encode("latin1") + b" " * (length - need) + b"\n"
    return MAGIC + bytes([1, 0]) + (len(body)).to_bytes(2, "little") + body


def read_header(path: Path) -> VectorsHeader:
    """The header of the vectors file ``path`` (float32, C order, 2-D; else :class:`VectorsFileError`)."""
    with open(path, "rb") as fh:
        head = fh.read(10)
        if len(head) < 10 or head[:6] != MAGIC:
            raise VectorsFileError(f"{path.name} is not an .npy file")
        major = head[6]
        if major == 1:
            hlen, start = int.from_bytes(head[8:10], "little"), 10
        elif major in (2, 3):
            fh.seek(8)
            hlen, start = int.from_bytes(fh.read(4), "little"), 12
        else:
            raise VectorsFileError(f"{path.name}: unknown .npy version {major}")
        raw = fh.read(hlen)
    try:
        info = ast.literal_eval(raw.decode("latin1").strip())
        descr, fortran, shape = info["descr"], info["fortran_order"], tuple(info["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise VectorsFileError(f"{path.name}: unreadable header") from exc
    if np.dtype(descr) != np.dtype("<f4") or fortran or len(shape) != 2:
        raise VectorsFileError(f"{path.name} holds {descr} {shape}, not float32 rows")
    return VectorsHeader(int(shape[0]), int(shape[1]), start + hlen, path.stat().st_size)


def write_vectors(path: str | os.PathLike[str], vectors: np.ndarray) -> None:
    """Write ``vectors`` (rows of float32) to ``path`` atomically, with room in the header to grow."""
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D, not {x.shape}")
    with atomic_writer(path) as fh:
        fh.write(_header_bytes(len(x), x.shape[1]))
        for start in range(0, len(x), _WRITE_ROWS):
            fh.write(np.ascontiguousarray(x[start:start + _WRITE_ROWS], dtype="<f4").tobytes())


def open_rows(path: str | os.PathLike[str], rows: int, dim: int) -> np.ndarray:
    """The first ``rows`` rows of ``path``, memory-mapped read-only (checked: header and size)."""
    path = Path(path)
    h = check_shape(path, rows, dim)
    if rows == 0:
        return np.zeros((0, dim), dtype=np.float32)
    mapped = np.memmap(path, dtype="<f4", mode="r", offset=h.offset, shape=(rows, dim))
    random_access(mapped)
    return mapped


def random_access(mapped: np.memmap) -> None:
    """Tell the kernel the rows are read at random (a query re-scores a few hundred scattered rows): no
    readahead, which otherwise maps some 13 times the bytes read from a cold file (measured: 66 MB for 4.9 MB
    of rows of the 1M-row file; 8.9 MB with this hint)."""
    handle = getattr(mapped, "_mmap", None)
    advice = getattr(mmap, "MADV_RANDOM", None)
    if handle is not None and advice is not None:
        with contextlib.suppress(OSError, ValueError):
            handle.madvise(advice)


def check_shape(path: Path, rows: int, dim: int) -> VectorsHeader:
    h = read_header(path)
    if h.dim != dim or h.rows < rows:
        raise VectorsFileError(f"{path.name} holds {h.rows} rows of {h.dim} values, not {rows} of {dim}")
    if h.size < h.offset + rows * dim * 4:
        raise VectorsFileError(f"{path.name} is cut short ({h.size} bytes for {rows} rows of {dim} values)")
    return h


def append_rows(path: str | os.PathLike[str], committed: int, new: np.ndarray) -> bool:
    """Append ``new`` after the first ``committed`` rows of ``path`` in place (anything after them, from
    a change that never committed, is cut off first). Returns False, writing nothing, when the header
    has no room for the new row count (the caller writes the whole file instead)."""
    path = Path(path)
    x = np.ascontiguousarray(np.atleast_2d(new), dtype="<f4")
    h = check_shape(path, committed, x.shape[1])
    try:
        header = _header_bytes(committed + len(x), h.dim, h.offset)
    except OverflowError:
        return False
    try:
        with open(path, "r+b") as fh:
            end = h.offset + committed * h.dim * 4
            if h.size != end:
                fh.truncate(end)
            fh.seek(end)
            for start in range(0, len(x), _WRITE_ROWS):
                fh.write(x[start:start + _WRITE_ROWS].tobytes())
            fh.flush()
            os.fsync(fh.fileno())  # the rows first, then the header that counts them
            fh.seek(0)
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        typed = storage_error(exc, path)
        if typed is None:
            raise
        raise typed from exc
    return True


def _chunk_digest(fh, offset: int, dim: int, chunk: int, rows: int) -> str:
    first, last = chunk * CHUNK_ROWS, min(rows, (chunk + 1) * CHUNK_ROWS)
    fh.seek(offset + first * dim * 4)
    data = fh.read((last - first) * dim * 4)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def chunk_digests(path: str | os.PathLike[str], rows: int, dim: int, previous: list[str] | None = None,
                  previous_rows: int = 0) -> list[str]:
    """The checksum of each :data:`CHUNK_ROWS`-row chunk of the first ``rows`` rows. ``previous``: the
    digests of the first ``previous_rows`` rows, whose full chunks are kept (only the rest is read)."""
    path = Path(path)
    h = check_shape(path, rows, dim)
    keep = list(previous or [])[: previous_rows // CHUNK_ROWS] if previous is not None else []
    n_chunks = -(-rows // CHUNK_ROWS)
    with open(path, "rb") as fh:
        return keep + [_chunk_digest(fh, h.offset, dim, c, rows) for c in range(len(keep), n_chunks)]


def check_vectors(path: str | os.PathLike[str], rows: int, dim: int, digests: list[str] | None, *,
                  full: bool = False, rng: random.Random | None = None) -> None:
    """Refuse (:class:`VectorsFileError`) a vectors file that is not the one recorded: header and size
    always; with ``digests``, the last chunk and :data:`SAMPLED_CHUNKS` sampled ones (every one when
    ``full``)."""
    path = Path(path)
    h = check_shape(path, rows, dim)
    if digests is None:
        return
    n_chunks = -(-rows // CHUNK_ROWS)
    if len(digests) != n_chunks:
        raise VectorsFileError(f"{path.name}: {len(digests)} chunk checksums recorded for {n_chunks} chunks")
    if full:
        chosen = range(n_chunks)
    else:
        pick = (rng or random.Random()).sample(range(n_chunks), min(SAMPLED_CHUNKS, n_chunks)) if n_chunks else []
        chosen = sorted({n_chunks - 1, *pick}) if n_chunks else []
    with open(path, "rb") as fh:
        for c in chosen:
            if _chunk_digest(fh, h.offset, dim, c, rows) != digests[c]:
                first = c * CHUNK_ROWS
                raise VectorsFileError(f"{path.name}: rows {first}-{min(rows, first + CHUNK_ROWS) - 1} do not match "
                                       "their recorded checksum")


class AppendedRows:
    """The committed rows (memory-mapped) followed by a change's new rows, without copying either: what a
    change indexes and commits (:func:`append_rows` writes only ``new``). Indexing with ids, slices and
    ``len`` work like an array's; ``np.asarray`` makes the whole matrix (a retraining needs it)."""

    def __init__(self, base: np.ndarray, new: np.ndarray) -> None:
        self.base = base
        self.new = np.ascontiguousarray(np.atleast_2d(new), dtype=np.float32).reshape(-1, base.shape[1])
        self.shape = (len(base) + len(self.new), base.shape[1])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        n0 = len(self.base)
        if isinstance(key, (int, np.integer)):
            k = int(key) + (len(self) if key < 0 else 0)
            return self.base[k] if k < n0 else self.new[k - n0]
        ids = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if ids.dtype == bool:
            ids = np.flatnonzero(ids)
        ids = ids.astype(np.int64).reshape(-1)
        out = np.empty((len(ids), self.shape[1]), dtype=np.float32)
        old = ids < n0
        out[old] = self.base[ids[old]]
        out[~old] = self.new[ids[~old] - n0]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate([np.asarray(self.base, dtype=np.float32), self.new])
        return whole if dtype is None else whole.astype(dtype, copy=False)
