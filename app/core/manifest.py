"""The index manifest, typed: what an index was built from and how, parsed and validated once.

A collection ``NAME`` is served from ``NAME.faiss`` plus ``NAME.manifest.json``; the JSON object in
the latter becomes a :class:`Manifest` through :meth:`Manifest.from_json` and nowhere else, so every
reader gets attributes whose types were checked. A missing or wrong field raises
:class:`~app.errors.ManifestError` (an :class:`~app.errors.IndexMismatchError`) naming the field.

Schema versions:

* **1** (``"manifest_version": 1``): written until the manifest became typed.
* **2** (``"schema_version": 2``): the same keys, and ``model`` and ``k_factor`` always present.
  Optional since incremental builds (absent: 0, the count, 0): ``generation`` (which generation of
  the collection's files is current), ``trained_count`` and ``updates_since_training`` (the drift
  rule's inputs, :mod:`app.index.faiss_update`).
* **3** (``"schema_version": 3``): the dataset kind's key is ``kind`` (schema 2 called it
  ``collection``, a word that means the collection's name everywhere else).

An older object is brought to the current version by the migrations in :data:`MIGRATIONS`, one
version at a time (:func:`migrate_v1_to_v2`, :func:`migrate_v2_to_v3`); the other JSON keys (``model``, ``weights_id``, ``dim``, ``count``, ``factory``, ``nprobe``,
``k_factor``, ``tuning``, ``index_bytes``...) are unchanged, since the CLI prints them and the docs
name them. Keys the schema does not know are kept, unvalidated, in :attr:`Manifest.extra`.

A :class:`Manifest` is also a read-only mapping over :meth:`Manifest.to_json` (``m["count"]``,
``m.get("tuning")``, ``m == json.loads(text)``) for callers written against the plain dict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Callable, Iterator

from app.core.models import DEFAULT_MODEL, MODELS, model_of_weights_id
from app.errors import ManifestError

SCHEMA_VERSION = 3
V1_VERSION_KEY = "manifest_version"  # schema 1 named its version so
VERSION_KEY = "schema_version"
METRIC = "l2"  # on L2-normalised vectors: the same ranking as cosine similarity
REQUIRED = ("weights_id", "dim", "count", "index_sha256", "factory", "nprobe")
# Added to schema 2 later: written only when set (older manifests have no such keys, and keep none).
OPTIONAL_KEYS = ("features_sha256", "table_sha256", "features_chunks", "index_rows", "index_count")
# Written by save_index from the index file itself; never carried over from an older manifest.
DERIVED = ("name", "dim", "normalized", "metric", "count", "index_file", "index_bytes", "index_sha256", "built_at",
           "versions")


@dataclass(frozen=True, eq=False, kw_only=True)
class Manifest(Mapping):
    """One index's manifest (schema 2). Attribute names are the JSON keys."""

    schema_version: int = SCHEMA_VERSION
    name: str = ""
    # what made the vectors
    kind: str = ""  # the dataset kind: "caltech101", "voc2012", "folder" (schema 2 called it "collection")
    model: str = ""  # a registry name (app.core.models); see model_name for older manifests
    model_description: str = ""
    weights_id: str
    weights_arg: str | None = None  # the --weights value that rebuilds it
    engine: str = ""  # the engine that embedded the collection ("onnx", "onnx-int8", "torch-cpu"...)
    # the index configuration
    factory: str = ""
    nprobe: int = 1
    k_factor: int = 1
    # where the data came from
    dataset_root: str | None = None
    image_root: str | None = None
    features: str = ""  # NAME.npy
    table: str = ""  # NAME.json
    features_fingerprint: str | None = None  # which build of the features (checked when loading)
    features_created: str | None = None
    features_sha256: str | None = None  # of NAME.npy and NAME.json as built (checked when loading)
    table_sha256: str | None = None  # of a JSON table (an SQLite table changes in place: app.core.table_db)
    # the vectors file's checksum per chunk of rows (app.files.vector_file): an append recomputes the last one
    features_chunks: list[str] | None = None
    limit: int | None = None
    include: tuple[str, ...] = ()
    skipped: int = 0
    tuning: dict[str, Any] = field(default_factory=dict)  # TuneReport.to_json(), or {"fixed": True}
    # incremental changes (optional in schema 2: a manifest without them is generation 0, trained on count)
    generation: int = 0  # which NAME[.gN].{npy,json,faiss} files are current (0: no suffix)
    trained_count: int | None = None  # live vectors when the index was last trained (None: count)
    updates_since_training: int = 0  # vectors added + removed in place since then (app.index.faiss_update)
    # the index file holds the table's first index_rows rows (index_count valid ones) as they were when it
    # was written; the rows added or deleted since are applied when it is loaded (app.service.index_catchup)
    index_rows: int | None = None
    index_count: int | None = None
    # derived from the index file by save_index
    dim: int
    normalized: bool = True
    metric: str = METRIC
    count: int
    index_file: str = ""
    index_bytes: int = 0
    index_sha256: str = ""
    built_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    # keys this schema does not know, kept as they were
    extra: dict[str, Any] = field(default_factory=dict)

    # -- parsing ---------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, obj: Any, *, source: str = "The manifest", hint: str | None = None) -> "Manifest":
        """Validate a manifest JSON object of any supported schema version (older ones are migrated).

        ``source`` starts every error message (``"The manifest /path/x.manifest.json"``).
        """
        if not isinstance(obj, dict):
            raise ManifestError(f"{source} is not a JSON object.", hint=hint)
        obj = _to_current(obj, source, hint)
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            raise ManifestError(f"{source} lacks {', '.join(missing)}.", fields=tuple(missing), hint=hint)
        wrong = [k for k, ok in _CHECKS.items() if k in obj and not ok(obj[k])]
        if wrong:
            raise ManifestError(f"{source} has invalid {', '.join(wrong)}.", fields=tuple(wrong), hint=hint)
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: copy.deepcopy(v) for k, v in obj.items() if k in known}
        if "include" in values:
            values["include"] = tuple(values["include"])
        extra = {k: copy.deepcopy(v) for k, v in obj.items() if k not in known}
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``NAME.manifest.json`` (a fresh copy)."""
        return copy.deepcopy(self._json)

    @cached_property
    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "extra":
                value = getattr(self, f.name)
                if value is None and f.name in OPTIONAL_KEYS:
                    continue
                out[f.name] = list(value) if isinstance(value, tuple) else value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    # -- reading ---------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The registry name of the model the index was built with (an unknown name: from the weights id)."""
        if self.model in MODELS:
            return self.model
        return model_of_weights_id(self.weights_id) or DEFAULT_MODEL

    def build_fields(self) -> dict[str, Any]:
        """What a rebuild of the index from the same features keeps: everything but :data:`DERIVED`."""
        return {k: v for k, v in self.to_json().items() if k not in DERIVED and k != VERSION_KEY}

    def with_(self, **changes: Any) -> "Manifest":
        return replace(self, **changes)

    # -- the read-only mapping view (callers written against the plain dict) ----------------------
    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


