"""The feature table: a built collection's id -> (path, labels, file stamp) table, versioned, and the
feature store's files (:func:`feature_paths`, :func:`load_features`: the vectors and the table, checked).

It is an SQLite file beside the vectors (``features/NAME.sqlite``, changed in place row by row by
:mod:`app.core.table_db`; the index manifest names it and the generation to read). Collections built
before it have a JSON document (``NAME.json`` or ``NAME.gN.json``), read here and written as SQLite by
their next change. Row ``i`` of the table is item id ``i`` and row ``i`` of the vectors.

**Ids are stable.** An id names one version of one file, for ever: a file added later gets the
next id, a deleted or changed file's row stays as a *tombstone* (``deleted``), and a changed file's
new content gets a new id. So an id held by a user, an index or Milvus never points at another image.
Only a full rebuild renumbers.

Per row the table keeps the file's :class:`~app.core.scan.FileStamp` (size, ``mtime_ns``,
BLAKE2b content hash), which an incremental build compares with the folder: size or mtime changed
and the hash confirms it, or the file is unchanged. ``excluded`` lists the paths deleted on purpose
(``python -m app.cli delete``), which a rescan of the folder does not add back.

Format versions (the ``format`` key):

* **1**: id, path, label(s); no stamps, no tombstones.
* **2**: per item ``size``, ``mtime_ns``, ``hash`` and ``deleted``; ``rows``; ``excluded``.
* **3**: per item ``meta`` (capture time and camera, :mod:`app.core.photo_meta`), recorded when a
  change is committed; absent while unknown.

:func:`migrate_table_v1_to_v2` brings a format-1 object to format 2 with unknown stamps (``None``):
an incremental build adopts the files it finds under those paths as unchanged (the build that made
the table read them) and records their stamps, so no migrated item is embedded again.
:func:`migrate_table_v2_to_v3` leaves every ``meta`` unknown: the next change records it (reading
only the files' headers).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.core.manifest import Manifest
from app.core.scan import FileStamp
from app.core.table_db import REBUILD, TableReader, TableSnapshot, labels_of, meta_of, stamp_of
from app.errors import IndexMismatchError
from app.files import vector_file
from app.files.digest import file_sha256
from app.files.layout import table_name, vectors_name

TABLE_FORMAT = 3


@dataclass
class FeatureTable:
    """The id -> (path, labels, stamp) table of a built collection, plus how it was made."""

    name: str
    kind: str
    dataset_root: str
    image_root: str
    weights_id: str
    paths: list[str]
    labels: list[tuple[str, ...]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    fingerprint: str = ""
    created: str = ""
    dim: int = 2048  # tables written before the model registry are all ResNet-50's
    stamps: list[FileStamp | None] = field(default_factory=list)  # per row; None: unknown (format 1)
    deleted: set[int] = field(default_factory=set)  # tombstoned rows: ids are never reused
    excluded: list[str] = field(default_factory=list)  # paths deleted on purpose: a rescan leaves them out
    meta: list[dict[str, Any] | None] = field(default_factory=list)  # per row (app.core.photo_meta); None: unknown
    # read from SQLite (app.core.table_db): what was read, which a change is written against
    origin: Any = field(default=None, repr=False, compare=False)
    reader: Any = field(default=None, repr=False, compare=False)  # a lazy table's open reader

    def __post_init__(self) -> None:
        if not self.stamps:
            self.stamps = [None] * len(self.paths)
        if len(self.meta) < len(self.paths):  # rows appended by a change: unknown until it is committed
            self.meta = list(self.meta) + [None] * (len(self.paths) - len(self.meta))
        if not (len(self.paths) == len(self.labels) == len(self.stamps) == len(self.meta)):
            raise ValueError("a feature table needs one label, one stamp and one meta per path")

    def __len__(self) -> int:
        """Rows, deleted ones included (the vectors have as many)."""
        return len(self.paths)

    @property
    def live_count(self) -> int:
        """The number of valid (not deleted) items."""
        return len(self.paths) - len(self.deleted)

    def live_ids(self) -> np.ndarray:
        mask = self.live_mask()
        return np.flatnonzero(mask).astype(np.int64)

    def live_mask(self) -> np.ndarray:
        mask = np.ones(len(self.paths), dtype=bool)
        if self.deleted:
            mask[sorted(self.deleted)] = False
        return mask

    def is_live(self, i: int) -> bool:
        return 0 <= int(i) < len(self.paths) and int(i) not in self.deleted

    def label(self, i: int) -> str:
        return ", ".join(self.labels[i])

    def live_paths(self) -> dict[str, int]:
        """path -> id of every valid item."""
        return {p: i for i, p in enumerate(self.paths) if i not in self.deleted}

    def content_fingerprint(self) -> str:
        """A hash of the valid items (id, path, labels, content hash): what the vectors stand for."""
        h = hashlib.sha256()
        for i, (p, lab, st) in enumerate(zip(self.paths, self.labels, self.stamps, strict=True)):
            if i not in self.deleted:
                h.update(f"{i}\0{p}\0{'|'.join(lab)}\0{st.hash if st else ''}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "name": self.name,
            "kind": self.kind,
            "dataset_root": self.dataset_root,
            "image_root": self.image_root,
            "weights_id": self.weights_id,
            "dim": self.dim,
            "count": self.live_count,
            "rows": len(self.paths),
            "fingerprint": self.fingerprint,
            "created": self.created,
            "items": [_item_json(i, p, lab, st, i in self.deleted, m) for i, (p, lab, st, m)
                      in enumerate(zip(self.paths, self.labels, self.stamps, self.meta, strict=True))],
            "skipped": self.skipped,
            "excluded": self.excluded,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "FeatureTable":
        """Parse a table of any supported format (older ones are migrated first)."""
        obj = to_current_format(obj)
        items = obj["items"]
        if [it["id"] for it in items] != list(range(len(items))):
            raise ValueError("the items' ids are not their rows 0..n-1")
        return cls(
            name=obj["name"],
            kind=obj["kind"],
            dataset_root=obj["dataset_root"],
            image_root=obj["image_root"],
            weights_id=obj["weights_id"],
            paths=[it["path"] for it in items],
            labels=[tuple(it.get("labels", [])) for it in items],
            skipped=list(obj.get("skipped", [])),
            fingerprint=obj.get("fingerprint", ""),
            created=obj.get("created", ""),
            dim=int(obj.get("dim", 2048)),
            stamps=[_stamp(it) for it in items],
            deleted={int(it["id"]) for it in items if it.get("deleted")},
            excluded=list(obj.get("excluded", [])),
            meta=[it.get("meta") if isinstance(it.get("meta"), dict) else None for it in items],
        )


def _item_json(i: int, path: str, labels: tuple[str, ...], stamp: FileStamp | None, deleted: bool,
               meta: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": i, "path": path, "label": ", ".join(labels), "labels": list(labels),
                           "size": stamp.size if stamp else None, "mtime_ns": stamp.mtime_ns if stamp else None,
                           "hash": stamp.hash if stamp else None}
    if meta is not None:
        out["meta"] = meta
    if deleted:
        out["deleted"] = True
    return out


def _stamp(item: dict[str, Any]) -> FileStamp | None:
    if item.get("size") is None or item.get("mtime_ns") is None:
        return None
    return FileStamp(int(item["size"]), int(item["mtime_ns"]), item.get("hash") or "")


# -- format versions -------------------------------------------------------------------------------


def migrate_table_v1_to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    """A format-1 table object as format 2: unknown stamps, no tombstones, nothing excluded."""
    items = [{**it, "size": None, "mtime_ns": None, "hash": None} for it in obj["items"]]
    return {**obj, "format": 2, "items": items, "rows": len(items), "excluded": []}


def migrate_table_v2_to_v3(obj: dict[str, Any]) -> dict[str, Any]:
    """A format-2 table object as format 3: every item's ``meta`` unknown (recorded by the next change)."""
    return {**obj, "format": 3}


