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
fingerprint), written by :meth:`MilvusIndex.save`. Ids are the collection's stable row ids, so
an incremental change deletes and inserts exactly the ids the local table retires and adds.

**Index parameters** (:data:`DEFAULT_INDEX`): ``HNSW`` with ``M = 16`` (graph links per node) and
``efConstruction = 200``, ``COSINE`` metric; searches use ``ef = max(128, k)`` (:data:`MIN_EF`).
Why HNSW rather than IVF_PQ:

* collections here change all the time (incremental builds, ``add``, ``delete``): HNSW needs no
  training, so inserts and deletes never drift the way IVF centroids and PQ codebooks do;
* at ``ef`` 128 its recall@10 on these vectors is that of exact search (the test compares the top-k
  with faiss), where IVF_PQ's 8-bit codes would cost recall that the exact re-scoring cannot recover;
* it is available in Milvus Lite (HNSW, HNSW_SQ, IVF_FLAT, IVF_SQ8, FLAT), so the tests run what a
  server runs; IVF_PQ is not.

The price is memory: HNSW keeps the float vectors plus ~``2 * M`` links per vector in RAM, about
5.3 GB for 1 M EfficientNet-Lite0 vectors (1280-d) where IVF_PQ with 64-byte codes needs ~0.1 GB.
Past what one Milvus node's RAM holds, create the collection with ``--index-type IVF_PQ`` (server
only; ``nlist`` 1024, ``m`` 64) or ``HNSW_SQ``; the exact re-scoring from the local vectors keeps
the scores right either way.

**Timeouts.** Connecting and every call are bounded (``timeout``, 10 s by default); a server that
cannot be reached raises :class:`~app.errors.BackendUnavailableError` with retry advice, and the
app keeps serving its local collections.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import numpy as np

from app.core.features import load_features
from app.errors import AppError, BackendUnavailableError, IndexMismatchError, IndexMissingError

META_SUFFIX = "__meta"
INSERT_BATCH = 1000
QUERY_BATCH = 1000  # ids per "id in [...]" filter
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_INDEX = "HNSW"
HNSW_PARAMS = {"M": 16, "efConstruction": 200}
IVF_PARAMS = {"nlist": 1024, "m": 64, "nbits": 8}  # IVF_PQ on a server (m must divide the dimension)
MIN_EF = 128
RETRY_HINT = ("Check that the Milvus server is running and reachable (docker compose ps; the URI, port and "
              "token), then try again. Local collections are not affected.")


