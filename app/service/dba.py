"""A collection's database-side augmentation (DBA): ``features/NAME.dba.npz``, beside its raw vectors.

Which vectors each consumer uses:

* **raw** (``features/NAME.npy``, :attr:`Collection.vectors`): the faiss index and the Milvus copy (they
  pick candidates), every hit's score (the cosine to the query: 1.0 is the same image, what copy and
  duplicate detection read), the query vector of a collection item, object vectors;
* **augmented** (this file, :attr:`Collection.augmented`): similarity ordering only, when re-ranking is on:
  they order the index's candidates and expand the query (:mod:`app.service.requery`). Measured on the
  held-out split, ordering the raw index's candidates this way gives the figures of an index built on
  the augmented vectors (``scripts/rerank_study.py``), so the index, its updates and Milvus stay raw.

The file holds the augmented vectors, each row's threshold (the similarity of its ``n``-th neighbour),
the valid rows it was computed for, the parameters and a digest of the raw rows. After any change
(build, add, delete, a rescan) :func:`refresh` brings it up to date exactly: only added rows and the
rows whose neighbour list can have changed are recomputed (:func:`app.index.rerank.augment_update`);
an unknown, damaged or foreign file is recomputed in full. A collection built with ``--no-dba`` has
none. Readers that find it stale (a change whose refresh did not run) compute the current one in
memory and leave the file to the next change.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import StorageError
from app.files.atomic import atomic_writer
from app.files.layout import CollectionFiles
from app.index.rerank import DbaParams, augment, augment_update

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_PARAMS = DbaParams()


@dataclass
class StoredAugmentation:
    vectors: np.ndarray  # (N, d) float32: augmented rows; deleted rows hold their raw vector
    thresholds: np.ndarray  # (N,) float32
    live: np.ndarray  # (N,) bool: the valid rows it was computed for
    params: DbaParams
    digest: str  # of the raw rows 0..N-1

    def matches(self, raw: np.ndarray, live: np.ndarray) -> bool:
        return len(self.live) == len(raw) and np.array_equal(self.live, live) and self.digest == raw_digest(raw)


@dataclass(frozen=True)
class RefreshSummary:
    mode: str  # "full", "incremental", "unchanged", "unsaved" (computed, but the file could not be written)
    rows: int  # rows recomputed
    seconds: float


def dba_path(features_dir: str | Path, name: str) -> Path:
    return CollectionFiles.at(features_dir, features_dir, name).dba


def raw_digest(raw: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(raw, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def load(features_dir: str | Path, name: str) -> StoredAugmentation | None:
    """The stored augmentation of ``name``, or None (none, or unreadable: it is then recomputed)."""
    path = dba_path(features_dir, name)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != FORMAT:
                return None
            return StoredAugmentation(np.asarray(z["vectors"], np.float32), np.asarray(z["thresholds"], np.float32),
                                np.asarray(z["live"], bool), DbaParams(int(z["n"]), float(z["alpha"])), str(z["digest"]))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("ignoring %s (%s): it is recomputed", path, exc)
        return None


def save(features_dir: str | Path, name: str, aug: StoredAugmentation) -> Path:
    """Write ``aug`` atomically (:func:`app.files.atomic.atomic_writer`)."""
    buf = io.BytesIO()
    np.savez(buf, format=FORMAT, vectors=aug.vectors, thresholds=aug.thresholds, live=aug.live,
             n=aug.params.n, alpha=aug.params.alpha, digest=aug.digest)
    path = dba_path(features_dir, name)
    with atomic_writer(path) as fh:
        fh.write(buf.getvalue())
    return path


def compute(raw: np.ndarray, live: np.ndarray, previous: StoredAugmentation | None, params: DbaParams
            ) -> tuple[StoredAugmentation, RefreshSummary]:
    """The augmentation of ``raw`` over the ``live`` rows: from ``previous`` when it describes an earlier
    state of the same rows (incremental), else from scratch."""
    t = time.perf_counter()
    raw = np.asarray(raw, dtype=np.float32)
    live = np.asarray(live, bool)
    if previous is not None and previous.matches(raw, live) and previous.params == params:
        return previous, RefreshSummary("unchanged", 0, 0.0)
    n_old = len(previous.live) if previous is not None else 0
    if (previous is not None and previous.params == params and n_old <= len(raw)
            and previous.digest == raw_digest(raw[:n_old])):
        vectors, thresholds, rows = augment_update(raw, previous.vectors, previous.thresholds, previous.live, live,
                                                   params)
        mode, count = "incremental", len(rows)
    else:
        vectors, thresholds = augment(raw, live, params)
        mode, count = "full", int(live.sum())
    aug = StoredAugmentation(vectors, thresholds, live.copy(), params, raw_digest(raw))
    return aug, RefreshSummary(mode, count, time.perf_counter() - t)


def refresh(features_dir: str | Path, name: str, raw: np.ndarray, live: np.ndarray, *, create: bool,
            params: DbaParams = DEFAULT_PARAMS) -> RefreshSummary | None:
    """Bring ``NAME.dba.npz`` up to date with the raw vectors and valid rows after a change (the caller holds
    the collection's lock). ``create``: make it when there is none (a new build with DBA on); otherwise a
    collection without one keeps having none. None: no augmentation."""
    previous = load(features_dir, name)
    if previous is None and not create and not dba_path(features_dir, name).exists():
        return None
    aug, summary = compute(raw, live, previous, previous.params if previous is not None else params)
    if summary.mode != "unchanged":
        try:
            save(features_dir, name, aug)
        except (StorageError, OSError) as exc:  # the change itself is committed: readers recompute, the next change catches up
            log.warning("%s: the DBA file was not updated (%s); it is recomputed when read", name, exc)
            return RefreshSummary("unsaved", summary.rows, summary.seconds)
    return summary


def remove(features_dir: str | Path, name: str) -> None:
    """Forget the augmentation of ``name`` (a rebuild with ``--no-dba``, a dropped collection)."""
    dba_path(features_dir, name).unlink(missing_ok=True)


def searched_vectors(features_dir: str | Path, name: str, raw: np.ndarray, live: np.ndarray) -> np.ndarray | None:
    """The augmented vectors a loaded collection orders its candidates with, or None (no DBA). A stale
    file (a change whose refresh did not run) is brought up to date in memory, not written: readers hold no lock."""
    previous = load(features_dir, name)
    if previous is None:
        return None
    aug, summary = compute(raw, live, previous, previous.params)
    if summary.mode != "unchanged":
        log.warning("%s: the DBA file was stale; recomputed in memory (%s, %d rows)", name, summary.mode, summary.rows)
    return aug.vectors
