"""Keeping a collection's Milvus copy (``--backend milvus``) in step with its local tables.

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

from typing import Any, Sequence

from app.config import Config
from app.core.features import load_features
from app.errors import BackendUnavailableError, IndexMismatchError, IndexMissingError
from app.index.milvus_store import MilvusIndex, push
from app.service.commit import State, read_state


def _milvus_uri(config: Config) -> str:
    if not config.milvus_uri:
        raise IndexMissingError("The Milvus backend needs --milvus-uri (http://host:19530, or a file path for "
                                "Milvus Lite).")
    return config.milvus_uri


def push_collection(config: Config, name: str, *, index_type: str | None = None, progress: bool = False,
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
                progress=progress, **kw)


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