TABLE_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: migrate_table_v1_to_v2,
                                                                           2: migrate_table_v2_to_v3}


def to_current_format(obj: dict[str, Any]) -> dict[str, Any]:
    version = obj.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= TABLE_FORMAT:
        raise IndexMismatchError(
            f"The feature table of {obj.get('name', '?')!r} has format {version!r}; this app reads 1 to "
            f"{TABLE_FORMAT}.", hint="Rebuild it with scripts/build_index.py, or update the app.")
    while version < TABLE_FORMAT:
        obj = TABLE_MIGRATIONS[version](obj)
        version = obj["format"]
    return obj


def read_table(path: str | os.PathLike[str], generation: int, *, lazy: bool, check: bool = True,
               hint: str = REBUILD) -> "FeatureTable":
    """The table at ``path`` as of ``generation``. ``lazy``: columns read on demand (serving), each row
    checked against its CRC when read; else every row now (checked when ``check``), with the snapshot a
    change is written against (:func:`~app.core.table_db.write_change`)."""
    reader = TableReader(path, generation, hint=hint)
    h = reader.head
    if lazy:
        columns: list[Any] = [reader.column(1, lambda r: r[0]), reader.column(2, labels_of), reader.column(3, stamp_of),
                              reader.column(6, meta_of)]
    else:
        rows = reader.rows_checked(check=check)
        columns = [[r[1] for r in rows], [labels_of(r[2:]) for r in rows], [stamp_of(r[3:]) for r in rows],
                   [meta_of(r[6:]) for r in rows]]
    table = FeatureTable(name=h["name"], kind=h["kind"], dataset_root=h["dataset_root"], image_root=h["image_root"],
                         weights_id=h["weights_id"], paths=columns[0], labels=columns[1], skipped=list(h["skipped"]),
                         fingerprint=h["fingerprint"], created=h["created"], dim=int(h["dim"]), stamps=columns[2],
                         deleted=reader.deleted(), excluded=reader.excluded(), meta=columns[3])
    if lazy:
        table.reader = reader
    else:
        reader.close()
        table.origin = TableSnapshot(table, generation)
    return table


