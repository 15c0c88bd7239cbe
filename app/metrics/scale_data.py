"""The data of the scale benchmark (:mod:`app.metrics.scale`): a built collection's real vectors repeated
with seeded noise up to N, the synthetic table that goes with them, an embedder whose vectors are supplied
(no model), generated JPEGs to add, and evicting files from the page cache.

**Vectors.** Rows ``0 .. R-1`` are the source collection's R valid vectors, unchanged (the *real subset*);
row ``i >= R`` is a copy of row ``i mod R`` plus Gaussian noise of per-dimension standard deviation
``sigma * u`` (``u`` drawn uniformly in [0.5, 1.5] per copy, so the copies of one photo are not all at
the same distance from it), L2-normalised again. Blocks of rows are drawn from their own seeded
generator, so the same seed gives the same rows whatever N, and a file made once for (source, seed,
sigma, N) is reused by later runs (``cache/`` of the work folder).

**Table.** Paths are ``synthetic/000123.jpg``; size, mtime and hash are made up from the row number; the
labels are the origin's; every row's photo metadata is set (so a commit reads no file for it).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.config import Config
from app.core.feature_table import FeatureTable
from app.core.models import get_model
from app.core.scan import FileStamp
from app.errors import DatasetError, IndexMismatchError
from app.service.collection_store import open_collection

BLOCK = 65_536  # rows drawn from one generator
NOISE_SPREAD = (0.5, 1.5)  # a copy's noise scale, as a multiple of sigma
SYNTHETIC_META = {"taken": "2020-01-01T00:00:00", "taken_from": "file time", "camera": None}


@dataclass(frozen=True)
class SourceVectors:
    """The real vectors the benchmark starts from: a built collection's valid rows, their labels, its model."""

    name: str
    vectors: np.ndarray  # (R, d) float32, unit rows
    labels: list[tuple[str, ...]]
    model: str
    weights_id: str
    weights_arg: str
    fingerprint: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def load_source(config: Config, name: str) -> SourceVectors:
    """The valid vectors and labels of the built collection ``name`` (read and checked by its store)."""
    state = open_collection(config, name).read_state()
    live = state.table.live_ids()
    if len(live) < 2:
        raise DatasetError(f"The collection {name!r} has {len(live)} valid vectors; the scale benchmark needs "
                           "at least 2.")
    m = state.manifest
    return SourceVectors(name, np.ascontiguousarray(state.vectors[live], dtype=np.float32),
                  [tuple(state.table.labels[i]) for i in live.tolist()], m.model_name, m.weights_id,
                  m.weights_arg or "imagenet", state.table.fingerprint)


# -- the vectors -----------------------------------------------------------------------------------


def noisy_block(source: SourceVectors, start: int, stop: int, seed: int, sigma: float) -> np.ndarray:
    """Rows ``start .. stop-1`` (inside one block) of the noisy collection (module docstring)."""
    r = len(source.vectors)
    rows = np.arange(start, stop)
    out = source.vectors[rows % r].copy()
    copies = rows >= r
    if copies.any():
        # one stream for the scales, one for the noise, drawn from the block's first row: a row never depends on N
        block, skip = start // BLOCK, start % BLOCK
        scale = np.random.default_rng([seed, block, 0]).uniform(*NOISE_SPREAD, size=skip + len(rows))[skip:]
        noise = np.random.default_rng([seed, block, 1]).standard_normal((skip + len(rows), source.dim),
                                                                        dtype=np.float32)[skip:]
        out[copies] += noise[copies] * (sigma * scale[copies, None]).astype(np.float32)
        out[copies] /= np.linalg.norm(out[copies], axis=1, keepdims=True)
    return out


def noisy_vectors(source: SourceVectors, n: int, *, seed: int, sigma: float, cache: Path) -> np.ndarray:
    """The (n, d) noisy collection, memory-mapped from ``cache`` (made there on first use)."""
    key = hashlib.sha256(f"{source.fingerprint}|{source.dim}|{seed}|{sigma!r}|{n}".encode()).hexdigest()[:16]
    path = Path(cache) / f"vectors-{n}-{key}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, source.dim))
        for s in range(0, n, BLOCK):
            out[s : min(n, s + BLOCK)] = noisy_block(source, s, min(n, s + BLOCK), seed, sigma)
        out.flush()
        del out
        os.replace(tmp, path)
    vectors = np.load(path, mmap_mode="r")
    if vectors.shape != (n, source.dim):
        raise IndexMismatchError(f"{path} holds {vectors.shape} vectors, not ({n}, {source.dim}).",
                                 hint="Remove it: it is made again.")
    return vectors


def new_vectors(source: SourceVectors, count: int, *, seed: int, sigma: float) -> np.ndarray:
    """``count`` more noisy copies of seeded random real vectors (the vectors of photos added later)."""
    rng = np.random.default_rng(seed)
    origins = source.vectors[rng.choice(len(source.vectors), size=count)]
    scale = rng.uniform(*NOISE_SPREAD, size=count).astype(np.float32)
    out = origins + rng.standard_normal(origins.shape, dtype=np.float32) * (sigma * scale[:, None])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def copy_cosines(source: SourceVectors, vectors: np.ndarray, *, sample: int = 2000, seed: int = 0) -> float | None:
    """The mean cosine of a copy to its origin, on a seeded sample of copies (None: N holds no copy)."""
    r, n = len(source.vectors), len(vectors)
    if n <= r:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(np.arange(r, n), size=min(sample, n - r), replace=False))
    cos = np.einsum("ij,ij->i", np.asarray(vectors[rows], np.float32), source.vectors[rows % r])
    return float(cos.mean())