def _client(uri: str, token: str = "", timeout: float = DEFAULT_TIMEOUT_S):
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise AppError("The Milvus backend needs pymilvus.", hint="pip install pymilvus milvus-lite") from exc
    try:
        return MilvusClient(uri=uri, token=token, timeout=timeout) if token else MilvusClient(uri=uri, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - pymilvus raises many unrelated types for a bad URI
        raise BackendUnavailableError(f"Cannot connect to Milvus at {uri} within {timeout:g} s: "
                                      f"{' '.join(str(exc).split())}", hint=RETRY_HINT) from exc


def index_params(index_type: str, dim: int) -> dict[str, Any]:
    """The build parameters of a Milvus vector index (see the module docstring)."""
    if index_type.startswith("HNSW"):
        return dict(HNSW_PARAMS)
    if index_type == "IVF_PQ":
        m = next(m for m in (IVF_PARAMS["m"], 32, 16, 8, 4, 2, 1) if dim % m == 0)
        return {**IVF_PARAMS, "m": m}
    if index_type.startswith("IVF"):
        return {"nlist": IVF_PARAMS["nlist"]}
    return {}


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
    index_type: str = DEFAULT_INDEX

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

    def __init__(self, uri: str, collection: str, *, token: str = "", nprobe: int = 16, connect: bool = True,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.uri = uri
        self.timeout = timeout
        self._token = token
        self._client = _client(uri, token, timeout)
        self.collection = collection
        self.cname = _name(collection)
        self.nprobe = nprobe
        self.meta: MilvusMeta | None = None
        if connect:
            self.load()

    @classmethod
    def create(cls, uri: str, collection: str, dim: int, *, token: str = "", weights_id: str = "",
               fingerprint: str = "", index_type: str = DEFAULT_INDEX, timeout: float = DEFAULT_TIMEOUT_S,
               ) -> "MilvusIndex":
        """Drop and create the Milvus collection of ``collection`` (empty; its metadata is written by :meth:`save`)."""
        from pymilvus import DataType

        store = cls(uri, collection, token=token, connect=False, timeout=timeout)
        with store._calls("create"):
            client = store.client
            for name in (store.cname, store.cname + META_SUFFIX):
                if client.has_collection(name, timeout=timeout):
                    client.drop_collection(name, timeout=timeout)
            schema = client.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dim))
            params = client.prepare_index_params()
            params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE",
                             params=index_params(index_type, int(dim)))
            client.create_collection(store.cname, schema=schema, index_params=params, timeout=timeout)
        store.meta = MilvusMeta(collection, int(dim), 0, weights_id, fingerprint, index_type)
        return store

    @property
    def client(self):
        """The connection, made again after a failed call (a server that was restarted is used again)."""
        if self._client is None:
            self._client = _client(self.uri, self._token, self.timeout)
        return self._client

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Milvus calls: an unreachable server or a timeout becomes :class:`BackendUnavailableError`; the
        connection is dropped, so the next call connects again (recovery when the server returns)."""
        try:
            yield
        except AppError:
            raise
        except Exception as exc:  # noqa: BLE001 - pymilvus raises MilvusException, grpc and OS errors
            self._client = None
            raise BackendUnavailableError(
                f"Milvus at {self.uri} failed to {what} {self.collection!r}: {' '.join(str(exc).split())}",
                hint=RETRY_HINT) from exc

    # -- VectorStore --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._meta().dim

    def count(self) -> int:
        with self._calls("count"):
            rows = self.client.query(self.cname, filter="", output_fields=["count(*)"], consistency_level="Strong",
                                     timeout=self.timeout)
        return int(rows[0]["count(*)"])

    def ids(self) -> np.ndarray:
        """Every stored id, sorted (paged: a query returns at most 16,384 rows)."""
        out: list[int] = []
        last = -1
        with self._calls("list the ids of"):
            while True:
                rows = self.client.query(self.cname, filter=f"id > {last}", output_fields=["id"], limit=QUERY_BATCH,
                                         consistency_level="Strong", timeout=self.timeout)
                got = sorted(int(r["id"]) for r in rows)
                if not got:
                    break
                out += got
                last = got[-1]
        return np.asarray(sorted(out), dtype=np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if x.shape[1] != self.dim or len(ids) != len(x):
            raise ValueError(f"{len(x)} vectors of dimension {x.shape[1]} and {len(ids)} ids for a store of "
                             f"dimension {self.dim}")
        with self._calls("insert into"):
            for start in range(0, len(x), INSERT_BATCH):
                block, block_ids = x[start : start + INSERT_BATCH], ids[start : start + INSERT_BATCH]
                self.client.insert(self.cname, [{"id": int(i), "vector": v} for i, v in zip(block_ids, block,
                                                                                             strict=True)],
                                   timeout=self.timeout)

    def remove(self, ids: np.ndarray) -> int:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        present: list[int] = []
        with self._calls("delete from"):
            for start in range(0, len(ids), QUERY_BATCH):
                block = ids[start : start + QUERY_BATCH]
                rows = self.client.query(self.cname, filter=f"id in {block}", output_fields=["id"],
                                         consistency_level="Strong", timeout=self.timeout)
                present += [int(r["id"]) for r in rows]
            if present:
                self.client.delete(self.cname, ids=present, timeout=self.timeout)
        return len(set(present))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        with self._calls("search"):
            res = self.client.search(
                self.cname, data=[q for q in queries], limit=k, output_fields=["id"], timeout=self.timeout,
                search_params={"metric_type": "COSINE", "params": {"nprobe": self.nprobe, "ef": max(MIN_EF, k)}},
            )
        dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, hits in enumerate(res):
            for j, hit in enumerate(list(hits)[:k]):
                ids[qi, j] = int(hit["id"])
                dist[qi, j] = 2.0 - 2.0 * float(hit["distance"])  # cosine -> squared L2 on unit vectors
        return dist, ids

    def save(self, *, fingerprint: str | None = None) -> None:
        """Flush the vectors and (re)write the metadata row with the current count (and ``fingerprint``:
        of the local features the vectors now are)."""
        with self._calls("flush"):
            self.client.flush(self.cname, timeout=self.timeout)
            changes = {"count": self.count()} | ({"fingerprint": fingerprint} if fingerprint is not None else {})
            self.meta = replace(self._meta(), **changes)
            write_meta(self.client, self.cname, self.meta)

    def load(self) -> None:
        with self._calls("open"):
            exists = self.client.has_collection(self.cname, timeout=self.timeout)
        if not exists:
            raise IndexMissingError(
                f"Milvus at {self.uri} has no collection for {self.collection!r}.",
                hint=f"Push it with: python -m app.cli sync {self.collection} --uri {self.uri}",
            )
        with self._calls("load"):  # a collection written by another process starts "released"
            self.client.load_collection(self.cname, timeout=self.timeout)
            self.meta = read_meta(self.client, self.cname)

    def drop(self) -> list[str]:
        """Drop this collection's vectors and metadata from Milvus; returns the Milvus names dropped."""
        dropped = []
        with self._calls("drop"):
            for name in (self.cname, self.cname + META_SUFFIX):
                if self.client.has_collection(name, timeout=self.timeout):
                    self.client.drop_collection(name, timeout=self.timeout)
                    dropped.append(name)
        return dropped

    def rename(self, new: str) -> "MilvusIndex":
        """Rename this collection (vectors and metadata) to the one of collection ``new``; returns it."""
        target = _name(new)
        with self._calls("rename"):
            for suffix in ("", META_SUFFIX):
                self.client.rename_collection(self.cname + suffix, target + suffix, timeout=self.timeout)
        self.collection, self.cname = new, target
        self.meta = replace(self._meta(), collection=new)
        with self._calls("rename"):
            write_meta(self.client, self.cname, self.meta)
        return self

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


