"""Layer 5, service: what the CLI and the UI call. Building a collection (:func:`build_collection`
from a :class:`BuildSpec`; incremental when it exists), managing collections (:mod:`app.service.library`:
index a folder, add, delete, count, rename, drop, with progress and cancellation), the catalogue of
built collections, searching them (:class:`SearchService`), and getting the app ready (:func:`prepare`).
"""

from app.service.build import BuildResult, BuildSpec, build_collection, quantize_for_collection
from app.service.catalogue import Catalogue, Collection, CollectionInfo, open_store
from app.service.collection_store import CollectionStore, DropSummary, RenameSummary, open_collection
from app.service.detector_install import install_detector
from app.service.filters import SearchFilter, parse_filter
from app.service.library import (
    add_paths,
    count_items,
    delete_items,
    drop_collection,
    index_folder,
    rename_collection,
    update_collection,
)
from app.service.objects import ObjectStore, build_objects, load_objects, search_objects
from app.service.prepare import prepare
from app.service.progress import Progress
from app.service.query_image import QueryImage, prepare_query
from app.service.search import Hit, QueryResult, SearchService
from app.service.timings import Timings
from app.service.update import ChangeSummary
from app.service.watch import FolderWatcher, WatchStatus

__all__ = [
    "BuildResult",
    "BuildSpec",
    "Catalogue",
    "ChangeSummary",
    "Collection",
    "CollectionStore",
    "CollectionInfo",
    "DropSummary",
    "FolderWatcher",
    "Hit",
    "ObjectStore",
    "Progress",
    "QueryImage",
    "RenameSummary",
    "QueryResult",
    "SearchService",
    "Timings",
    "SearchFilter",
    "WatchStatus",
    "add_paths",
    "build_collection",
    "build_objects",
    "count_items",
    "delete_items",
    "drop_collection",
    "index_folder",
    "open_collection",
    "install_detector",
    "load_objects",
    "open_store",
    "parse_filter",
    "prepare",
    "prepare_query",
    "quantize_for_collection",
    "rename_collection",
    "search_objects",
    "update_collection",
]
