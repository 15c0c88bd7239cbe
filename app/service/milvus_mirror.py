"""A collection's mirror: none (:class:`LocalOnly`), or a Milvus copy kept in step with its local
tables (:class:`MilvusMirror`, ``--backend milvus``). :func:`app.service.collection_store.open_collection`
picks one, once, from the configuration; everything else asks the mirror it was given.

The local collection is the source of truth and is committed first; Milvus then gets the same
change: the ids the change retired are deleted and the new ids inserted, when Milvus holds exactly
the state before the change (its metadata's fingerprint is the previous local one). Otherwise (no
Milvus collection yet, or one left behind by an earlier failure) every valid vector is pushed again.
Either way the ids and the count in Milvus are then those of the local table, and the metadata
records the new fingerprint. If Milvus cannot be reached the local change stands and the error says
how to catch up (``python -m app.cli sync NAME``); searching the collection through Milvus refuses
the stale copy until then (:mod:`app.service.catalogue`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from app.config import Config
from app.core.embed import Embedder
from app.core.features import load_features
from app.core.manifest import Manifest
from app.errors import BackendUnavailableError, IndexMismatchError, IndexMissingError
from app.index.faiss_store import FaissStore, read_manifest
from app.index.milvus_store import MilvusIndex, push
from app.index.store import VectorStore
from app.service.commit import State, files_of, read_state
from app.service.object_mirror import drop_objects_mirror, milvus_candidates, mirror_objects, rename_objects_mirror

if TYPE_CHECKING:
    from app.service.update import ChangeSummary


def _milvus_uri(config: Config) -> str:
    if not config.milvus_uri:
        raise IndexMissingError("The Milvus backend needs --milvus-uri (http://host:19530, or a file path for "
                                "Milvus Lite).")
    return config.milvus_uri


def push_collection(config: Config, name: str, *, index_type: str | None = None, progress_bar: bool = False,
                    state: State | None = None) -> dict[str, Any]:
    """Push every valid vector of ``name`` to Milvus (the collection there is created again). Without a
    local manifest (features copied alone), the features' own files are read."""
    if state is None:
        try:
            state = read_state(config, name)
        except IndexMissingError:
            vectors, table = load_features(config.features_dir, name)
            state = State(name, None, table, vectors)  # type: ignore[arg-type]
    kw = {"index_type": index_type} if index_type else {}
    return push(_milvus_uri(config), name, state.vectors, state.table.live_ids(), weights_id=state.table.weights_id,
                fingerprint=state.table.fingerprint, token=config.milvus_token, timeout=config.milvus_timeout_s,
                progress_bar=progress_bar, **kw)


def mirror_change(config: Config, name: str, *, previous_fingerprint: str, added: Sequence[int],
                  removed: Sequence[int]) -> dict[str, Any]:
    """Apply a committed local change (``added``/``removed`` ids) to the Milvus copy of ``name``; returns
    ``{"mode": "incremental" | "full" | "unchanged", "count", "uri"}``."""
    uri = _milvus_uri(config)
    state = read_state(config, name)
    try:
        try:
            store = MilvusIndex(uri, name, token=config.milvus_token, timeout=config.milvus_timeout_s)
        except (IndexMissingError, IndexMismatchError):
            store = None
        in_step = (store is not None and store.meta is not None and store.meta.weights_id == state.table.weights_id
                   and store.meta.fingerprint in (previous_fingerprint, state.table.fingerprint))
        if not in_step or store is None:
            meta = push_collection(config, name, state=state)
            mode = "full"
        else:
            ids = [int(i) for i in added]
            if store.meta.fingerprint != state.table.fingerprint:
                store.remove(list(removed))
                if ids:
                    store.add(state.vectors[ids], ids)
            store.save(fingerprint=state.table.fingerprint)
            meta, mode = store.meta.to_json(), "incremental" if (ids or removed) else "unchanged"
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"The local collection {name!r} was changed, but its Milvus copy was not: {exc}",
            hint=f"When Milvus is back, run: python -m app.cli sync {name} --uri {uri}") from exc
    if meta["count"] != state.table.live_count:
        raise IndexMismatchError(f"Milvus holds {meta['count']} vectors of {name}, the local table "
                                 f"{state.table.live_count}.", hint=f"Run: python -m app.cli sync {name} --uri {uri}")
    return {"mode": mode, "count": meta["count"], "uri": uri}


# -- the mirrors: what a collection store asks ------------------------------------------------------


class LocalOnly:
    """No mirror: the collection is searched with its local faiss index."""

    phase = ""  # the progress phase of mirroring a change ("": nothing to do)

    def vector_store(self, config: Config, name: str, embedder: Embedder) -> tuple[VectorStore, Manifest]:
        store = FaissStore.open(config.indexes_dir, name, weights_id=embedder.weights_id, dim=embedder.dim,
                                model=embedder.model.name)
        assert store.manifest is not None
        return store, store.manifest

    def after_change(self, config: Config, summary: ChangeSummary) -> ChangeSummary:
        return summary

    def count(self, config: Config, state: State) -> int:
        return state.table.live_count

    def rename(self, config: Config, old: str, new: str) -> bool:
        return False

    def drop(self, config: Config, name: str) -> list[str]:
        return []

    def mirror_objects(self, config: Config, name: str) -> dict[str, Any] | None:
        """Push the collection's object vectors to the mirror (None: there is none)."""
        return None

    def object_candidates(self, config: Config, name: str, vector: np.ndarray, n: int) -> np.ndarray | None:
        """The mirror's ``n`` candidate objects for ``vector`` (None: search every object locally)."""
        return None