# -- the table -------------------------------------------------------------------------------------


def synthetic_stamp(i: int) -> FileStamp:
    return FileStamp(50_000 + (i * 7919) % 200_000, 1_600_000_000_000_000_000 + i * 1_000_000_000,
                     hashlib.blake2b(f"synthetic {i}".encode(), digest_size=16).hexdigest())


def synthetic_table(source: SourceVectors, n: int, name: str, image_root: Path) -> FeatureTable:
    """The table of an n-row synthetic collection: made-up paths and stamps, the origins' labels."""
    r = len(source.vectors)
    table = FeatureTable(
        name=name, kind="folder", dataset_root=str(image_root), image_root=str(image_root),
        weights_id=source.weights_id, paths=[f"synthetic/{i:07d}.jpg" for i in range(n)],
        labels=[source.labels[i % r] for i in range(n)], dim=source.dim,
        stamps=[synthetic_stamp(i) for i in range(n)], meta=[dict(SYNTHETIC_META) for _ in range(n)],
        created=f"bench-scale {n}")
    table.fingerprint = table.content_fingerprint()
    return table


# -- an embedder whose vectors are supplied ----------------------------------------------------------


class SuppliedEmbedder:
    """Stands in for :class:`app.core.embed.Embedder` where the benchmark excludes the model: it carries the
    collection's model, weights id and dimension (what stores and changes check), decodes and preprocesses
    like the model would, and answers each image with the next of ``vectors`` (cycling). Without vectors it
    refuses to embed (a searching process that only gets query vectors)."""

    def __init__(self, model: str, weights_id: str, dim: int, *, weights_arg: str = "imagenet",
                 vectors: np.ndarray | None = None) -> None:
        self.model = get_model(model)
        self.weights_id = weights_id
        self.dim = int(dim)
        self.engine = "supplied"
        self.spec = SimpleNamespace(kind="supplied", path=None, untrained=False, arg=lambda: weights_arg)
        self.notices: list[str] = []
        self.int8_info = None
        self._vectors = vectors
        self._next = 0
        self.rows = 0

    @classmethod
    def for_source(cls, source: SourceVectors, vectors: np.ndarray | None = None) -> "SuppliedEmbedder":
        return cls(source.model, source.weights_id, source.dim, weights_arg=source.weights_arg, vectors=vectors)

    @property
    def preprocessing(self):
        return self.model.preprocessing

    @property
    def loaded(self) -> bool:
        return True

    def preprocess(self, img: Any) -> np.ndarray:
        from app.core.preprocess import preprocess

        return preprocess(img, self.model.preprocessing)

    def load(self) -> "SuppliedEmbedder":
        return self

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        if self._vectors is None:
            raise AssertionError("the scale benchmark's searching process embeds nothing")
        idx = (self._next + np.arange(len(batch))) % len(self._vectors)
        self._next += len(batch)
        self.rows += len(batch)
        return np.asarray(self._vectors[idx], dtype=np.float32)


# -- files -----------------------------------------------------------------------------------------


def write_jpegs(folder: Path, count: int, *, seed: int, size: int = 96) -> list[Path]:
    """``count`` small, distinct, seeded JPEG files in ``folder`` (photos to add)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
        path = folder / f"added_{i:04d}.jpg"
        Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=85)
        out.append(path)
    return out


def evict(paths: list[Path]) -> int:
    """Drop ``paths`` from the page cache (``posix_fadvise(POSIX_FADV_DONTNEED)`` after ``fsync``); returns
    the bytes they hold. The interpreter and its libraries stay cached: this makes the collection cold."""
    total = 0
    for path in paths:
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
            total += size
        finally:
            os.close(fd)
    return total


def files_state(folders: list[Path]) -> dict[Path, tuple[int, int, int]]:
    """Every file under ``folders``: (inode, size, mtime_ns), to tell which a change wrote."""
    out = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                st = path.stat()
                out[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def changed_bytes(before: dict[Path, tuple[int, int, int]], after: dict[Path, tuple[int, int, int]]) -> int:
    """What was written between two :func:`files_state` snapshots, as the files show it: a new file (new path
    or inode) counts whole, a file changed in place counts what it grew by (an append; a rewrite in place
    of the same size counts 0, which the process's own write counters do see)."""
    total = 0
    for path, (ino, size, mtime) in after.items():
        old = before.get(path)
        if old is None or old[0] != ino:
            total += size
        elif old != (ino, size, mtime):
            total += max(0, size - old[1])
    return total


def io_counters() -> dict[str, int]:
    """This process's I/O counters (``/proc/self/io``): ``write_bytes`` (bytes sent to storage, page-cache
    writes included), ``wchar`` (every write call, pipes too); empty where there is no such file."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return {}
    return {key: int(value) for key, _, value in (line.partition(": ") for line in lines) if value.strip().isdigit()}
