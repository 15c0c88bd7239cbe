"""Layer 4, index: nearest-neighbour indexes behind one interface, :class:`VectorStore`.

The faiss store (an index file plus its checked manifest; training, PCA, search parameters), in-place
updates of a built faiss index and the rule that says when to retrain it, the Milvus store (a server
or Milvus Lite), and the tuner that picks the smallest faiss IVFPQ configuration reaching a recall target.
"""

from app.index.faiss_index import IndexConfig, build_index
from app.index.faiss_store import FaissStore, build_command, list_indexes, load_index, read_manifest, save_index
from app.index.faiss_update import add_rows, fill_index, live_count, remove_rows, retrain_decision
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
    "add_rows",
    "build_command",
    "build_index",
    "fill_index",
    "list_indexes",
    "live_count",
    "load_index",
    "read_manifest",
    "remove_rows",
    "retrain_decision",
    "save_index",
    "tune",
]
