"""An incremental change to a built collection: apply a :class:`~app.core.changes.ChangePlan`.

Only the new and changed files go through the model (resumably, in ``features/NAME.update.parts``);
a new file whose content the collection already holds (a copy, a move) reuses the stored vector.
The old rows stay (tombstones keep every id stable), the new ones are appended, the faiss index is
updated in place or trained again (:mod:`app.service.reindex`), and everything is committed as the
next generation through the collection's store (:mod:`app.service.collection_store`). :class:`ChangeSummary` says what happened.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from app.core.changes import ChangePlan
from app.core.datasets import Dataset, Item
from app.core.embed import Embedder
from app.core.feature_table import FeatureTable
from app.core.features import EmbedOptions, embed_dataset, remove_parts
from app.errors import IndexMismatchError
from app.files.vector_file import AppendedRows
from app.service import dba
from app.service.commit import State
from app.service.progress import CancelFn, Reporter
from app.service.reindex import update_index

if TYPE_CHECKING:
    from app.service.collection_store import CollectionStore


@dataclass(frozen=True)
class ChangeSummary:
    """What a build, an update, an add or a delete did to a collection."""

    collection: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    count: int = 0  # valid images afterwards
    skipped: tuple[dict[str, str], ...] = ()  # {"path", "reason"}
    seconds: float = 0.0
    model: str = ""
    weights_id: str = ""
    full_build: bool = False  # built from scratch (no compatible collection existed)
    index: str = "unchanged"  # "unchanged", "updated in place", "retrained", "built"
    index_reason: str = ""  # why the index was (not) trained again
    embedded: int = 0  # images that went through the model
    reused: int = 0  # new files whose content the collection already held (no model run)
    added_ids: tuple[int, ...] = ()
    removed_ids: tuple[int, ...] = ()
    milvus: dict[str, Any] | None = None  # what was mirrored to Milvus (backend milvus)
    objects: dict[str, Any] | None = None  # the object vectors' refresh (app.service.object_upkeep), if any
    generation: int = 0
    previous_fingerprint: str = ""  # of the table before the change (Milvus mirrors from it)
    excluded: tuple[tuple[str, int], ...] = ()  # (exclude pattern, entries the scan left out)

    def line(self) -> str:
        return f"added {self.added}, changed {self.changed}, removed {self.removed}, unchanged {self.unchanged}"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = list(self.skipped)
        out["excluded"] = dict(self.excluded)
        out["summary"] = self.line()
        return out


@dataclass
class _NewRows:
    items: list[Item] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    embedded: int = 0
    reused: int = 0


@dataclass(frozen=True)
class ChangeOptions:
    """How a change plan is applied: the collection's dataset kind and image folder, the embedder (made
    on first use), progress and cancellation, and what the plan came from.

    ``full``: the plan came from a rescan of the whole collection (its skipped list replaces the
    table's); ``unexclude``/``exclude``: paths leaving/joining the table's ``excluded`` list;
    ``started``: when the change began (``perf_counter``), for its ``seconds``.
    """

    kind: str
    image_root: Path
    embedder: Callable[[], Embedder]
    reporter: Reporter
    cancel: CancelFn | None = None
    full: bool = True
    unexclude: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    started: float | None = None


def apply_plan(store: CollectionStore, state: State, plan: ChangePlan, options: ChangeOptions) -> ChangeSummary:
    """Apply ``plan`` to ``state`` and commit it through ``store`` (nothing is written when nothing changed)."""
    o = options
    t0 = time.perf_counter() if o.started is None else o.started
    table, name = state.table, state.name
    excluded = ([p for p in table.excluded if p not in set(o.unexclude)]
                + [p for p in o.exclude if p not in table.excluded])
    rows = _embed_new(store, state, plan, o) if plan.new_items else _NewRows()
    skipped = _skipped_after(table, plan, rows, o.full)
    added_paths = {it.path for it in plan.added}
    base = dict(collection=name, unchanged=plan.unchanged, model=state.manifest.model_name,
                weights_id=table.weights_id, added=sum(it.path in added_paths for it in rows.items),
                changed=len(plan.changed), removed=len(plan.removed), previous_fingerprint=table.fingerprint)
    if (not rows.items and not plan.retired and not plan.restamped and excluded == table.excluded
            and _by_path(skipped) == _by_path(table.skipped)):
        return ChangeSummary(**base, count=table.live_count, skipped=tuple(skipped), seconds=time.perf_counter() - t0,
                             generation=state.manifest.generation)
    new_ids = np.arange(len(table), len(table) + len(rows.items), dtype=np.int64)
    retired = np.asarray(plan.retired, dtype=np.int64)
    new_table = _next_table(table, plan, rows, skipped, excluded)
    vectors = state.vectors
    if rows.items:  # the stored rows stay where they are: the new ones are appended (app.files.vector_file)
        vectors = AppendedRows(state.vectors, np.stack(rows.vectors))
    manifest, index, index_state, reason, in_place = state.manifest, None, "unchanged", "", False
    if len(retired) or len(new_ids):  # the index changes too
        o.reporter.phase("indexing", total=len(retired) + len(new_ids))
        upd = update_index(store.files.indexes_dir, state.manifest, vectors, new_table.live_ids(), retired, new_ids)
        manifest, index = state.manifest.with_(**upd.fields), upd.index
        index_state = "retrained" if upd.decision.retrain else "updated in place"
        reason, in_place = upd.decision.reason, not upd.decision.retrain
    o.reporter.phase("saving")
    new_manifest = store.commit(manifest, new_table, vectors=vectors if rows.items else None, index=index,
                                index_in_place=in_place)
    remove_parts(store.files.update_parts)
    dba.refresh(store.config.features_dir, name, vectors, new_table.live_mask(), create=False,
                labels=dba.whitening_labels(new_table.kind, new_table.labels))  # only rows it touches
    return ChangeSummary(**base, count=new_table.live_count, skipped=tuple(skipped), seconds=time.perf_counter() - t0,
                         index=index_state, index_reason=reason, embedded=rows.embedded, reused=rows.reused,
                         added_ids=tuple(int(i) for i in new_ids), removed_ids=tuple(int(i) for i in retired),
                         generation=new_manifest.generation)


def _embed_new(store: CollectionStore, state: State, plan: ChangePlan, o: ChangeOptions) -> _NewRows:
    """The vectors of the plan's new items, in order: stored ones for known content, the model's for the rest."""
    table = state.table
    by_hash = {st.hash: i for i, st in enumerate(table.stamps) if st is not None and st.hash}
    todo = [it for it in plan.new_items if not (it.stamp and it.stamp.hash in by_hash)]
    embedded: dict[str, np.ndarray] = {}
    out = _NewRows()
    if todo:
        model = o.embedder()
        if model.weights_id != table.weights_id or model.dim != table.dim:
            raise IndexMismatchError(
                f"The collection {state.name!r} was built with {table.weights_id} ({table.dim}-d), not "
                f"{model.weights_id} ({model.dim}-d).",
                hint=f"Run with --model {state.manifest.model_name} and the same --weights.")
        o.reporter.phase("embedding", total=len(todo))
        dataset = Dataset(kind=o.kind, root=Path(table.dataset_root), image_root=o.image_root, items=tuple(todo))
        config = store.config
        vecs, sub, _ = embed_dataset(dataset, model, store.files.update_parts, state.name, EmbedOptions(
            batch_size=config.batch_size, workers=config.workers, progress_bar=False,
            on_batch=lambda done, total: o.reporter.step(done, total), cancel=o.cancel, allow_empty=True))
        embedded = {p: vecs[j] for j, p in enumerate(sub.paths)}
        out.skipped = list(sub.skipped)
        out.embedded = len(sub.paths)
    for it in plan.new_items:
        if it.stamp and it.stamp.hash in by_hash:
            out.items.append(it)
            out.vectors.append(np.asarray(state.vectors[by_hash[it.stamp.hash]], dtype=np.float32))
            out.reused += 1
        elif it.path in embedded:
            out.items.append(it)
            out.vectors.append(embedded[it.path])
    return out


def _by_path(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda s: s["path"])


def _skipped_after(table: FeatureTable, plan: ChangePlan, rows: _NewRows, full: bool) -> list[dict[str, Any]]:
    """The skip list after the change: this listing's (a full rescan), or the old one updated (an add)."""
    now = [s.to_json() for s in plan.skipped] + list(plan.failed) + rows.skipped
    if not full:
        looked_at = {s["path"] for s in now} | {it.path for it in plan.new_items}
        now = [s for s in table.skipped if s["path"] not in looked_at] + now
    return _by_path(now)


def _next_table(table: FeatureTable, plan: ChangePlan, rows: _NewRows, skipped: list[dict[str, str]],
                excluded: list[str]) -> FeatureTable:
    stamps = list(table.stamps)
    for i, st in plan.restamped.items():
        stamps[i] = st
    new = replace(
        table,
        paths=table.paths + [it.path for it in rows.items],
        labels=table.labels + [it.labels for it in rows.items],
        stamps=stamps + [it.stamp for it in rows.items],
        deleted=table.deleted | set(plan.retired),
        skipped=skipped,
        excluded=excluded,
        created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    )
    new.fingerprint = new.content_fingerprint()
    return new
