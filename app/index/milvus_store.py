"""Milvus backend: the scale-out path for collections that outgrow one machine.

The vectors of a built collection (``features/NAME.npy``) are pushed to a Milvus collection with
``python -m app.cli sync NAME --uri URI``; the app then searches Milvus instead of the
local faiss index with ``python -m app --backend milvus --milvus-uri URI``. The id table and the
stored vectors stay local (they give labels, paths and exact scores), so the same checks apply.

``URI`` is a Milvus server or cluster (``http://host:19530``, with ``--milvus-token``) or a local
file such as ``milvus.db``, which runs Milvus Lite embedded (``pip install milvus-lite``).

:class:`MilvusIndex` looks like a faiss index to the rest of the code (``d``, ``ntotal``,
``search``), so :mod:`app.search` needs no special case.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from app.errors import AppError, IndexMismatchError, IndexMissingError

META_SUFFIX = "__meta"
INSERT_BATCH = 1000


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


class MilvusIndex:
    """A faiss-like view of one Milvus collection: ``search`` returns squared-L2-style distances."""

    def __init__(self, uri: str, collection: str, *, token: str = "", nprobe: int = 16) -> None:
        self.client = _client(uri, token)
        self.collection = collection
        self.cname = _name(collection)
        self.nprobe = nprobe
        if not self.client.has_collection(self.cname):
            raise IndexMissingError(
                f"Milvus at {uri} has no collection for {collection!r}.",
                hint=f"Push it with: python -m app.cli sync {collection} --uri {uri}",
            )
        try:  # a collection written by another process starts "released": load it before searching
            self.client.load_collection(self.cname)
            self.meta = read_meta(self.client, self.cname)
        except AppError:
            raise
        except Exception as exc:  # noqa: BLE001 - pymilvus raises its own untyped MilvusException
            raise AppError(f"Milvus at {uri} could not load {collection!r}: {exc}",
                           hint="Check that the server is running and reachable, then try again.") from exc
        self.d = int(self.meta["dim"])
        self.ntotal = int(self.meta["count"])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        res = self.client.search(
            self.cname, data=[q for q in queries], limit=int(k), output_fields=["id"],
            search_params={"metric_type": "COSINE", "params": {"nprobe": self.nprobe}},
        )
        dist = np.full((len(queries), k), np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, hits in enumerate(res):
            for j, hit in enumerate(list(hits)[:k]):
                ids[qi, j] = int(hit["id"])
                dist[qi, j] = 2.0 - 2.0 * float(hit["distance"])  # cosine -> squared L2 on unit vectors
        return dist, ids


def read_meta(client, cname: str) -> dict[str, Any]:
    meta_name = cname + META_SUFFIX
    if not client.has_collection(meta_name):
        raise IndexMismatchError(f"The Milvus collection {cname} has no metadata; push it again with sync.")
    client.load_collection(meta_name)
    rows = client.query(meta_name, filter="id == 0", output_fields=["meta"])
    if not rows:
        raise IndexMismatchError(f"The Milvus collection {cname} has empty metadata; push it again with sync.")
    return json.loads(rows[0]["meta"])


def sync(features_dir, collection: str, uri: str, *, token: str = "", index_type: str = "AUTOINDEX",
         nlist: int = 128, progress: bool = True) -> dict[str, Any]:
    """(Re)create the Milvus collection for ``collection`` from its stored features."""
    from pymilvus import DataType

    from app.core.features import load_features

    vectors, table = load_features(features_dir, collection)
    client = _client(uri, token)
    cname = _name(collection)
    for name in (cname, cname + META_SUFFIX):
        if client.has_collection(name):
            client.drop_collection(name)

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
    params = client.prepare_index_params()
    extra = {"nlist": nlist} if index_type.startswith("IVF") else {}
    params.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=extra)
    client.create_collection(cname, schema=schema, index_params=params)
    n = len(vectors)
    for start in range(0, n, INSERT_BATCH):
        block = np.asarray(vectors[start : start + INSERT_BATCH], dtype=np.float32)
        client.insert(cname, [{"id": start + i, "vector": v} for i, v in enumerate(block)])
        if progress:
            print(f"\rpushed {min(n, start + INSERT_BATCH)}/{n}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)

    meta = {"collection": collection, "dim": int(vectors.shape[1]), "count": n, "weights_id": table.weights_id,
            "fingerprint": table.fingerprint, "index_type": index_type}
    mschema = client.create_schema(auto_id=False)
    mschema.add_field("id", DataType.INT64, is_primary=True)
    mschema.add_field("meta", DataType.VARCHAR, max_length=4096)
    mschema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    mparams = client.prepare_index_params()
    mparams.add_index(field_name="v", index_type="FLAT", metric_type="L2")
    client.create_collection(cname + META_SUFFIX, schema=mschema, index_params=mparams)
    client.insert(cname + META_SUFFIX, [{"id": 0, "meta": json.dumps(meta), "v": [0.0, 0.0]}])
    client.flush(cname)
    return meta