# -- migration -----------------------------------------------------------------------------------


def migrate_v1_to_v2(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-1 manifest object as schema 2: the version key renamed, ``model`` and ``k_factor`` filled in.

    Schema 1 left ``model`` out before the model registry existed (the weights id names the model,
    else it was ResNet-50) and ``k_factor`` out for indexes without a refinement stage (1).
    """
    out = {k: v for k, v in obj.items() if k != V1_VERSION_KEY}
    if "model" not in out:
        weights_id = out.get("weights_id")
        out["model"] = (model_of_weights_id(weights_id) if isinstance(weights_id, str) else None) or DEFAULT_MODEL
    out.setdefault("k_factor", 1)
    return {VERSION_KEY: 2, **out}


def migrate_v2_to_v3(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-2 manifest object as schema 3: the dataset kind's key ``collection`` renamed ``kind``
    (``collection`` means a collection's name everywhere else)."""
    out = {k: v for k, v in obj.items() if k not in (VERSION_KEY, "collection")}
    if "collection" in obj:
        out["kind"] = obj["collection"]
    return {VERSION_KEY: 3, **out}


MIGRATIONS: dict[int, Callable[[Mapping[str, Any]], dict[str, Any]]] = {1: migrate_v1_to_v2, 2: migrate_v2_to_v3}


def schema_version_of(obj: Mapping[str, Any]) -> Any:
    """The schema version an object says it has (schema 1 named it ``manifest_version``; no key: 1)."""
    if VERSION_KEY in obj:
        return obj[VERSION_KEY]
    return obj.get(V1_VERSION_KEY, 1)


def _to_current(obj: Mapping[str, Any], source: str, hint: str | None) -> dict[str, Any]:
    version = schema_version_of(obj)
    key = VERSION_KEY if VERSION_KEY in obj else V1_VERSION_KEY
    if not _is_count(version) or not (1 <= version <= SCHEMA_VERSION):
        raise ManifestError(f"{source} has invalid {key} {version!r} (this app reads 1 to {SCHEMA_VERSION}).",
                            fields=(key,), hint=hint)
    out = dict(obj)
    while version < SCHEMA_VERSION:
        out = MIGRATIONS[version](out)
        version = out[VERSION_KEY]
    return out


# -- field checks --------------------------------------------------------------------------------


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    VERSION_KEY: _is_count,
    "name": _is_str,
    "kind": _is_str,
    "model": _is_str,
    "model_description": _is_str,
    "weights_id": _is_str,
    "weights_arg": _optional(_is_str),
    "engine": _is_str,
    "factory": _is_str,
    "nprobe": _is_count,
    "k_factor": _is_count,
    "dataset_root": _optional(_is_str),
    "image_root": _optional(_is_str),
    "features": _is_str,
    "table": _is_str,
    "features_fingerprint": _optional(_is_str),
    "features_created": _optional(_is_str),
    "features_sha256": _optional(_is_str),
    "table_sha256": _optional(_is_str),
    "features_chunks": _optional(_is_str_list),
    "index_rows": _optional(_is_count),
    "index_count": _optional(_is_count),
    "limit": _optional(_is_count),
    "include": _is_str_list,
    "skipped": _is_count,
    "tuning": lambda v: isinstance(v, dict),
    "generation": _is_count,
    "trained_count": _optional(_is_count),
    "updates_since_training": _is_count,
    "dim": _is_count,
    "normalized": lambda v: isinstance(v, bool),
    "metric": _is_str,
    "count": _is_count,
    "index_file": _is_str,
    "index_bytes": _is_count,
    "index_sha256": _is_str,
    "built_at": _is_str,
    "versions": lambda v: isinstance(v, dict),
}
