"""Layer 5, service: what the CLI and the UI call. Building a collection (:func:`build_collection`
from a :class:`BuildSpec`), the catalogue of built collections, searching them
(:class:`SearchService`), and getting the app ready to run (:func:`prepare`).
"""

from app.service.build import BuildResult, BuildSpec, build_collection, quantize_for_collection
from app.service.catalogue import Catalogue, Collection, CollectionInfo, open_store
from app.service.prepare import prepare
from app.service.query_image import QueryImage, prepare_query
from app.service.search import Hit, Searcher, SearchResult, SearchService

__all__ = [
    "BuildResult",
    "BuildSpec",
    "Catalogue",
    "Collection",
    "CollectionInfo",
    "Hit",
    "QueryImage",
    "SearchResult",
    "SearchService",
    "Searcher",
    "build_collection",
    "open_store",
    "prepare",
    "prepare_query",
    "quantize_for_collection",
]