class MilvusMirror(LocalOnly):
    """A Milvus copy (a server, or Milvus Lite) of every change, searched instead of the local index
    when it holds the collection; one never pushed is searched locally."""

    phase = "milvus"

    def _index(self, config: Config, name: str, **kw: Any) -> MilvusIndex:
        return MilvusIndex(_milvus_uri(config), name, token=config.milvus_token, timeout=config.milvus_timeout_s,
                           **kw)

    def vector_store(self, config: Config, name: str, embedder: Embedder) -> tuple[VectorStore, Manifest]:
        """The Milvus copy of ``name``, checked against ``embedder`` and the local manifest. A Milvus server
        that cannot be reached is a :class:`~app.errors.BackendUnavailableError` (with retry advice);
        nothing is cached then, so the collection loads as soon as the server answers again."""
        try:
            return self._milvus_store(config, name, embedder)
        except IndexMissingError:
            if not files_of(config, name).manifest.exists():
                raise
            # Not pushed to Milvus (``app.cli sync``): a local collection, searched with its local index.
            return super().vector_store(config, name, embedder)

    def _milvus_store(self, config: Config, name: str, embedder: Embedder) -> tuple[VectorStore, Manifest]:
        store = self._index(config, name)
        meta = store.meta
        assert meta is not None
        if meta.weights_id != embedder.weights_id:
            raise IndexMismatchError(
                f"The {name} vectors in Milvus were made with weights {meta.weights_id!r}, "
                f"but the app is running with {embedder.weights_id!r}.",
                hint="Run with the same --model and --weights, or rebuild and sync again.",
            )
        if meta.dim != embedder.dim:
            raise IndexMismatchError(
                f"The {name} vectors in Milvus have dimension {meta.dim}, the model "
                f"{embedder.model.name} makes {embedder.dim}.",
                hint="Run with the model they were made with, or rebuild and sync again.",
            )
        local = read_manifest_or_none(config, name)
        if local is None:  # no local build: Milvus's own record
            return store, Manifest(name=name, weights_id=meta.weights_id, dim=meta.dim,
                                   count=meta.count, nprobe=store.nprobe)
        if meta.fingerprint and local.features_fingerprint and meta.fingerprint != local.features_fingerprint:
            raise IndexMismatchError(
                f"The {name} vectors in Milvus are not those of the local collection (changed since they were "
                "pushed).", hint=f"Push them again with: python -m app.cli sync {name} --uri {config.milvus_uri}")
        return store, local.with_(weights_id=meta.weights_id, dim=meta.dim, count=meta.count)

    def after_change(self, config: Config, summary: ChangeSummary) -> ChangeSummary:
        if summary.full_build:
            meta = push_collection(config, summary.collection)
            return replace(summary, milvus={"mode": "full", "count": meta["count"], "uri": config.milvus_uri})
        return replace(summary, milvus=mirror_change(config, summary.collection,
                                                     previous_fingerprint=summary.previous_fingerprint,
                                                     added=summary.added_ids, removed=summary.removed_ids))

    def count(self, config: Config, state: State) -> int:
        """The vectors Milvus holds, checked against the local table."""
        n = self._index(config, state.name).count()
        if n != state.table.live_count:
            raise IndexMismatchError(
                f"Milvus holds {n} vectors of {state.name}, the local table {state.table.live_count}.",
                hint=f"Push them again with: python -m app.cli sync {state.name} --uri {config.milvus_uri}")
        return n

    def rename(self, config: Config, old: str, new: str) -> bool:
        self._index(config, old).rename(new)
        rename_objects_mirror(config, old, new)  # its object vectors' copy, when it has one
        return True

    def drop(self, config: Config, name: str) -> list[str]:
        return self._index(config, name, connect=False).drop() + drop_objects_mirror(config, name)

    def mirror_objects(self, config: Config, name: str) -> dict[str, Any] | None:
        return mirror_objects(config, name)

    def object_candidates(self, config: Config, name: str, vector: np.ndarray, n: int) -> np.ndarray | None:
        """Objects never pushed to Milvus are searched locally, as a collection never pushed is."""
        try:
            return milvus_candidates(config, name, vector, n)
        except IndexMissingError:
            return None


def read_manifest_or_none(config: Config, name: str) -> Manifest | None:
    """The local manifest of ``name``, or None when there is no usable one."""
    try:
        return read_manifest(config.indexes_dir, name)
    except (IndexMissingError, IndexMismatchError):
        return None
