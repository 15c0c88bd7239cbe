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

With whitening (format 2, :mod:`app.index.whiten`; on by default for collections of at least
``WhitenParams.min_rows`` valid vectors) the augmented vectors live in the whitened space: the file
also holds the whitening (mean, projection), the parameters it was asked for and the churn (rows added
plus rows deleted) since it was learned. Changes keep the whitening and update DBA exactly in its
space; once the churn passes ``refit_churn`` of the rows it was learned from, the next change learns
it again and recomputes DBA in full. A format-1 file (no whitening) is read as before and gets the
default whitening at the next change.

Format 3: the default whitening is the supervised one learned from the items' labels
(:mod:`app.index.learned_whiten`; the unsupervised one when the labels cannot teach one: see its
fallback rule), so a change passes the table's labels (``labels``: one tuple per row). The parameters
are stored as JSON (``wp_kind``, ``wp_json``). A format-2 file is read as before and gets the default
(learned) whitening at the next change.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from app.errors import StorageError
from app.files.atomic import atomic_writer
from app.files.layout import CollectionFiles
from app.index.learned_whiten import (
    LearnedWhitening,
    LearnedWhitenParams,
    fit_space,
    needs_relearn,
    params_arrays,
    params_from,
)
from app.index.rerank import DbaParams, augment, augment_update
from app.index.whiten import Whitening, WhitenParams

log = logging.getLogger(__name__)

FORMAT = 3
READABLE = (1, 2, 3)
DEFAULT_PARAMS = DbaParams()
DEFAULT_WHITEN: WhitenParams | LearnedWhitenParams | None = LearnedWhitenParams()
Labels = Sequence[Sequence[str]] | None  # one tuple per row (all rows, deleted ones included)
# The dataset kinds whose labels are categories, one per image: what a learned whitening is taught. A
# folder's names (years, trips, albums) are not categories: taught them, it would pull a query towards its
# own folder's photos (on labels it was not taught it measured below the unsupervised whitening), so a
# folder collection gets the unsupervised one.
CATEGORY_KINDS = ("caltech101",)


def whitening_labels(kind: str, labels: Labels) -> Labels:
    """The labels a collection of ``kind`` teaches its whitening (None: the unsupervised whitening)."""
    return labels if kind in CATEGORY_KINDS else None
# A full DBA computation compares every row with every other (O(N^2 d): 12 s at 8k rows on 2 cores, some
# 7 min at 50k), and a loaded collection holds its augmented and whitened rows in memory. Past this many
# valid rows a collection has none (made, or removed by its next change): re-ranking is αQE on the raw
# vectors, whose cost does not grow with the collection.
MAX_ROWS = 50_000


