"""The faiss index and its manifest.

A collection ``NAME`` is served from ``indexes/NAME.faiss`` plus ``indexes/NAME.manifest.json``.
The manifest (:class:`app.core.manifest.Manifest`) records how the index was made (model and
weights id, dimension, normalisation, metric, factory string, nprobe, vector count, sha256 of the
index file, dataset root, build date, library versions, the tuning that chose the configuration)
and is checked on every load, so a corrupted, truncated or mismatched index is refused with a
message that says how to rebuild it. :class:`FaissStore` is the pair as a
:class:`~app.index.store.VectorStore`.

Vectors are L2-normalised, and the indexes use the L2 metric: on unit vectors its ranking is the
cosine ranking, and it stays correct under a PCA pre-transform (which centres the data). Scores
shown to people are cosines, ``1 - d/2`` for a squared L2 distance ``d``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from app.core.manifest import METRIC, SCHEMA_VERSION, V1_VERSION_KEY, VERSION_KEY, Manifest
from app.core.models import DEFAULT_MODEL
from app.errors import IndexMismatchError, IndexMissingError, UnsupportedOperationError
from app.files.atomic import fsync_dir, write_bytes, write_json
from app.index.faiss_index import IndexConfig, search_one_thread, set_search_params


def index_path(indexes_dir: Path, name: str) -> Path:
    return Path(indexes_dir) / f"{name}.faiss"


def manifest_path(indexes_dir: Path, name: str) -> Path:
    return Path(indexes_dir) / f"{name}.manifest.json"


def staged_index_path(indexes_dir: Path, name: str) -> Path:
    """Where :func:`save_index` writes a new index before the manifest that names it is written."""
    return Path(indexes_dir) / f"{name}.faiss.next"


def list_indexes(indexes_dir: Path) -> list[str]:
    d = Path(indexes_dir)
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(".manifest.json")] for p in d.glob("*.manifest.json"))


# -- training --------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("faiss-cpu", "numpy", "torch", "torchvision", "onnxruntime", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_index(index, indexes_dir: Path, name: str, manifest: Manifest | Mapping[str, Any]) -> Manifest:
    """Write ``NAME.faiss`` and ``NAME.manifest.json``, each atomically; returns the manifest written.

    The manifest is the commit: the index is first written beside the old one (``NAME.faiss.next``),
    then the manifest that names its checksum, then it is moved into place. A process stopped at any
    moment leaves the previous pair, or the new manifest with its index still staged, which
    :func:`read_verified_index` reads (the next save finishes the move).

    ``manifest`` gives the build fields (a :class:`Manifest`, whose derived fields are recomputed, or
    a mapping of JSON keys); the dimension, count, size, checksum, date and versions come from
    ``index`` itself. The whole object is validated before anything is written.
    """
    import faiss

    fields = manifest.build_fields() if isinstance(manifest, Manifest) else {
        k: v for k, v in manifest.items() if k not in (VERSION_KEY, V1_VERSION_KEY)}
    data = faiss.serialize_index(index).tobytes()
    full = Manifest.from_json({
        VERSION_KEY: SCHEMA_VERSION,
        **fields,
        "name": name,
        "dim": int(index.d),
        "normalized": True,
        "metric": METRIC,
        "count": int(index.ntotal),
        "index_file": index_path(indexes_dir, name).name,
        "index_bytes": len(data),
        "index_sha256": hashlib.sha256(data).hexdigest(),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }, source=f"The manifest of {name}")
    staged = staged_index_path(indexes_dir, name)
    try:
        write_bytes(staged, data)
        write_json(manifest_path(indexes_dir, name), full.to_json())
    except BaseException:
        if not _committed(indexes_dir, name, full.index_sha256):
            staged.unlink(missing_ok=True)  # the previous pair stands
        raise
    os.replace(staged, index_path(indexes_dir, name))
    fsync_dir(Path(indexes_dir))
    return full


def read_manifest(indexes_dir: Path, name: str) -> Manifest:
    """The parsed, validated manifest of ``name`` (an older schema is migrated; see app.core.manifest)."""
    mpath = manifest_path(indexes_dir, name)
    if not mpath.is_file():
        raise IndexMissingError(
            f"The {name} index has not been built (no {mpath}).", hint=f"Build it with: {build_command(name)}"
        )
    try:
        obj = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexMismatchError(f"The manifest {mpath} is unreadable ({exc}).", hint=rebuild_hint(name)) from exc
    manifest = Manifest.from_json(obj, source=f"The manifest {mpath}", hint=rebuild_hint(name))
    return manifest if manifest.name else manifest.with_(name=name)


def load_index(indexes_dir: Path, name: str, *, weights_id: str | None = None, dim: int | None = None,
               model: str | None = None):
    """Load and verify an index; returns (faiss index, manifest). Raises on any mismatch.

    ``model`` and ``weights_id`` are what the caller runs: an index built with another model or
    other weights is refused with the command that rebuilds it.
    """
    store = FaissStore(indexes_dir, name, weights_id=weights_id, dim=dim, model=model)
    store.load()
    return store.index, store.manifest


def check_built_with(name: str, manifest: Manifest, *, weights_id: str | None = None, dim: int | None = None,
                     model: str | None = None) -> None:
    """Refuse an index made with another model, other weights or another dimension than the caller's."""
    built_with = manifest.model_name
    if model is not None and built_with != model:
        raise IndexMismatchError(
            f"The {name} index was built with model {built_with}, but the app is running with {model}.",
            hint=f"Run with --model {built_with}, or rebuild it for {model}: "
                 f"{build_command(name, manifest, model=model)}",
        )
    if weights_id is not None and manifest.weights_id != weights_id:
        raise IndexMismatchError(
            f"The {name} index was built with weights {manifest.weights_id!r}, "
            f"but the app is running with {weights_id!r}.",
            hint=f"Run with the same --weights, or rebuild: {build_command(name, manifest)}",
        )
    if dim is not None and manifest.dim != dim:
        raise IndexMismatchError(
            f"The {name} index has dimension {manifest.dim}, expected {dim}.", hint=rebuild_hint(name, manifest)
        )