# -- the files -------------------------------------------------------------------------------------


def feature_paths(features_dir: Path, name: str, generation: int = 0) -> tuple[Path, Path]:
    """The vectors and table files of ``name`` (generation 0: ``NAME.npy``; N: ``NAME.gN.npy``)."""
    return Path(features_dir) / vectors_name(name, generation), Path(features_dir) / table_name(name, generation)


def load_features(features_dir: Path, name: str, *, mmap: bool = True, files: tuple[str, str] | None = None,
                  sha256: tuple[str | None, str | None] = (None, None), generation: int = 0,
                  chunks: list[str] | None = None, lazy: bool = False, full_check: bool = False,
                  hint: str = "Rebuild with scripts/build_index.py.") -> tuple[np.ndarray, FeatureTable]:
    """Load the vectors (memory-mapped by default) and the table; check they agree.

    ``files``: the (vectors, table) file names in ``features_dir`` that the index manifest records
    (default ``NAME.npy``, ``NAME.sqlite``). An SQLite table (:mod:`app.core.table_db`) is read as of the
    manifest's ``generation``, all at once or, ``lazy``, column by column on demand; the vectors are its
    rows, checked cheaply against their chunk checksums ``chunks`` (the last chunk and a sample; every one
    with ``full_check``, :mod:`app.files.vector_file`). A JSON table (format 1 to 3, written before the
    SQLite table) is checked byte for byte against ``sha256`` (its manifest's checksums) when given.
    ``hint``: the advice given with a refusal (the rebuild command)."""
    if files and files[0] and files[1]:
        npy, table_path = Path(features_dir) / files[0], Path(features_dir) / files[1]
    else:
        npy, table_path = feature_paths(Path(features_dir), name)
    if not npy.is_file() or not table_path.is_file():
        raise IndexMismatchError(
            f"The features of {name!r} are missing ({npy.name} / {table_path.name} in {features_dir}).", hint=hint)
    try:
        if table_path.suffix == ".sqlite":
            table = read_table(table_path, generation, lazy=lazy, check=full_check, hint=hint)
            vector_file.check_vectors(npy, len(table), table.dim, chunks, full=full_check)
        else:
            table = _read_json_table(name, npy, table_path, sha256, hint)
        vectors = vector_file.open_rows(npy, len(table), table.dim)
    except vector_file.VectorsFileError as exc:
        raise IndexMismatchError(f"The features of {name!r} are corrupted: {exc}.", hint=hint) from exc
    except (OSError, ValueError) as exc:
        raise IndexMismatchError(f"The features of {name!r} are unreadable ({exc}).", hint=hint) from exc
    return (vectors if mmap else np.array(vectors)), table


def features_for(features_dir: Path, manifest: Manifest, *, mmap: bool = True, lazy: bool = False,
                 full_check: bool = False, hint: str = "Rebuild with scripts/build_index.py.") -> tuple[np.ndarray, FeatureTable]:
    """:func:`load_features` of the files, generation and checksums ``manifest`` records."""
    return load_features(features_dir, manifest.name, mmap=mmap, files=(manifest.features, manifest.table),
                         sha256=(manifest.features_sha256, manifest.table_sha256), generation=manifest.generation,
                         chunks=manifest.features_chunks, lazy=lazy, full_check=full_check, hint=hint)


def _read_json_table(name: str, npy: Path, table_path: Path, sha256: tuple[str | None, str | None],
                     hint: str) -> FeatureTable:
    for path, expected in zip((npy, table_path), sha256, strict=True):
        if expected and file_sha256(path) != expected:
            raise IndexMismatchError(f"The features of {name!r} are corrupted: {path.name} does not match the "
                                     "checksum its manifest records.", hint=hint)
    try:
        return FeatureTable.from_json(json.loads(table_path.read_text()))
    except (KeyError, json.JSONDecodeError) as exc:
        raise IndexMismatchError(f"The features of {name!r} are unreadable ({exc}).", hint=hint) from exc
