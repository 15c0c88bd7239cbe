"""Supervised ("learned") whitening from a collection's labels (Mikolajczyk & Matas's Lw, as used by
Radenović et al. for CNN image retrieval), numpy only.

Where :func:`app.index.whiten.fit` learns its axes from the raw vectors alone, this one also reads each
database item's label (Caltech's categories; a user's folder names): items that share a label should
end up close, items that do not, apart.

1. Each vector gets the signed power ``feature_power`` and is normalised (as the unsupervised one).
2. The within-label covariance ``Cw`` (each item minus its label's mean, over the labels with at least
   ``min_per_label`` items) is shrunk towards its mean eigenvalue (``shrink``) and whitened away:
   ``P1 = Cw^-1/2``.
3. The covariance of all the centred vectors, in that space, is diagonalised; its top ``dim`` axes
   (where labels differ most relative to how much they vary inside) are kept, each scaled by its
   eigenvalue ``** -power``.

The result is an ordinary :class:`~app.index.whiten.Whitening` (mean, projection, feature power): the
search path, DBA and its incremental update use it exactly as they use the unsupervised one.

**Relearning**: besides the churn rule of the unsupervised whitening, a kept learned whitening is learned
again once the items of labels it was not taught (a new folder) pass ``new_label_share`` of its rows:
queries of such labels gain less from it than from the unsupervised one (``scripts/learned_whiten_study.py
unseen``). A fallback whitening is replaced once the labels can teach one.

**Fallback rule**: fewer than ``min_labels`` labels with at least ``min_per_label`` items each (a
collection with one folder, or too few per folder), or fewer than ``min_rows`` such items: no learned
whitening; :func:`fit_space` then learns the unsupervised PCA-whitening (``WhitenParams``) instead.

Only the rows it is given are read: the held-out evaluation gives it the database rows and their
labels, never a query.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from app.index.rerank import normalise
from app.index.whiten import Whitening, WhitenParams, fit


@dataclass(frozen=True)
class LearnedWhitenParams:
    dim: int = 128  # axes kept
    shrink: float = 0.1  # added to each within-label eigenvalue, times their mean
    power: float = 0.0  # each kept axis scaled by its eigenvalue ** -power (0: as Lw)
    feature_power: float = 0.5  # signed power of each raw component before anything else
    min_labels: int = 2  # labels with >= min_per_label items needed; fewer: the unsupervised fallback
    min_per_label: int = 5
    min_rows: int = 1000  # items in those labels needed
    refit_churn: float = 0.25  # as WhitenParams.refit_churn
    new_label_share: float = 0.02  # relearn once items of labels it was not taught pass this share of its rows

    def fallback(self) -> WhitenParams:
        """The unsupervised whitening used when the labels cannot teach one."""
        return WhitenParams(min_rows=self.min_rows, refit_churn=self.refit_churn)


@dataclass
class LearnedWhitening(Whitening):
    """A :class:`~app.index.whiten.Whitening` learned from labels, with the labels it was taught."""

    taught: frozenset[str] = field(default_factory=frozenset)


def label_keys(labels: Sequence[Sequence[str]]) -> np.ndarray:
    """Each item's first label ("" for none), as an array of strings."""
    return np.array([str(lab[0]) if len(lab) else "" for lab in labels], dtype=object)


def usable_groups(keys: np.ndarray, params: LearnedWhitenParams) -> list[np.ndarray]:
    """Row positions of each label with at least ``min_per_label`` items (unlabelled rows excluded), or []
    when the fallback rule applies."""
    uniq, inverse, counts = np.unique(keys.astype(str), return_inverse=True, return_counts=True)
    groups = [np.flatnonzero(inverse == g) for g in range(len(uniq))
              if uniq[g] != "" and counts[g] >= max(2, params.min_per_label)]
    if len(groups) < max(2, params.min_labels) or sum(len(g) for g in groups) < params.min_rows:
        return []
    return groups