@dataclass
class StoredAugmentation:
    vectors: np.ndarray  # (N, d) float32: augmented rows; deleted rows hold their raw vector
    thresholds: np.ndarray  # (N,) float32
    live: np.ndarray  # (N,) bool: the valid rows it was computed for
    params: DbaParams
    digest: str  # of the raw rows 0..N-1
    whiten: WhitenParams | LearnedWhitenParams | None = None  # asked for (None: no whitening)
    whitening: Whitening | None = None  # learned (None: too few rows, or not asked for): vectors are in its space
    churn: int = 0  # rows added + rows deleted since the whitening was learned
    format: int = FORMAT

    def matches(self, raw: np.ndarray, live: np.ndarray) -> bool:
        return len(self.live) == len(raw) and np.array_equal(self.live, live) and self.digest == raw_digest(raw)

    def space(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` in the space the augmented vectors live in (whitened, or raw)."""
        return raw if self.whitening is None else self.whitening.apply(raw)


@dataclass
class SearchSpace:
    """What a loaded collection whitens with: the whitening and every raw row in its space, unaugmented
    (what "a copy stays first" compares; computed once at load, not per query)."""

    whitening: Whitening
    raw: np.ndarray  # (N, dim) float32

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.whitening.apply(x)


@dataclass(frozen=True)
class RefreshSummary:
    mode: str  # "full", "incremental", "unchanged", "unsaved" (computed, but the file could not be written),
    # "removed" (the collection has grown past MAX_ROWS)
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
            fmt = int(z["format"])
            if fmt not in READABLE:
                return None
            whiten, whitening, churn = _load_whitening(z) if fmt >= 2 else (None, None, 0)
            return StoredAugmentation(np.asarray(z["vectors"], np.float32), np.asarray(z["thresholds"], np.float32),
                                      np.asarray(z["live"], bool), DbaParams(int(z["n"]), float(z["alpha"])),
                                      str(z["digest"]), whiten, whitening, churn, fmt)
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("ignoring %s (%s): it is recomputed", path, exc)
        return None


def save(features_dir: str | Path, name: str, aug: StoredAugmentation) -> Path:
    """Write ``aug`` atomically (:func:`app.files.atomic.atomic_writer`)."""
    buf = io.BytesIO()
    np.savez(buf, format=FORMAT, vectors=aug.vectors, thresholds=aug.thresholds, live=aug.live,
             n=aug.params.n, alpha=aug.params.alpha, digest=aug.digest, **_whitening_arrays(aug))
    path = dba_path(features_dir, name)
    with atomic_writer(path) as fh:
        fh.write(buf.getvalue())
    return path


def _whitening_arrays(aug: StoredAugmentation) -> dict:
    out: dict = {"whiten_on": aug.whiten is not None, "churn": aug.churn}
    if aug.whiten is not None:
        out.update(params_arrays(aug.whiten))
    if aug.whitening is not None:
        out.update(w_mean=aug.whitening.mean, w_proj=aug.whitening.proj,
                   w_feature_power=aug.whitening.feature_power, w_rows=aug.whitening.rows)
        if isinstance(aug.whitening, LearnedWhitening):
            out.update(w_taught=np.array(sorted(aug.whitening.taught), dtype=str))
    return out


def _load_whitening(z) -> tuple[WhitenParams | LearnedWhitenParams | None, Whitening | None, int]:
    whiten = None
    if bool(z["whiten_on"]) and "wp_json" in z.files:
        whiten = params_from(str(z["wp_kind"]), str(z["wp_json"]))
    elif bool(z["whiten_on"]):  # format 2
        whiten = WhitenParams(int(z["wp_dim"]), float(z["wp_power"]), float(z["wp_shrink"]),
                              float(z["wp_feature_power"]), int(z["wp_min_rows"]), float(z["wp_refit_churn"]))
    whitening = None
    if "w_mean" in z.files:
        whitening = Whitening(np.asarray(z["w_mean"], np.float32), np.asarray(z["w_proj"], np.float32),
                              float(z["w_feature_power"]), int(z["w_rows"]))
        if "w_taught" in z.files:
            whitening = LearnedWhitening(**vars(whitening), taught=frozenset(str(t) for t in z["w_taught"]))
    return whiten, whitening, int(z["churn"])


def _changed_rows(before: np.ndarray, after: np.ndarray) -> int:
    """Rows added plus rows deleted between two valid-row masks (``after`` may be longer)."""
    padded = np.zeros(len(after), bool)
    padded[: len(before)] = before
    return int((padded != after).sum())


def _needs_refit(previous: StoredAugmentation, live: np.ndarray, churn: int, labels: Labels = None) -> bool:
    w = previous.whiten
    if w is None:
        return False
    if labels is not None and needs_relearn(previous.whitening, w, [labels[i] for i in np.flatnonzero(live)]):
        return True
    if previous.whitening is None:
        return int(live.sum()) >= w.min_rows  # grown big enough to learn one
    return churn > w.refit_churn * previous.whitening.rows


def compute(raw: np.ndarray, live: np.ndarray, previous: StoredAugmentation | None, params: DbaParams,
            whiten: WhitenParams | LearnedWhitenParams | None = None, labels: Labels = None
            ) -> tuple[StoredAugmentation, RefreshSummary]:
    """The augmentation of ``raw`` over the ``live`` rows: from ``previous`` when it describes an earlier
    state of the same rows with the same parameters and its whitening is still good (incremental, in
    the whitening's space), else from scratch (the whitening learned again from the valid raw rows)."""
    t = time.perf_counter()
    raw = np.asarray(raw, dtype=np.float32)
    live = np.asarray(live, bool)
    same = previous is not None and previous.params == params and previous.whiten == whiten
    if same and previous.matches(raw, live):
        return previous, RefreshSummary("unchanged", 0, 0.0)
    n_old = len(previous.live) if previous is not None else 0
    churn = previous.churn + _changed_rows(previous.live, live) if same else 0
    if same and n_old <= len(raw) and previous.digest == raw_digest(raw[:n_old]) \
            and not _needs_refit(previous, live, churn, labels):
        whitening = previous.whitening
        vectors, thresholds, rows = augment_update(previous.space(raw), previous.vectors, previous.thresholds,
                                                   previous.live, live, params)
        mode, count = "incremental", len(rows)
    else:
        rows_labels = None if labels is None else [labels[i] for i in np.flatnonzero(live)]
        whitening, churn = (fit_space(raw[live], whiten, rows_labels) if whiten is not None else None), 0
        space = raw if whitening is None else whitening.apply(raw)
        vectors, thresholds = augment(space, live, params)
        mode, count = "full", int(live.sum())
    aug = StoredAugmentation(vectors, thresholds, live.copy(), params, raw_digest(raw), whiten, whitening, churn)
    return aug, RefreshSummary(mode, count, time.perf_counter() - t)


def _settings(previous: StoredAugmentation | None, params: DbaParams, whiten: WhitenParams | LearnedWhitenParams | None
              ) -> tuple[DbaParams, WhitenParams | LearnedWhitenParams | None]:
    """What a change computes: the file's own settings; a file before format 3 (before the learned default) gets ``whiten``."""
    if previous is None:
        return params, whiten
    return previous.params, (previous.whiten if previous.format >= 3 else whiten)


def refresh(features_dir: str | Path, name: str, raw: np.ndarray, live: np.ndarray, *, create: bool,
            params: DbaParams = DEFAULT_PARAMS, whiten: WhitenParams | LearnedWhitenParams | None | str = "default",
            labels: Labels = None) -> RefreshSummary | None:
    """Bring ``NAME.dba.npz`` up to date with the raw vectors and valid rows after a change (the caller holds
    the collection's lock). ``create``: make it when there is none (a new build with DBA on); otherwise a
    collection without one keeps having none. ``whiten``: for a new file ("default": :data:`DEFAULT_WHITEN`;
    None: none); ``labels``: the table's, for a learned whitening. None: no augmentation."""
    whiten = DEFAULT_WHITEN if isinstance(whiten, str) else whiten
    if int(np.count_nonzero(live)) > MAX_ROWS:
        if not dba_path(features_dir, name).exists():
            return None
        remove(features_dir, name)
        log.warning("%s: more than %d valid rows: no database-side augmentation (αQE only)", name, MAX_ROWS)
        return RefreshSummary("removed", 0, 0.0)
    previous = load(features_dir, name)
    if previous is None and not create and not dba_path(features_dir, name).exists():
        return None
    aug, summary = compute(raw, live, previous, *_settings(previous, params, whiten), labels=labels)
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


def searched_space(features_dir: str | Path, name: str, raw: np.ndarray, live: np.ndarray, labels: Labels = None
                   ) -> tuple[np.ndarray | None, SearchSpace | None]:
    """(the augmented vectors a loaded collection orders its candidates with, the whitening they live in),
    or (None, None) without DBA. A stale file (a change whose refresh did not run) is brought up to date in
    memory, not written: readers hold no lock."""
    previous = load(features_dir, name)
    if previous is None:
        return None, None
    aug, summary = compute(raw, live, previous, previous.params, previous.whiten, labels)
    if summary.mode != "unchanged":
        log.warning("%s: the DBA file was stale; recomputed in memory (%s, %d rows)", name, summary.mode, summary.rows)
    space = None if aug.whitening is None else SearchSpace(aug.whitening, aug.whitening.apply(raw))
    return aug.vectors, space


def searched_vectors(features_dir: str | Path, name: str, raw: np.ndarray, live: np.ndarray) -> np.ndarray | None:
    """The augmented vectors of :func:`searched_space` (None: no DBA)."""
    return searched_space(features_dir, name, raw, live)[0]