def push(uri: str, collection: str, vectors: np.ndarray, ids: np.ndarray, *, weights_id: str, fingerprint: str,
         token: str = "", index_type: str = DEFAULT_INDEX, timeout: float = DEFAULT_TIMEOUT_S,
         progress_bar: bool = True) -> dict[str, Any]:
    """(Re)create the Milvus collection for ``collection`` holding ``vectors[ids]`` under ``ids``;
    returns its metadata as a JSON object (collection, dim, count, weights_id, fingerprint, index_type)."""
    ids = np.asarray(ids, dtype=np.int64)
    store = MilvusIndex.create(uri, collection, int(vectors.shape[1]), token=token, weights_id=weights_id,
                               fingerprint=fingerprint, index_type=index_type, timeout=timeout)
    n = len(ids)
    for start in range(0, n, INSERT_BATCH):
        block = ids[start : start + INSERT_BATCH]
        store.add(np.asarray(vectors[block], dtype=np.float32), block)
        if progress_bar:
            print(f"\rpushed {min(n, start + INSERT_BATCH)}/{n}", end="", file=sys.stderr)
    if progress_bar:
        print(file=sys.stderr)
    store.save()
    return store._meta().to_json()


def sync(features_dir, collection: str, uri: str, *, token: str = "", index_type: str = DEFAULT_INDEX,
         files: tuple[str, str] | None = None, generation: int = 0, progress_bar: bool = True,
         timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """(Re)create the Milvus collection for ``collection`` from its stored features (``files``: the names
    its manifest records; the valid rows only); returns its metadata (see :func:`push`)."""

    vectors, table = load_features(features_dir, collection, files=files, generation=generation)
    return push(uri, collection, vectors, table.live_ids(), weights_id=table.weights_id,
                fingerprint=table.fingerprint, token=token, index_type=index_type, timeout=timeout,
                progress_bar=progress_bar)
