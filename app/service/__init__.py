"""Layer 5, service: what the CLI and the UI call. Building a collection (:func:`build_collection`
from a :class:`BuildSpec`; incremental when it exists), managing collections (:mod:`app.service.library`:
index a folder, add, delete, count, rename, drop, with progress and cancellation), the catalogue of
built collections, searching them (:class:`SearchService`), and getting the app ready (:func:`prepare`).
"""

from app.service.build import BuildResult, BuildSpec, build_collection, quantize_for_collection
from app.service.catalogue import Catalogue, Collection, CollectionInfo, open_store
from app.service.filters import SearchFilter, parse_filter, search_filtered
from app.service.library import (
    DropSummary,
    RenameSummary,
    add_paths,
    count_items,
    delete_items,
    drop_collection,
    index_folder,
    rename_collection,
    update_collection,
)
from app.service.prepare import prepare
from app.service.progress import Progress
from app.service.query_image import QueryImage, prepare_query
from app.service.search import Hit, Searcher, SearchResult, SearchService
from app.service.update import ChangeSummary
from app.service.watch import FolderWatcher, WatchStatus

__all__ = [
    "BuildResult",
    "BuildSpec",
    "Catalogue",
    "ChangeSummary",
    "Collection",
    "CollectionInfo",
    "DropSummary",
    "FolderWatcher",
    "Hit",
    "Progress",
    "QueryImage",
    "RenameSummary",
    "SearchFilter",
    "SearchResult",
    "SearchService",
    "Searcher",
    "WatchStatus",
    "add_paths",
    "build_collection",
    "count_items",
    "delete_items",
    "drop_collection",
    "index_folder",
    "open_store",
    "parse_filter",
    "prepare",
    "prepare_query",
    "quantize_for_collection",
    "rename_collection",
    "search_filtered",
    "update_collection",
]
