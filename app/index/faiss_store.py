"""The faiss index and its manifest.

A collection ``NAME`` is served from ``indexes/NAME.faiss`` plus ``indexes/NAME.manifest.json``.
The manifest records how the index was made (model and weights id, dimension, normalisation,
metric, factory string, nprobe, vector count, sha256 of the index file, dataset root, build date,
library versions, the tuning that chose the configuration) and is checked on every load, so a
corrupted, truncated or mismatched index is refused with a message that says how to rebuild it.

Vectors are L2-normalised, and the indexes use the L2 metric: on unit vectors its ranking is the
cosine ranking, and it stays correct under a PCA pre-transform (which centres the data). Scores
shown to people are cosines, ``1 - d/2`` for a squared L2 distance ``d``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from app.files.atomic import write_bytes, write_json
from app.errors import IndexMismatchError, IndexMissingError
from app.core.models import DEFAULT_MODEL, MODELS, model_of_weights_id

MANIFEST_VERSION = 1
METRIC = "l2"  # on L2-normalised vectors: same ranking as cosine similarity
_PCA_RE = re.compile(r"^(PCAR?)(\d+),(.+)$")


@dataclass(frozen=True)
class IndexConfig:
    """What to build: a faiss factory string plus search-time parameters."""

    factory: str
    nprobe: int = 1
    k_factor: int = 1  # for ",RFlat"/",Refine(...)" indexes: candidates re-ranked = k * k_factor

    def describe(self) -> str:
        extra = f", k_factor={self.k_factor}" if self.k_factor > 1 else ""
        return f"{self.factory} (nprobe={self.nprobe}{extra})"


def index_path(indexes_dir: Path, name: str) -> Path:
    return Path(indexes_dir) / f"{name}.faiss"


def manifest_path(indexes_dir: Path, name: str) -> Path:
    return Path(indexes_dir) / f"{name}.manifest.json"


def list_indexes(indexes_dir: Path) -> list[str]:
    d = Path(indexes_dir)
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(".manifest.json")] for p in d.glob("*.manifest.json"))


# -- training --------------------------------------------------------------------------------


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
    m = _PCA_RE.match(config.factory)
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
        _quiet_clustering(inner)
        index = faiss.IndexPreTransform(pca, inner)
    else:
        index = faiss.index_factory(d, config.factory, faiss.METRIC_L2)
        _quiet_clustering(index)
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


def _quiet_clustering(index) -> None:
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
            _quiet_clustering(faiss.downcast_index(base))


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
        dist, ids = _search_one_thread(index, q, k)
    else:
        dist, ids = index.search(q, k)
    scores = 1.0 - dist / 2.0
    scores[ids < 0] = -np.inf
    return scores.astype(np.float32), ids


def _search_one_thread(index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("faiss-cpu", "numpy", "torch", "torchvision", "onnxruntime", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_index(index, indexes_dir: Path, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``NAME.faiss`` then ``NAME.manifest.json``, both atomically; returns the manifest."""
    import faiss

    data = faiss.serialize_index(index).tobytes()
    full = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        **manifest,
        "dim": int(index.d),
        "normalized": True,
        "metric": METRIC,
        "count": int(index.ntotal),
        "index_file": index_path(indexes_dir, name).name,
        "index_bytes": len(data),
        "index_sha256": hashlib.sha256(data).hexdigest(),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    write_bytes(index_path(indexes_dir, name), data)
    write_json(manifest_path(indexes_dir, name), full)
    return full


def read_manifest(indexes_dir: Path, name: str) -> dict[str, Any]:
    mpath = manifest_path(indexes_dir, name)
    if not mpath.is_file():
        raise IndexMissingError(
            f"The {name} index has not been built (no {mpath}).", hint=f"Build it with: {build_command(name)}"
        )
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexMismatchError(f"The manifest {mpath} is unreadable ({exc}).", hint=rebuild_hint(name)) from exc
    if not isinstance(manifest, dict):
        raise IndexMismatchError(f"The manifest {mpath} is not a JSON object.", hint=rebuild_hint(name))
    missing = [k for k in ("weights_id", "dim", "count", "index_sha256", "factory", "nprobe") if k not in manifest]
    if missing:
        raise IndexMismatchError(f"The manifest {mpath} lacks {', '.join(missing)}.", hint=rebuild_hint(name))
    wrong = [k for k, kind in _MANIFEST_TYPES.items() if not _has_type(manifest[k], kind)]
    if wrong:
        raise IndexMismatchError(f"The manifest {mpath} has invalid {', '.join(wrong)}.", hint=rebuild_hint(name))
    return manifest


