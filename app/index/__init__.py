"""Layer 4, index: nearest-neighbour indexes behind one interface, :class:`VectorStore`.

The faiss store (an index file plus its checked manifest; training, PCA, search parameters), the
Milvus store (a server or Milvus Lite), and the tuner that picks the smallest faiss IVFPQ
configuration reaching a recall target.
"""

from app.index.faiss_index import IndexConfig, build_index
from app.index.faiss_store import FaissStore, build_command, list_indexes, load_index, read_manifest, save_index
from app.index.milvus_store import MilvusIndex, MilvusMeta
from app.index.store import VectorStore
from app.index.tune import TuneReport, tune

__all__ = [
    "FaissStore",
    "IndexConfig",
    "MilvusIndex",
    "MilvusMeta",
    "TuneReport",
    "VectorStore",
    "build_command",
    "build_index",
    "list_indexes",
    "load_index",
    "read_manifest",
    "save_index",
    "tune",
]
