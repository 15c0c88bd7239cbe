"""Layer 5, service: what the CLI and the UI call. Building a collection (:func:`build_collection`
from a :class:`BuildSpec`; incremental when it exists), managing collections (:mod:`app.service.library`:
index a folder, add, delete, count, rename, drop, with progress and cancellation), the catalogue of
built collections, searching them (:class:`SearchService`), and getting the app ready (:func:`prepare`).

Import from the modules themselves (``from app.service.MODULE import NAME``): this package re-exports
nothing, so importing one of its modules never loads the others.
"""