_MANIFEST_TYPES = {"weights_id": str, "dim": int, "count": int, "index_sha256": str, "factory": str, "nprobe": int}


def _has_type(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, kind)


def manifest_model(manifest: dict[str, Any]) -> str:
    """The registry name of the model an index was built with (older manifests: from the weights id)."""
    name = manifest.get("model")
    if name in MODELS:
        return name
    return model_of_weights_id(manifest.get("weights_id", "")) or DEFAULT_MODEL


def load_index(indexes_dir: Path, name: str, *, weights_id: str | None = None, dim: int | None = None,
               model: str | None = None):
    """Load and verify an index; returns (index, manifest). Raises on any mismatch.

    ``model`` and ``weights_id`` are what the caller runs: an index built with another model or
    other weights is refused with the command that rebuilds it.
    """
    import faiss

    manifest = read_manifest(indexes_dir, name)
    built_with = manifest_model(manifest)
    if model is not None and built_with != model:
        running = model
        raise IndexMismatchError(
            f"The {name} index was built with model {built_with}, but the app is running with {running}.",
            hint=f"Run with --model {built_with}, or rebuild it for {running}: "
                 f"{build_command(name, manifest, model=running)}",
        )
    if weights_id is not None and manifest["weights_id"] != weights_id:
        raise IndexMismatchError(
            f"The {name} index was built with weights {manifest['weights_id']!r}, "
            f"but the app is running with {weights_id!r}.",
            hint=f"Run with the same --weights, or rebuild: {build_command(name, manifest)}",
        )
    if dim is not None and int(manifest["dim"]) != dim:
        raise IndexMismatchError(
            f"The {name} index has dimension {manifest['dim']}, expected {dim}.", hint=rebuild_hint(name, manifest)
        )
    ipath = index_path(indexes_dir, name)
    try:
        data = ipath.read_bytes()
    except FileNotFoundError as exc:
        raise IndexMissingError(f"{ipath} is missing.", hint=rebuild_hint(name, manifest)) from exc
    if hashlib.sha256(data).hexdigest() != manifest["index_sha256"]:
        raise IndexMismatchError(
            f"{ipath} is corrupted or was changed (its sha256 does not match the manifest).",
            hint=rebuild_hint(name, manifest),
        )
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexMismatchError(f"{ipath} cannot be read by faiss ({exc}).", hint=rebuild_hint(name, manifest)) from exc
    if index.d != int(manifest["dim"]) or index.ntotal != int(manifest["count"]):
        raise IndexMismatchError(
            f"{ipath} holds {index.ntotal} vectors of dimension {index.d}, the manifest says "
            f"{manifest['count']} of dimension {manifest['dim']}.",
            hint=rebuild_hint(name, manifest),
        )
    set_search_params(index, IndexConfig(manifest["factory"], int(manifest["nprobe"]), int(manifest.get("k_factor", 1))))
    return index, manifest


def build_command(name: str, manifest: dict[str, Any] | None = None, *, model: str | None = None) -> str:
    """The command that (re)builds ``name`` as ``manifest`` describes it, for ``model`` when given
    (default: the model the manifest names)."""
    kind = (manifest or {}).get("collection") or (name if name in ("caltech101", "voc2012") else "folder")
    data = (manifest or {}).get("dataset_root") or {
        "caltech101": "data/caltech101",
        "voc2012": "data/voc2012",
    }.get(kind, "DIR")
    cmd = f"python scripts/build_index.py --collection {kind} --data {data}"
    if kind == "folder" or name != kind:
        cmd += f" --name {name}"
    built_with = manifest_model(manifest) if manifest else DEFAULT_MODEL
    model = model or built_with
    if model != DEFAULT_MODEL:
        cmd += f" --model {model}"
    weights = (manifest or {}).get("weights_arg") if model == built_with else None
    if weights and weights != "imagenet":
        cmd += f" --weights {weights}"
    if (manifest or {}).get("limit"):
        cmd += f" --limit {int(manifest['limit'])}"  # rebuild the same sample, not the whole set
    if (manifest or {}).get("include"):
        cmd += f" --include {','.join(manifest['include'])}"
    return cmd


def rebuild_hint(name: str, manifest: dict[str, Any] | None = None) -> str:
    return f"Rebuild it with: {build_command(name, manifest)}"
