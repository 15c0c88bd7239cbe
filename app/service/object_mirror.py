"""A collection's object vectors in Milvus (``--backend milvus``): a second Milvus collection beside the
photos', ``ris_NAME__objects``, holding object ``i`` of the local object store under id ``i``.

The local object store (:mod:`app.service.objects`) stays the source of truth. After each change to it
(:mod:`app.service.object_upkeep`), :func:`mirror_objects` pushes it again whole (object ids are positions
in the store, which a change renumbers; the store is small: a few objects per photo), recording the
vectors' sha256 as the copy's fingerprint. A search through Milvus (:func:`milvus_candidates`) refuses a
copy whose fingerprint is not the local store's, saying how to push it again; rename and drop carry it
(:meth:`app.service.milvus_mirror.MilvusMirror.rename` / ``drop``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from app.config import Config
from app.errors import IndexMismatchError, IndexMissingError
from app.index.milvus_store import MilvusIndex, push
from app.service.objects import load_objects, record_path

SUFFIX = "__objects"


def objects_name(name: str) -> str:
    """The Milvus-side collection name of ``name``'s objects."""
    return name + SUFFIX


def _fingerprint(config: Config, name: str) -> str:
    try:
        return str(json.loads(record_path(config, name).read_text(encoding="utf-8"))["vectors_sha256"])
    except (OSError, ValueError, KeyError):
        return ""


def mirror_objects(config: Config, name: str) -> dict[str, Any] | None:
    """Push ``name``'s object vectors to Milvus (None when there is no Milvus URI, or when it has none);
    :class:`~app.service.milvus_mirror.MilvusMirror` calls it."""
    if not config.milvus_uri:
        return None
    try:
        store = load_objects(config, name)
    except IndexMissingError:
        drop_objects_mirror(config, name)
        return None
    if not len(store):
        drop_objects_mirror(config, name)
        return {"count": 0, "uri": config.milvus_uri}
    meta = push(config.milvus_uri, objects_name(name), np.asarray(store.vectors, np.float32),
                np.arange(len(store), dtype=np.int64), weights_id=store.weights_id,
                fingerprint=_fingerprint(config, name), token=config.milvus_token, timeout=config.milvus_timeout_s,
                progress_bar=False)
    return {"count": meta["count"], "uri": config.milvus_uri}


def milvus_candidates(config: Config, name: str, vector: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` object ids Milvus finds nearest to ``vector`` (positions in the local store). Raises
    IndexMissingError when the objects were never pushed, IndexMismatchError when the copy is stale."""
    hint = f"Push them again with: python -m app.cli build ... --name {name} --objects --backend milvus"
    index = MilvusIndex(config.milvus_uri, objects_name(name), token=config.milvus_token,
                        timeout=config.milvus_timeout_s)
    if index.meta is None or index.meta.fingerprint != _fingerprint(config, name):
        raise IndexMismatchError(f"The object vectors of {name} in Milvus are not the local ones.", hint=hint)
    _, ids = index.search(np.asarray(vector, np.float32)[None], max(1, n))
    return np.asarray([int(i) for i in ids[0] if i >= 0], np.int64)


def rename_objects_mirror(config: Config, old: str, new: str) -> bool:
    """Rename ``old``'s objects in Milvus to ``new``'s (False when it had none there)."""
    try:
        index = MilvusIndex(config.milvus_uri, objects_name(old), token=config.milvus_token,
                            timeout=config.milvus_timeout_s)
    except (IndexMissingError, IndexMismatchError):
        return False
    index.rename(objects_name(new))
    return True


def drop_objects_mirror(config: Config, name: str) -> list[str]:
    """Drop ``name``'s objects from Milvus; the Milvus names dropped."""
    return MilvusIndex(config.milvus_uri, objects_name(name), token=config.milvus_token,
                       timeout=config.milvus_timeout_s, connect=False).drop()
