"""Committing a build: its features and index replace the previous ones at one moment, the manifest write.

1. ``extract_features(publish=False)`` stages ``NAME.npy``/``NAME.json`` in ``features/NAME.parts/``
   (the chunks stay, to resume from);
2. :func:`commit_build`: ``save_index`` stages ``NAME.faiss.next``, writes ``NAME.manifest.json`` with
   the sha256 of all three files (the commit), and moves the index into place;
3. then the features are moved into place and the parts removed (``publish_features``).

Stopped before the manifest is written (``kill -9``, a full disk), a build leaves the previous
collection exactly as it was; stopped after, the new one loads, each file from wherever its checksum
matches (:func:`app.core.features.load_verified_features`, :func:`app.index.faiss_store.read_verified_index`),
and the next build first finishes the moves (:func:`roll_forward`). Every step writes atomically.
"""

from __future__ import annotations

from typing import Any, Mapping

from app.config import Config
from app.core.feature_files import feature_paths, file_sha256, publish_features, staged_checksums, staged_paths
from app.core.manifest import Manifest
from app.errors import IndexMismatchError, IndexMissingError
from app.files.atomic import remove_stale_temps
from app.index.faiss_store import (
    FaissStore,
    finish_staged_index,
    index_path,
    manifest_path,
    read_manifest,
    staged_index_path,
)


def commit_build(config: Config, name: str, index: Any, fields: Mapping[str, Any]) -> Manifest:
    """Save ``index`` with the manifest ``fields`` plus the staged features' checksums, then publish them."""
    store = FaissStore(config.indexes_dir, name, index,
                       manifest={**fields, **staged_checksums(config.features_dir, name)})
    store.save()
    publish_features(config.features_dir, name)
    assert store.manifest is not None
    return store.manifest


def roll_forward(config: Config, name: str) -> None:
    """Finish a build of ``name`` that was stopped after its commit (its staged files go into place),
    and remove the temp files of writes that a killed build left. Call it holding the build lock."""
    for path in (index_path(config.indexes_dir, name), staged_index_path(config.indexes_dir, name),
                 manifest_path(config.indexes_dir, name), *feature_paths(config.features_dir, name)):
        remove_stale_temps(path)
    finish_staged_index(config.indexes_dir, name)
    try:
        manifest = read_manifest(config.indexes_dir, name)
    except (IndexMissingError, IndexMismatchError):
        return
    npy, table = staged_paths(config.features_dir, name)
    if (manifest.features_sha256 and npy.is_file() and table.is_file()
            and file_sha256(npy) == manifest.features_sha256 and file_sha256(table) == manifest.table_sha256):
        publish_features(config.features_dir, name, drop_parts=False)  # the build resumes from its chunks
