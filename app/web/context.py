"""What every handler group shares: :class:`Context`, the search service, the settings, the work
folder for query images, the thumbnail cache, the toast callback, and the collections found at start-up
(which exist, which are ready to search, which model is running)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from app.config import Config
from app.core.thumbnails import Thumbnails
from app.errors import IndexMissingError
from app.service.search import CollectionInfo, SearchService


class Context:
    """The service, the settings and the collections found at start-up, shared by every handler group."""

    def __init__(self, service: SearchService, config: Config, *, work_dir: str | Path | None = None,
                 toast: Callable[[str], None] | None = None) -> None:
        self.service = service
        self.config = config
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="ris-queries-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.thumbs = Thumbnails(Path(config.cache_dir) / "thumbnails")
        self.toast: Callable[[str], None] = toast or (lambda text: None)
        self.infos: list[CollectionInfo] = service.collections()

    def refresh(self) -> None:
        """Read the collections again (one was built, changed, renamed or dropped since)."""
        self.infos = self.service.collections()

    def existing(self, collection: str | None) -> str:
        """The name of ``collection`` if it exists (built or not), for changing it; a typed error otherwise."""
        info = self.info(collection)
        if info is None:  # made since the list was read?
            self.refresh()
            info = self.info(collection)
        if info is None:
            raise IndexMissingError(f"There is no collection named {collection}." if collection
                                    else "Choose a collection first.")
        return info.name

    def searchable(self, collection: str | None) -> str:
        """The name of ``collection`` if it is built for the running model, for searching it; otherwise a
        typed error saying how to build it."""
        info = self.info(collection)
        if (info is None or not info.ready) and collection:  # built (or renamed) since the list was read?
            self.refresh()
            info = self.info(collection)
        if info is None or not info.ready:
            if info is None and not collection:
                raise IndexMissingError("No collection is built yet.", hint="Build one; the page shows how.")
            if info is None:
                raise IndexMissingError(f"There is no collection named {collection}.")
            raise IndexMissingError(f"{info.name} is not built yet.", hint=f"Build it with: {info.build_command}")
        return info.name

    def info(self, name: str | None) -> CollectionInfo | None:
        return next((i for i in self.infos if i.name == name), None)

    def ready(self) -> list[str]:
        return [i.name for i in self.infos if i.ready]

    @property
    def running_model(self) -> str:
        return self.service.embedder.model.name

    def engine(self) -> str:
        weights = self.config.weights
        if weights not in ("imagenet", "untrained"):
            weights = Path(weights).name
        return f"{self.running_model} · {self.service.embedder.engine or 'model not loaded'} · {weights} weights"