def fit_learned(raw: np.ndarray, labels: Sequence[Sequence[str]], params: LearnedWhitenParams = LearnedWhitenParams()
                ) -> Whitening | None:
    """The supervised whitening learned from ``raw`` (n, d) and its rows' ``labels``, or None when the
    fallback rule applies (see the module docstring)."""
    raw = np.asarray(raw, dtype=np.float32)
    if len(labels) != len(raw):
        raise ValueError(f"{len(labels)} labels for {len(raw)} vectors")
    keys = label_keys(labels)
    groups = usable_groups(keys, params)
    if not groups:
        return None
    y = normalise(np.sign(raw) * np.power(np.abs(raw), params.feature_power)
                  if params.feature_power != 1.0 else raw).astype(np.float64)
    rows = np.concatenate(groups)
    means = np.stack([y[g].mean(axis=0) for g in groups])  # (labels, d)
    counts = np.array([len(g) for g in groups], dtype=np.float64)
    # sum over labels of sum_i (y_i - mu)(y_i - mu)^T = sum_i y_i y_i^T - sum over labels of n mu mu^T: one product
    within = y[rows].T @ y[rows] - (means * counts[:, None]).T @ means
    within /= max(1, len(rows) - len(groups))
    lam, vecs = np.linalg.eigh(within)
    lam = np.clip(lam, 0.0, None)
    p1 = vecs * np.power(lam + params.shrink * lam.mean() + 1e-12, -0.5)  # (d, d): Cw^-1/2 (up to a rotation)
    mean = y.mean(axis=0)
    t = (y - mean) @ p1
    lam2, vecs2 = np.linalg.eigh(t.T @ t / (len(t) - 1))
    lam2, vecs2 = np.clip(lam2[::-1], 0.0, None), vecs2[:, ::-1]
    dim = min(params.dim, y.shape[1])
    proj = p1 @ (vecs2[:, :dim] * np.power(lam2[:dim] + 1e-12, -params.power))
    taught = frozenset(str(keys[g[0]]) for g in groups)
    return LearnedWhitening(mean.astype(np.float32), proj.astype(np.float32), params.feature_power, len(raw), taught)


def needs_relearn(whitening: Whitening | None, params: WhitenParams | LearnedWhitenParams,
                  labels: Sequence[Sequence[str]] | None) -> bool:
    """Whether a kept whitening should be learned again for the valid items' ``labels`` (besides the churn
    rule): a learned one once the items of labels it was not taught (labels with at least
    ``min_per_label`` items: a new folder) pass ``new_label_share`` of the rows it was learned from; the
    unsupervised fallback once the labels can teach one. Never without labels or for unsupervised params."""
    if not isinstance(params, LearnedWhitenParams) or labels is None or whitening is None:
        return False
    groups = usable_groups(label_keys(labels), params)
    if not isinstance(whitening, LearnedWhitening):
        return bool(groups)
    keys = label_keys(labels)
    untaught = sum(len(g) for g in groups if str(keys[g[0]]) not in whitening.taught)
    return untaught > params.new_label_share * whitening.rows


def fit_space(raw: np.ndarray, params: WhitenParams | LearnedWhitenParams,
              labels: Sequence[Sequence[str]] | None = None) -> Whitening | None:
    """The whitening ``params`` asks for, learned from ``raw`` (and ``labels`` for a learned one): a
    learned one falls back to the unsupervised PCA-whitening when there are no labels or too few."""
    if isinstance(params, LearnedWhitenParams):
        found = fit_learned(raw, labels, params) if labels is not None else None
        return found if found is not None else fit(raw, params.fallback())
    return fit(raw, params)


KINDS = {"pca": WhitenParams, "learned": LearnedWhitenParams}


def params_arrays(params: WhitenParams | LearnedWhitenParams) -> dict[str, str]:
    """``params`` as two strings a ``.npz`` holds: ``wp_kind`` ("pca" or "learned") and ``wp_json``."""
    kind = "learned" if isinstance(params, LearnedWhitenParams) else "pca"
    return {"wp_kind": kind, "wp_json": json.dumps(asdict(params), sort_keys=True)}


def params_from(kind: str, text: str) -> WhitenParams | LearnedWhitenParams:
    """The parameters :func:`params_arrays` wrote (ValueError: an unknown kind or field)."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown whitening kind {kind!r}")
    try:
        return cls(**json.loads(text))
    except TypeError as exc:
        raise ValueError(f"bad whitening parameters: {exc}") from exc
