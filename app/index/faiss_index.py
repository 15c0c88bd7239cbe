"""Building and searching faiss indexes: the factory configuration (:class:`IndexConfig`), training
(with our own fast PCA in front), search parameters (nprobe, refine k_factor) and single-query search.

The files and the manifest of a collection's index are :mod:`app.index.faiss_store`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

PCA_RE = re.compile(r"^(PCAR?)(\d+),(.+)$")

@dataclass(frozen=True)
class IndexConfig:
    """What to build: a faiss factory string plus search-time parameters."""

    factory: str
    nprobe: int = 1
    k_factor: int = 1  # for ",RFlat"/",Refine(...)" indexes: candidates re-ranked = k * k_factor


def train_index(
    vectors: np.ndarray,
    config: IndexConfig,
    *,
    train_sample: np.ndarray | None = None,
    pca_cache: dict[tuple[int, bool], Any] | None = None,
):
    """Build and train an index for ``config`` (vectors are not added).

    A leading ``PCA<d>``/``PCAR<d>`` is trained with numpy (an eigen-decomposition of the
    covariance, several times faster than faiss's own PCA training at d=2048) and wrapped in a
    ``faiss.IndexPreTransform``, so the result is the same kind of index ``index_factory`` makes.
    ``pca_cache`` lets a parameter sweep train each PCA once (keyed by output dim and rotation).
    """
    import faiss

    train = np.ascontiguousarray(train_sample if train_sample is not None else vectors, dtype=np.float32)
    d = train.shape[1]
    m = PCA_RE.match(config.factory)
    if m:
        kind, d_out, rest = m.group(1), int(m.group(2)), m.group(3)
        key = (d_out, kind == "PCAR")
        if pca_cache is not None and key in pca_cache:
            pca = pca_cache[key]  # trained and read-only from here on: safe to share
        else:
            pca = fit_pca(train, d_out, random_rotation=key[1])
            if pca_cache is not None:
                pca_cache[key] = pca
        inner = faiss.index_factory(d_out, rest, faiss.METRIC_L2)
        quiet_clustering(inner)
        index = faiss.IndexPreTransform(pca, inner)
    else:
        index = faiss.index_factory(d, config.factory, faiss.METRIC_L2)
        quiet_clustering(index)
    index.train(train)
    set_search_params(index, config)
    return index


def fit_pca(x: np.ndarray, d_out: int, *, random_rotation: bool = False):
    """A trained ``faiss.PCAMatrix`` computed with numpy."""
    if d_out > x.shape[1]:
        raise ValueError(f"PCA to {d_out} dims from {x.shape[1]}")
    return pca_from_eigen(*pca_eigen(x), d_out, random_rotation=random_rotation)


def pca_eigen(x: np.ndarray, max_components: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, eigenvalues, eigenvectors as columns) of ``x``'s covariance, largest first.

    One decomposition serves every output dimension (the tuner builds several PCAs from it).
    With fewer vectors than dimensions and ``max_components`` at most their number, an SVD of
    the centred data gives the same leading components much faster.
    """
    mean = x.mean(axis=0, dtype=np.float64)
    xc = x - mean.astype(np.float32)
    if max_components is not None and len(x) < x.shape[1] and max_components <= len(x):
        _, s, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
        return mean, (s**2) / max(1, len(x)), vt.T
    cov = (xc.T.astype(np.float64) @ xc) / max(1, len(x))
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    return mean, eigval[order], eigvec[:, order]


def pca_from_eigen(mean: np.ndarray, eigval: np.ndarray, eigvec: np.ndarray, d_out: int, *,
                   random_rotation: bool = False):
    """A trained ``faiss.PCAMatrix`` keeping the first ``d_out`` of the given eigenvectors."""
    import faiss

    d_in = eigvec.shape[0]
    if d_out > eigvec.shape[1]:
        raise ValueError(f"PCA to {d_out} dims from {eigvec.shape[1]} components")
    eigval, eigvec = eigval[:d_out], eigvec[:, :d_out]  # prepare_Ab only reads the first d_out
    pca = faiss.PCAMatrix(d_in, d_out, 0, random_rotation)
    faiss.copy_array_to_vector(np.asarray(mean, dtype=np.float32), pca.mean)
    faiss.copy_array_to_vector(np.maximum(eigval, 0).astype(np.float32), pca.eigenvalues)
    faiss.copy_array_to_vector(np.ascontiguousarray(eigvec.T, dtype=np.float32).ravel(), pca.PCAMat)
    pca.prepare_Ab()
    # apply() only needs A and b; the full d_in x d_in eigenvector matrix would make every
    # saved index 16 MB larger at d=2048.
    pca.PCAMat.clear()
    pca.eigenvalues.clear()
    pca.is_trained = True
    return pca


def quiet_clustering(index) -> None:
    """Let k-means run on small collections without faiss printing a warning per sub-quantizer."""
    import faiss

    for obj in (index, faiss.downcast_index(index)):
        for attr in ("cp",):
            cp = getattr(obj, attr, None)
            if cp is not None:
                cp.min_points_per_centroid = 1
        pq = getattr(obj, "pq", None)
        if pq is not None:
            pq.cp.min_points_per_centroid = 1
        base = getattr(obj, "base_index", None)
        if base is not None and base is not index:
            quiet_clustering(faiss.downcast_index(base))


def set_search_params(index, config: IndexConfig) -> None:
    import faiss

    try:
        faiss.extract_index_ivf(index).nprobe = int(config.nprobe)
    except RuntimeError:
        pass  # not an IVF index (e.g. a flat reference index)
    refine = _find_refine(index)
    if refine is not None:
        refine.k_factor = float(config.k_factor)


def _find_refine(index):
    import faiss

    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexPreTransform):
        idx = faiss.downcast_index(idx.index)
    return idx if isinstance(idx, faiss.IndexRefine) else None


def build_index(vectors: np.ndarray, config: IndexConfig, *, train_sample: np.ndarray | None = None):
    index = train_index(vectors, config, train_sample=train_sample)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores, ids) of shape (nq, k); ids are -1 and scores -inf where fewer than k exist."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = max(1, min(int(k), max(1, index.ntotal)))
    if len(q) == 1:
        dist, ids = search_one_thread(index, q, k)
    else:
        dist, ids = index.search(q, k)
    scores = 1.0 - dist / 2.0
    scores[ids < 0] = -np.inf
    return scores.astype(np.float32), ids


def search_one_thread(index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One query on one OpenMP thread: there is nothing to split, and when the other cores are
    busy (the model, another request) waking a thread pool costs milliseconds (measured: 0.26 ms
    instead of 2.2 ms for Caltech101 under load). OpenMP's thread count is per calling thread, so
    this does not affect other threads; it is restored afterwards."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(q, k)
    finally:
        faiss.omp_set_num_threads(before)


# -- saving and loading -----------------------------------------------------------------------