def read_verified_index(ipath: Path, manifest: Manifest, name: str):
    """The faiss index in ``ipath``, refused unless its checksum, dimension and count match ``manifest``."""
    import faiss

    data = _read_matching(ipath, manifest.index_sha256)
    if data is None:  # a save stopped after its manifest was written: its index is still staged
        data = _read_matching(ipath.with_name(ipath.name + ".next"), manifest.index_sha256)
    if data is None:
        if not ipath.is_file():
            raise IndexMissingError(f"{ipath} is missing.", hint=rebuild_hint(name, manifest))
        raise IndexMismatchError(
            f"{ipath} is corrupted or was changed (its sha256 does not match the manifest).",
            hint=rebuild_hint(name, manifest),
        )
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexMismatchError(f"{ipath} cannot be read by faiss ({exc}).", hint=rebuild_hint(name, manifest)) from exc
    if index.d != manifest.dim or index.ntotal != manifest.count:
        raise IndexMismatchError(
            f"{ipath} holds {index.ntotal} vectors of dimension {index.d}, the manifest says "
            f"{manifest.count} of dimension {manifest.dim}.",
            hint=rebuild_hint(name, manifest),
        )
    return index


def _committed(indexes_dir: Path, name: str, sha256: str) -> bool:
    """Whether the manifest on disk already names the index with this checksum."""
    try:
        return json.loads(manifest_path(indexes_dir, name).read_text()).get("index_sha256") == sha256
    except (OSError, ValueError, AttributeError):
        return False


