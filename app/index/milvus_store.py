"""Milvus backend: the scale-out path for collections that outgrow one machine.

The vectors of a built collection (``features/NAME.npy``) are pushed to a Milvus collection with
``python -m app.cli sync NAME --uri URI``; the app then searches Milvus instead of the
local faiss index with ``python -m app --backend milvus --milvus-uri URI``. The id table and the
stored vectors stay local (they give labels, paths and exact scores), so the same checks apply.

``URI`` is a Milvus server or cluster (``http://host:19530``, with ``--milvus-token``) or a local
file such as ``milvus.db``, which runs Milvus Lite embedded (``pip install milvus-lite``).

:class:`MilvusIndex` is a :class:`~app.index.store.VectorStore`, like the faiss store, so the
search service needs no special case. Next to the vectors, a small ``<collection>__meta``
collection holds one row of :class:`MilvusMeta` (dimension, count, weights id, features
fingerprint), written by :meth:`MilvusIndex.save`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from app.errors import AppError, IndexMismatchError, IndexMissingError

META_SUFFIX = "__meta"
INSERT_BATCH = 1000
QUERY_BATCH = 1000  # ids per "id in [...]" filter


def _client(uri: str, token: str = ""):
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise AppError("The Milvus backend needs pymilvus.", hint="pip install pymilvus milvus-lite") from exc
    try:
        return MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
    except Exception as exc:  # noqa: BLE001 - pymilvus raises many unrelated types for a bad URI
        raise AppError(f"Cannot connect to Milvus at {uri}: {exc}") from exc


def _name(collection: str) -> str:
    # Milvus names: letters, digits and underscores.
    return "ris_" + "".join(c if c.isalnum() else "_" for c in collection)


@dataclass(frozen=True)
class MilvusMeta:
    """What a Milvus collection holds: the row of its ``__meta`` collection."""

    collection: str
    dim: int
    count: int
    weights_id: str
    fingerprint: str = ""  # of the local features the vectors came from
    index_type: str = "AUTOINDEX"

    @classmethod
    def from_json(cls, obj: Any, cname: str) -> "MilvusMeta":
        if not isinstance(obj, dict):
            raise IndexMismatchError(f"The Milvus collection {cname} has unreadable metadata; push it again with sync.")
        checks = {"dim": _is_count, "count": _is_count, "weights_id": _is_str, "collection": _is_str,
                  "fingerprint": _is_str, "index_type": _is_str}
        missing = [k for k in ("dim", "count", "weights_id") if k not in obj]
        wrong = [k for k, ok in checks.items() if k in obj and not ok(obj[k])]
        if missing or wrong:
            what = "; ".join(x for x in (f"lacks {', '.join(missing)}" if missing else "",
                                         f"has invalid {', '.join(wrong)}" if wrong else "") if x)
            raise IndexMismatchError(f"The metadata of the Milvus collection {cname} {what}; push it again with sync.")
        return cls(**{k: obj[k] for k in checks if k in obj and k != "collection"},
                   collection=obj.get("collection", ""))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


class MilvusIndex:
    """One Milvus collection as a :class:`~app.index.store.VectorStore` (COSINE metric in Milvus,
    squared-L2 distances out, as faiss gives on unit vectors). The constructor connects
    (:meth:`load`); :meth:`create` makes a new, empty collection."""

    def __init__(self, uri: str, collection: str, *, token: str = "", nprobe: int = 16, connect: bool = True) -> None:
        self.uri = uri
        self.client = _client(uri, token)
        self.collection = collection
        self.cname = _name(collection)
        self.nprobe = nprobe
        self.meta: MilvusMeta | None = None
        if connect:
            self.load()

    @classmethod
    def create(cls, uri: str, collection: str, dim: int, *, token: str = "", weights_id: str = "",
               fingerprint: str = "", index_type: str = "AUTOINDEX", nlist: int = 128) -> "MilvusIndex":
        """Drop and create the Milvus collection of ``collection`` (empty; its metadata is written by :meth:`save`)."""
        from pymilvus import DataType

        store = cls(uri, collection, token=token, connect=False)
        client = store.client
        for name in (store.cname, store.cname + META_SUFFIX):
            if client.has_collection(name):
                client.drop_collection(name)
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
        params = client.prepare_index_params()
        extra = {"nlist": nlist} if index_type.startswith("IVF") else {}
        params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=extra)
        client.create_collection(store.cname, schema=schema, index_params=params)
        store.meta = MilvusMeta(collection, int(dim), 0, weights_id, fingerprint, index_type)
        return store

    # -- VectorStore --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._meta().dim

    def count(self) -> int:
        rows = self.client.query(self.cname, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if x.shape[1] != self.dim or len(ids) != len(x):
            raise ValueError(f"{len(x)} vectors of dimension {x.shape[1]} and {len(ids)} ids for a store of "
                             f"dimension {self.dim}")
        for start in range(0, len(x), INSERT_BATCH):
            block, block_ids = x[start : start + INSERT_BATCH], ids[start : start + INSERT_BATCH]
            self.client.insert(self.cname, [{"id": int(i), "vector": v} for i, v in zip(block_ids, block, strict=True)])

    def remove(self, ids: np.ndarray) -> int:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        present: list[int] = []
        for start in range(0, len(ids), QUERY_BATCH):
            block = ids[start : start + QUERY_BATCH]
            rows = self.client.query(self.cname, filter=f"id in {block}", output_fields=["id"],
                                     consistency_level="Strong")
            present += [int(r["id"]) for r in rows]
        if present:
            self.client.delete(self.cname, ids=present)
        return len(set(present))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        res = self.client.search(
            self.cname, data=[q for q in queries], limit=k, output_fields=["id"],
            search_params={"metric_type": "COSINE", "params": {"nprobe": self.nprobe}},
        )
        dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, hits in enumerate(res):
            for j, hit in enumerate(list(hits)[:k]):
                ids[qi, j] = int(hit["id"])
                dist[qi, j] = 2.0 - 2.0 * float(hit["distance"])  # cosine -> squared L2 on unit vectors
        return dist, ids

    def save(self) -> None:
        """Flush the vectors and (re)write the metadata row with the current count."""
        self.client.flush(self.cname)
        self.meta = replace(self._meta(), count=self.count())
        write_meta(self.client, self.cname, self.meta)

    def load(self) -> None:
        if not self.client.has_collection(self.cname):
            raise IndexMissingError(
                f"Milvus at {self.uri} has no collection for {self.collection!r}.",
                hint=f"Push it with: python -m app.cli sync {self.collection} --uri {self.uri}",
            )
        try:  # a collection written by another process starts "released": load it before searching
            self.client.load_collection(self.cname)
            self.meta = read_meta(self.client, self.cname)
        except AppError:
            raise
        except Exception as exc:  # noqa: BLE001 - pymilvus raises its own untyped MilvusException
            raise AppError(f"Milvus at {self.uri} could not load {self.collection!r}: {exc}",
                           hint="Check that the server is running and reachable, then try again.") from exc

    def _meta(self) -> MilvusMeta:
        if self.meta is None:
            raise IndexMissingError(f"The Milvus collection {self.cname} is not loaded.")
        return self.meta


def read_meta(client, cname: str) -> MilvusMeta:
    meta_name = cname + META_SUFFIX
    if not client.has_collection(meta_name):
        raise IndexMismatchError(f"The Milvus collection {cname} has no metadata; push it again with sync.")
    client.load_collection(meta_name)
    rows = client.query(meta_name, filter="id == 0", output_fields=["meta"])
    if not rows:
        raise IndexMismatchError(f"The Milvus collection {cname} has empty metadata; push it again with sync.")
    try:
        obj = json.loads(rows[0]["meta"])
    except json.JSONDecodeError as exc:
        raise IndexMismatchError(f"The Milvus collection {cname} has unreadable metadata; push it again with sync.") \
            from exc
    return MilvusMeta.from_json(obj, cname)


def write_meta(client, cname: str, meta: MilvusMeta) -> None:
    """Write the one metadata row, creating the ``__meta`` collection the first time."""
    from pymilvus import DataType

    meta_name = cname + META_SUFFIX
    if not client.has_collection(meta_name):
        mschema = client.create_schema(auto_id=False)
        mschema.add_field("id", DataType.INT64, is_primary=True)
        mschema.add_field("meta", DataType.VARCHAR, max_length=4096)
        mschema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        mparams = client.prepare_index_params()
        mparams.add_index(field_name="v", index_type="FLAT", metric_type="L2")
        client.create_collection(meta_name, schema=mschema, index_params=mparams)
    client.upsert(meta_name, [{"id": 0, "meta": json.dumps(meta.to_json()), "v": [0.0, 0.0]}])
    client.flush(meta_name)


def sync(features_dir, collection: str, uri: str, *, token: str = "", index_type: str = "AUTOINDEX",
         nlist: int = 128, progress: bool = True) -> dict[str, Any]:
    """(Re)create the Milvus collection for ``collection`` from its stored features; returns its
    metadata as a JSON object (collection, dim, count, weights_id, fingerprint, index_type)."""
    from app.core.features import load_features

    vectors, table = load_features(features_dir, collection)
    store = MilvusIndex.create(uri, collection, int(vectors.shape[1]), token=token, weights_id=table.weights_id,
                               fingerprint=table.fingerprint, index_type=index_type, nlist=nlist)
    n = len(vectors)
    for start in range(0, n, INSERT_BATCH):
        block = np.asarray(vectors[start : start + INSERT_BATCH], dtype=np.float32)
        store.add(block, np.arange(start, start + len(block)))
        if progress:
            print(f"\rpushed {min(n, start + INSERT_BATCH)}/{n}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    store.save()
    return store._meta().to_json()
