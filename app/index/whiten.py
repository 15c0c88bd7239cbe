"""Unsupervised PCA-whitening of a collection's vectors for re-ranking (Jégou & Chum 2012), numpy only.

A :class:`Whitening` is learned from a collection's own raw vectors (no labels, no queries): each vector
gets a signed power (``feature_power``; 0.5 is the square root) and is normalised, the mean is taken
away, and it is projected on the top ``dim`` principal axes, each scaled by ``(eigenvalue + shrink *
mean eigenvalue) ** -power`` (``power`` 0.5 would be full whitening; a small one only evens out the
strongest axes), then normalised again. Re-ranking orders, expands and augments in that space; the
index, the scores, Milvus, duplicates and objects keep the raw vectors.

Measured on Caltech101's held-out split with EfficientNet-Lite0 (``scripts/whiten_study.py``): full
whitening loses (P@5 0.859 at 1,280 dimensions, 0.891 at 256); the square root, centring and 256
dimensions with a mild power gain +0.008 on top of DBA + αQE. A collection with fewer than
``min_rows`` valid vectors has none (its principal axes would not be estimated well).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.index.rerank import normalise


@dataclass(frozen=True)
class WhitenParams:
    dim: int = 256  # principal axes kept
    power: float = 0.1  # eigenvalue exponent (negated): 0 is PCA only, 0.5 full whitening
    shrink: float = 0.5  # added to each eigenvalue, times their mean
    feature_power: float = 0.5  # signed power of each raw component before anything else
    min_rows: int = 1000  # fewer valid vectors: no whitening
    refit_churn: float = 0.25  # refit (and recompute DBA) once rows added + deleted since the fit pass this share


@dataclass
class Whitening:
    mean: np.ndarray  # (d,) float32
    proj: np.ndarray  # (d, dim) float32
    feature_power: float
    rows: int  # valid vectors it was learned from

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised ``x`` ((n, d) -> (n, dim); (d,) -> (dim,))."""
        x = np.asarray(x, dtype=np.float32)
        one = x.ndim == 1
        y = normalise(_signed_power(np.atleast_2d(x), self.feature_power))
        out = normalise((y - self.mean) @ self.proj)
        return out[0] if one else out


def _signed_power(x: np.ndarray, p: float) -> np.ndarray:
    return x if p == 1.0 else np.sign(x) * np.power(np.abs(x), p)


def fit(raw: np.ndarray, params: WhitenParams = WhitenParams()) -> Whitening | None:
    """The whitening learned from ``raw`` (n, d) (the valid rows only), or None when n < ``min_rows``."""
    raw = np.asarray(raw, dtype=np.float32)
    if len(raw) < max(2, params.min_rows):
        return None
    y = normalise(_signed_power(raw, params.feature_power)).astype(np.float64)
    mean = y.mean(axis=0)
    cov = (y - mean).T @ (y - mean) / (len(y) - 1)
    lam, vecs = np.linalg.eigh(cov)
    lam, vecs = np.clip(lam[::-1], 0.0, None), vecs[:, ::-1]
    dim = min(params.dim, raw.shape[1])
    proj = vecs[:, :dim] * np.power(lam[:dim] + params.shrink * lam.mean() + 1e-12, -params.power)
    return Whitening(mean.astype(np.float32), proj.astype(np.float32), params.feature_power, len(raw))
