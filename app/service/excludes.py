"""A collection's exclude patterns (``--exclude GLOB``, :mod:`app.core.exclude`), stored with it so that
an update, an ``add`` or the folder watcher scans with the same ones. They live in the manifest under
``"exclude"`` (a list of gitignore-style patterns; the defaults and the folder's ``.risignore`` are not
stored: those are read on every scan).
"""

from __future__ import annotations

from typing import Sequence

from app.config import Config
from app.core.manifest import Manifest
from app.errors import IndexMismatchError, IndexMissingError
from app.index.faiss_store import read_manifest

EXCLUDE_KEY = "exclude"


def manifest_excludes(manifest: Manifest) -> tuple[str, ...]:
    """The patterns ``manifest`` records (none for a collection built before they were stored)."""
    value = manifest.extra.get(EXCLUDE_KEY) or []
    return tuple(p for p in value if isinstance(p, str))


def stored_excludes(config: Config, name: str) -> tuple[str, ...]:
    """The patterns the collection ``name`` was last built with (none when it does not exist yet)."""
    try:
        return manifest_excludes(read_manifest(config.indexes_dir, name))
    except (IndexMissingError, IndexMismatchError):
        return ()


def with_excludes(manifest: Manifest, patterns: Sequence[str]) -> Manifest:
    """``manifest`` recording ``patterns``."""
    return manifest.with_(extra={**manifest.extra, EXCLUDE_KEY: list(patterns)})
