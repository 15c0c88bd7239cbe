"""The one vector-store interface: what the search service needs from a nearest-neighbour index.

Two stores implement it: :class:`app.index.faiss_store.FaissStore` (a local faiss index and its
manifest) and :class:`app.index.milvus_store.MilvusIndex` (a Milvus collection, a server or Milvus
Lite). The search service talks to either through these methods only.

Conventions, the same for every store:

* **ids** are the collection's row ids (the rows of its feature table), ``int64``;
* **vectors** are L2-normalised ``float32`` rows of the store's dimension;
* :meth:`VectorStore.search` returns ``(distances, ids)``, both of shape ``(n, k)``, best first:
  squared L2 distances on unit vectors (``2 - 2 * cosine``), ``float32``; where fewer than ``k``
  results exist the id is ``-1`` and the distance ``+inf``, as faiss pads;
* adding an id that is already stored is not checked (remove it first);
* an operation a store cannot do raises :class:`app.errors.UnsupportedOperationError`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorStore(Protocol):
    """A nearest-neighbour index over one collection's vectors."""

    @property
    def dim(self) -> int:
        """The dimension of the vectors."""
        ...

    def count(self) -> int:
        """How many vectors are stored."""
        ...

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Store ``vectors`` (shape ``(n, dim)``) under ``ids`` (shape ``(n,)``)."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove the vectors stored under ``ids``; returns how many were there."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k >= 1`` nearest stored vectors of each row of ``queries`` (shape ``(n, dim)``)."""
        ...

    def save(self) -> None:
        """Make what was added and removed durable, with the store's metadata (faiss: write the index
        file and its manifest; Milvus: flush and record the metadata)."""
        ...

    def load(self) -> None:
        """(Re)open the stored index and check it (faiss: read and verify the files; Milvus: connect,
        load the collection and read its metadata)."""
        ...


def cosine_scores(distances: np.ndarray) -> np.ndarray:
    """Cosine similarities of the squared L2 distances :meth:`VectorStore.search` returns (``-inf`` for padding)."""
    return (1.0 - np.asarray(distances, dtype=np.float32) / 2.0).astype(np.float32)