def _read_matching(path: Path, sha256: str) -> bytes | None:
    """The bytes of ``path`` when their sha256 is ``sha256``; None when they differ or cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def finish_staged_index(indexes_dir: Path, name: str) -> bool:
    """Move a committed but still staged index into place (a save stopped after its manifest); True if moved."""
    staged = staged_index_path(indexes_dir, name)
    if not staged.is_file():
        return False
    try:
        manifest = read_manifest(indexes_dir, name)
    except (IndexMissingError, IndexMismatchError):
        return False
    if _read_matching(staged, manifest.index_sha256) is None:
        staged.unlink(missing_ok=True)  # an uncommitted leftover
        return False
    os.replace(staged, index_path(indexes_dir, name))
    fsync_dir(Path(indexes_dir))
    return True


def index_config(manifest: Manifest) -> IndexConfig:
    """The configuration (factory, nprobe, k_factor) a manifest records."""
    return IndexConfig(manifest.factory, manifest.nprobe, manifest.k_factor)


def build_command(name: str, manifest: Manifest | None = None, *, model: str | None = None) -> str:
    """The command that (re)builds ``name`` as ``manifest`` describes it, for ``model`` when given
    (default: the model the manifest names)."""
    kind = (manifest.collection if manifest else "") or (name if name in ("caltech101", "voc2012") else "folder")
    data = (manifest.dataset_root if manifest else None) or {
        "caltech101": "data/caltech101",
        "voc2012": "data/voc2012",
    }.get(kind, "DIR")
    cmd = f"python scripts/build_index.py --collection {kind} --data {data}"
    if kind == "folder" or name != kind:
        cmd += f" --name {name}"
    built_with = manifest.model_name if manifest else DEFAULT_MODEL
    model = model or built_with
    if model != DEFAULT_MODEL:
        cmd += f" --model {model}"
    weights = manifest.weights_arg if manifest and model == built_with else None
    if weights and weights != "imagenet":
        cmd += f" --weights {weights}"
    if manifest and manifest.limit:
        cmd += f" --limit {manifest.limit}"  # rebuild the same sample, not the whole set
    if manifest and manifest.include:
        cmd += f" --include {','.join(manifest.include)}"
    return cmd


def rebuild_hint(name: str, manifest: Manifest | None = None) -> str:
    return f"Rebuild it with: {build_command(name, manifest)}"


# -- the vector store ---------------------------------------------------------------------------


class FaissStore:
    """A faiss index and its manifest in ``indexes_dir`` as a :class:`~app.index.store.VectorStore`.

    :meth:`load` reads and verifies ``NAME.faiss`` against ``NAME.manifest.json`` (checksum, count,
    dimension, and the caller's model, weights id and dimension when given) and restores the search
    parameters (nprobe, k_factor) the manifest records; :meth:`save` writes both atomically.
    Ids are the collection's row ids. :meth:`add` with the next ids in order works on every index;
    other ids, and :meth:`remove`, need an index that stores ids (IVF, or an ``IDMap``): a flat
    index would renumber its rows and a refined one cannot, so they raise
    :class:`~app.errors.UnsupportedOperationError`.
    """

    def __init__(self, indexes_dir: Path, name: str, index: Any = None, *,
                 manifest: Manifest | Mapping[str, Any] | None = None, weights_id: str | None = None,
                 dim: int | None = None, model: str | None = None) -> None:
        self.indexes_dir = Path(indexes_dir)
        self.name = name
        self.index = index
        # what was loaded or last saved; before the first save of a new index, only the build fields
        self.manifest: Manifest | None = manifest if isinstance(manifest, Manifest) else None
        self._fields: Mapping[str, Any] | None = None if isinstance(manifest, Manifest) else manifest
        self.expected = {"weights_id": weights_id, "dim": dim, "model": model}

    @classmethod
    def open(cls, indexes_dir: Path, name: str, **expected: Any) -> "FaissStore":
        """:meth:`load` a built index (``expected``: weights_id, dim, model, each checked when given)."""
        store = cls(indexes_dir, name, **expected)
        store.load()
        return store

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def count(self) -> int:
        return int(self.index.ntotal)

    def configure(self, config: IndexConfig) -> None:
        """Search with ``config``'s nprobe and k_factor from now on (saved with the next :meth:`save`)."""
        set_search_params(self.index, config)
        if self.manifest is not None:
            self.manifest = self.manifest.with_(nprobe=config.nprobe, k_factor=config.k_factor)
        elif self._fields is not None:
            self._fields = {**self._fields, "nprobe": config.nprobe, "k_factor": config.k_factor}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        kk = min(k, max(1, self.index.ntotal))  # faiss refines and some IVF scans want k <= ntotal
        dist, ids = search_one_thread(self.index, q, kk) if len(q) == 1 else self.index.search(q, kk)
        out_d = np.full((len(q), k), np.inf, dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_d[:, :kk], out_i[:, :kk] = dist, ids
        out_d[out_i < 0] = np.inf
        return out_d, out_i

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        _check_rows(x, ids, self.dim)
        start = self.count()
        if np.array_equal(ids, np.arange(start, start + len(ids))):
            self.index.add(x)  # faiss numbers added rows from ntotal: every index kind can do this
            return
        if not keeps_ids(self.index):
            raise UnsupportedOperationError(
                f"The {self.name} index ({_kind(self.index)}) numbers its rows itself: it can only add "
                f"ids {start}..{start + len(ids) - 1}.")
        self.index.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray) -> int:
        if not keeps_ids(self.index):
            raise UnsupportedOperationError(
                f"The {self.name} index ({_kind(self.index)}) cannot remove vectors by id.",
                hint="Rebuild the collection without them, or build it with an IVF factory.")
        return int(self.index.remove_ids(np.asarray(ids, dtype=np.int64).reshape(-1)))

    def save(self) -> None:
        fields = self.manifest if self.manifest is not None else self._fields
        if self.index is None or fields is None:
            raise ValueError(f"FaissStore {self.name}: nothing to save (no index or no manifest fields)")
        self.manifest = save_index(self.index, self.indexes_dir, self.name, fields)

    def load(self) -> None:
        manifest = read_manifest(self.indexes_dir, self.name)
        check_built_with(self.name, manifest, **self.expected)
        index = read_verified_index(index_path(self.indexes_dir, self.name), manifest, self.name)
        set_search_params(index, index_config(manifest))
        self.index, self.manifest, self._fields = index, manifest, None


def keeps_ids(index) -> bool:
    """Whether ``index`` stores the ids it is given (IVF lists, an IDMap), so removing keeps the others'."""
    import faiss

    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexPreTransform):
        idx = faiss.downcast_index(idx.index)
    return isinstance(idx, (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2))


def _kind(index) -> str:
    import faiss

    return type(faiss.downcast_index(index)).__name__


def _check_rows(x: np.ndarray, ids: np.ndarray, dim: int) -> None:
    if x.shape[1] != dim:
        raise ValueError(f"vectors of dimension {x.shape[1]} for a store of dimension {dim}")
    if len(ids) != len(x):
        raise ValueError(f"{len(x)} vectors but {len(ids)} ids")

