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
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from app.core.manifest import METRIC, SCHEMA_VERSION, V1_VERSION_KEY, VERSION_KEY, Manifest
from app.core.models import DEFAULT_MODEL
from app.errors import IndexMismatchError, IndexMissingError
from app.files.atomic import write_bytes, write_json
from app.files.layout import collection_names, index_name, manifest_name
from app.index.faiss_index import IndexConfig, search_one_thread, set_search_params
from app.index.faiss_update import add_rows, can_update, catch_up, live_count, remove_rows


def index_path(indexes_dir: Path, name: str, generation: int = 0) -> Path:
    """``NAME.faiss`` (generation 0), or ``NAME.gN.faiss`` after an incremental change."""
    return Path(indexes_dir) / index_name(name, generation)


def manifest_path(indexes_dir: Path, name: str) -> Path:
    return Path(indexes_dir) / manifest_name(name)


def list_indexes(indexes_dir: Path) -> list[str]:
    return collection_names(indexes_dir)


# -- training --------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("faiss-cpu", "numpy", "torch", "torchvision", "onnxruntime", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_index(index, indexes_dir: Path, name: str, manifest: Manifest | Mapping[str, Any], *,
               generation: int = 0) -> Manifest:
    """Write ``NAME.faiss`` (or ``NAME.gN.faiss``) then ``NAME.manifest.json``, both atomically; returns
    the manifest written.

    ``manifest`` gives the build fields (a :class:`Manifest`, whose derived fields are recomputed, or
    a mapping of JSON keys); the dimension, count, size, checksum, date and versions come from
    ``index`` itself. The whole object is validated before anything is written.
    """
    full, data = index_manifest(index, indexes_dir, name, manifest, generation=generation)
    write_bytes(index_path(indexes_dir, name, generation), data)
    write_json(manifest_path(indexes_dir, name), full.to_json())
    return full


def index_manifest(index, indexes_dir: Path, name: str, manifest: Manifest | Mapping[str, Any], *,
                   generation: int = 0) -> tuple[Manifest, bytes]:
    """(the validated manifest of ``index`` saved as generation ``generation``, the index file's bytes);
    nothing is written (:func:`save_index` writes both; an incremental change writes the manifest last)."""
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
        "count": live_count(index),
        "index_file": index_name(name, generation),
        "index_bytes": len(data),
        "index_sha256": hashlib.sha256(data).hexdigest(),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }, source=f"The manifest of {name}")
    return full, data


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

    try:
        data = ipath.read_bytes()
    except FileNotFoundError as exc:
        raise IndexMissingError(f"{ipath} is missing.", hint=rebuild_hint(name, manifest)) from exc
    if hashlib.sha256(data).hexdigest() != manifest.index_sha256:
        raise IndexMismatchError(
            f"{ipath} is corrupted or was changed (its sha256 does not match the manifest).",
            hint=rebuild_hint(name, manifest),
        )
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexMismatchError(f"{ipath} cannot be read by faiss ({exc}).", hint=rebuild_hint(name, manifest)) from exc
    expected = manifest.index_count if manifest.index_count is not None else manifest.count
    if index.d != manifest.dim or live_count(index) != expected:
        raise IndexMismatchError(
            f"{ipath} holds {live_count(index)} vectors of dimension {index.d}, the manifest says "
            f"{expected} of dimension {manifest.dim}.",
            hint=rebuild_hint(name, manifest),
        )
    return index


def index_config(manifest: Manifest) -> IndexConfig:
    """The configuration (factory, nprobe, k_factor) a manifest records."""
    return IndexConfig(manifest.factory, manifest.nprobe, manifest.k_factor)


def build_command(name: str, manifest: Manifest | None = None, *, model: str | None = None) -> str:
    """The command that (re)builds ``name`` as ``manifest`` describes it, for ``model`` when given
    (default: the model the manifest names)."""
    kind = (manifest.kind if manifest else "") or (name if name in ("caltech101", "voc2012") else "folder")
    data = (manifest.dataset_root if manifest else None) or {
        "caltech101": "data/caltech101",
        "voc2012": "data/voc2012",
    }.get(kind, "DIR")
    cmd = f"python scripts/build_index.py --kind {kind} --data {data}"
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
    Ids are the collection's stable row ids; :meth:`add` and :meth:`remove` change the index in place
    (:mod:`app.index.faiss_update`: IVF and refined IVF indexes take any new ids and removals). A flat
    index without an id map can only append the next ids, and raises
    :class:`~app.errors.UnsupportedOperationError` for anything else (it would renumber its rows).
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
        return live_count(self.index)

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
        kk = min(k, max(1, live_count(self.index)))  # faiss refines and some IVF scans want k <= ntotal
        dist, ids = search_one_thread(self.index, q, kk) if len(q) == 1 else self.index.search(q, kk)
        out_d = np.full((len(q), k), np.inf, dtype=np.float32)
        out_i = np.full((len(q), k), -1, dtype=np.int64)
        out_d[:, :kk], out_i[:, :kk] = dist, ids
        out_d[out_i < 0] = np.inf
        return out_d, out_i

    def catch_up(self, vectors: np.ndarray, live_mask: np.ndarray) -> int:
        """The rows the table gained or lost since the index file was written, applied (the manifest's
        ``index_rows``: :func:`app.index.faiss_update.catch_up`); returns the rows added."""
        assert self.manifest is not None
        rows_in = self.manifest.index_rows if self.manifest.index_rows is not None else len(live_mask)
        return catch_up(self.index, vectors, live_mask, rows_in, name=self.name)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        _check_rows(x, ids, self.dim)
        add_rows(self.index, x, ids, name=self.name)

    def remove(self, ids: np.ndarray) -> int:
        return remove_rows(self.index, ids, name=self.name)

    def save(self) -> None:
        fields = self.manifest if self.manifest is not None else self._fields
        if self.index is None or fields is None:
            raise ValueError(f"FaissStore {self.name}: nothing to save (no index or no manifest fields)")
        self.manifest = save_index(self.index, self.indexes_dir, self.name, fields)

    def load(self) -> None:
        manifest = read_manifest(self.indexes_dir, self.name)
        check_built_with(self.name, manifest, **self.expected)
        ipath = self.indexes_dir / manifest.index_file if manifest.index_file else index_path(self.indexes_dir,
                                                                                               self.name)
        index = read_verified_index(ipath, manifest, self.name)
        set_search_params(index, index_config(manifest))
        self.index, self.manifest, self._fields = index, manifest, None


def keeps_ids(index) -> bool:
    """Whether ``index`` can take any new ids and removals in place (see :mod:`app.index.faiss_update`)."""
    return can_update(index)


def _check_rows(x: np.ndarray, ids: np.ndarray, dim: int) -> None:
    if x.shape[1] != dim:
        raise ValueError(f"vectors of dimension {x.shape[1]} for a store of dimension {dim}")
    if len(ids) != len(x):
        raise ValueError(f"{len(x)} vectors but {len(ids)} ids")

