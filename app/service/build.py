"""Building a collection end to end: list the images, embed them, tune and save the index.

``scripts/build_index.py`` and ``python -m app.cli build`` are thin command-line wrappers around
:func:`build_collection`, which takes what to build as one :class:`BuildSpec`.

**Incremental.** When the collection exists, built from the same folder with the same model, weights,
sample and index configuration, building it again is an incremental update: only new and changed
files are embedded, deleted ones are removed (:mod:`app.service.update`); a re-run with no change
reads no image and writes nothing. Otherwise (or with ``BuildSpec.rebuild``) it is built from scratch,
and committed as a new generation, so the old collection stays loadable until the new one is complete.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import Config
from app.core.changes import plan_changes
from app.core.datasets import Dataset, Item, load_dataset
from app.core.embed import Embedder, embedder_for
from app.core.features import CHUNK_SIZE, EmbedOptions, FeatureTable, embed_dataset, load_features, remove_parts
from app.core.manifest import Manifest
from app.core.photo_meta import missing_photo_meta
from app.core.quantize import CALIBRATION_IMAGES, calibration_files
from app.errors import IndexMismatchError, IndexMissingError
from app.files.layout import table_name, vectors_name
from app.index.faiss_index import IndexConfig
from app.index.tune import DEFAULT_MAX_MS, DEFAULT_TARGET_RECALL
from app.index.tune_large import choose_index, filled_index
from app.service import dba
from app.service.collection_store import CollectionStore, open_collection
from app.service.commit import State, check_name
from app.service.excludes import EXCLUDE_KEY, manifest_excludes, stored_excludes, with_excludes
from app.service.progress import CancelFn, ProgressFn, Reporter
from app.service.update import ChangeOptions, ChangeSummary, apply_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSpec:
    """What to build: the dataset (``kind`` layout in the folder ``data``), the collection name,
    the sample, and the index (a fixed ``factory``/``nprobe``, or tuned to ``target_recall`` at
    ``max_ms`` per query)."""

    kind: str  # a layout of app.core.datasets: "caltech101", "voc2012", "folder"
    data: str | Path
    name: str | None = None  # default: kind
    limit: int | None = None  # a deterministic sample of this many images
    include: tuple[str, ...] = ()  # Caltech101: folders left out by default
    factory: str | None = None  # a fixed faiss factory string instead of tuning
    nprobe: int | None = None  # with factory (default 16)
    target_recall: float = DEFAULT_TARGET_RECALL
    max_ms: float = DEFAULT_MAX_MS
    chunk_size: int = CHUNK_SIZE  # images per saved chunk of features (resumable builds)
    rebuild: bool = False  # build from scratch even when an incremental update is possible
    exclude: tuple[str, ...] | None = None  # folders: exclude patterns (None: those the collection has stored)
    dba: bool = True  # database-side augmentation (features/NAME.dba.npz, app.service.dba) for re-ranking

    @property
    def collection_name(self) -> str:
        """The collection's name."""
        return self.name or self.kind


@dataclass
class BuildResult:
    name: str
    manifest: Manifest
    stats: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    changes: ChangeSummary | None = None  # added, changed, removed, unchanged (every build has one)


def build_collection(config: Config, spec: BuildSpec, *, embedder: Embedder | None = None,
                     progress_bar: bool = True, on_chunk: Callable[[int], None] | None = None,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> BuildResult:
    """Build, resume building, or incrementally update the collection ``spec`` describes (module docstring).

    With ``spec.factory`` the index configuration is fixed; otherwise it is tuned to
    ``spec.target_recall`` (recall@5 against exact search) at ``spec.max_ms`` per query.
    ``progress_bar``: a progress bar on stderr; ``progress``/``cancel``: see :mod:`app.service.progress`.
    ``on_chunk(chunk_no)`` is called after each saved chunk of features (tests use it to simulate a kill).
    """
    t0 = time.perf_counter()
    name = check_name(spec.collection_name)
    reporter = Reporter(progress)
    reporter.phase("scanning")
    if spec.exclude is None:
        spec = replace(spec, exclude=stored_excludes(config, name))
    dataset = load_dataset(spec.kind, spec.data, limit=spec.limit, include=spec.include, exclude=spec.exclude)
    make_embedder = _lazy(embedder, config)
    store = open_collection(config, name)
    with store.lock():
        existing, generation = _existing(store)
        if existing is not None and _incremental(existing, spec, dataset, make_embedder):
            plan = plan_changes(existing.table, dataset.items, dataset.image_root, listed_skips=dataset.skipped,
                                cancel=cancel, on_hashed=lambda n: reporter.step(n, 0))
            # a commit even when no file changed: new exclude patterns, or metadata a migrated table lacks
            must_commit = manifest_excludes(existing.manifest) != spec.exclude or missing_photo_meta(existing.table)
            existing = replace(existing, manifest=with_excludes(existing.manifest, spec.exclude))
            changes = apply_plan(store, existing, plan, ChangeOptions(
                kind=spec.kind, image_root=dataset.image_root, embedder=make_embedder, reporter=reporter,
                cancel=cancel, started=t0))
            if must_commit and changes.generation == existing.manifest.generation:  # nothing else changed
                store.commit(existing.manifest, existing.table)
            changes = replace(changes, excluded=dataset.excluded)
            manifest = store.manifest()
            store.remove_stale_files(manifest)  # what a build killed after its commit left behind:
            remove_parts(store.files.parts)  # old generations, temp files, its resumable parts
            stats = {"images": len(dataset.items), "embedded": changes.embedded, "skipped": len(changes.skipped),
                     "resumed_rows": 0, "seconds": changes.seconds, "img_per_s": 0.0, "incremental": True}
            return BuildResult(name, manifest, stats, list(changes.skipped), changes)
        return _full_build(store, spec, dataset, make_embedder(), generation, reporter, progress_bar=progress_bar,
                           on_chunk=on_chunk, cancel=cancel, started=t0)


def _lazy(embedder: Embedder | None, config: Config) -> Callable[[], Embedder]:
    """The embedder, made on first use: a re-run with nothing to embed never loads a model."""
    made: list[Embedder] = [embedder] if embedder is not None else []

    def get() -> Embedder:
        if not made:
            made.append(embedder_for(config))
        return made[0]

    return get


def _existing(store: CollectionStore) -> tuple[State | None, int]:
    """(the collection's current state, or None when there is none or it is unusable; the generation
    a full build writes: the next one when a manifest exists, so the old files stay until it is done)."""
    try:
        manifest = store.manifest()
    except (IndexMissingError, IndexMismatchError):
        return None, 0
    try:
        return store.read_state(full_check=True), manifest.generation + 1  # a build reads every checksum
    except (IndexMissingError, IndexMismatchError):
        return None, manifest.generation + 1


def _incremental(state: State, spec: BuildSpec, dataset: Dataset, embedder: Callable[[], Embedder]) -> bool:
    """Whether building ``spec`` again is an incremental update of ``state`` (same source, sample, model, index)."""
    m, table = state.manifest, state.table
    model = embedder()
    return (not spec.rebuild and m.kind == spec.kind and table.image_root == str(dataset.image_root)
            and m.weights_id == model.weights_id and m.dim == model.dim and table.dim == model.dim
            and m.limit == spec.limit and tuple(m.include) == tuple(spec.include)
            and (spec.factory is None or (spec.factory == m.factory and (spec.nprobe or 16) == m.nprobe)))


def _full_build(store: CollectionStore, spec: BuildSpec, dataset: Dataset, embedder: Embedder, generation: int,
                reporter: Reporter, *, progress_bar: bool, on_chunk: Callable[[int], None] | None,
                cancel: CancelFn | None, started: float) -> BuildResult:
    name = spec.collection_name
    empty = FeatureTable(name, spec.kind, str(dataset.root), str(dataset.image_root), embedder.weights_id, [], [])
    reporter.phase("reading", total=len(dataset.items))
    plan = plan_changes(empty, dataset.items, dataset.image_root, listed_skips=dataset.skipped, cancel=cancel,
                        on_hashed=lambda n: reporter.step(n, len(dataset.items)))
    dataset = Dataset(dataset.kind, dataset.root, dataset.image_root, plan.added, plan.skipped, dataset.excluded)
    if getattr(embedder, "wants_int8", False) and not embedder.loaded:
        # The INT8 model is calibrated on a sample of this collection (made once, then cached).
        embedder.calibrate(calibration_files(dataset.image_root, dataset.items),
                           source=f"{name}: {dataset.image_root}")
    reporter.phase("embedding", total=len(dataset.items))
    config = store.config
    vectors, table, stats = embed_dataset(dataset, embedder, store.files.parts, name, EmbedOptions(
        batch_size=config.batch_size, workers=config.workers, progress_bar=progress_bar, on_chunk=on_chunk,
        chunk_size=spec.chunk_size, cancel=cancel, on_batch=lambda done, total: reporter.step(done, total)))
    reporter.phase("indexing")
    t = time.perf_counter()
    index, chosen, tuning = make_index(vectors, spec)
    stats["index_seconds"] = time.perf_counter() - t
    reporter.phase("saving")
    fields = {**manifest_fields(spec, embedder, dataset, table, chosen, tuning), "trained_count": len(table),
              "updates_since_training": 0}
    manifest = store.commit(fields, table, vectors=vectors, index=index, generation=generation)
    remove_parts(store.files.parts)
    dba.remove(config.features_dir, name)  # a new build: the old rows' augmentation means nothing now
    if spec.dba:
        dba.refresh(config.features_dir, name, vectors, table.live_mask(), create=True, labels=dba.whitening_labels(table.kind, table.labels))
    changes = ChangeSummary(name, added=len(table), count=len(table), skipped=tuple(table.skipped),
                            seconds=time.perf_counter() - started, model=embedder.model.name,
                            weights_id=embedder.weights_id, full_build=True, index="built", embedded=len(table),
                            added_ids=tuple(range(len(table))), generation=manifest.generation,
                            excluded=dataset.excluded)
    return BuildResult(name=name, manifest=manifest, stats=stats, skipped=table.skipped, changes=changes)


def quantize_for_collection(config: Config, name: str, *, images: int = CALIBRATION_IMAGES,
                            embedder: Embedder | None = None) -> dict[str, Any]:
    """Make (or find in the cache) the INT8 model of ``config``'s model and weights, calibrated on
    ``images`` images of the built collection ``name`` (any model's build: only its images are used).
    Returns what was made: model, weights id, the INT8 file and its calibration record."""
    try:
        table = open_collection(config, name).read_state().table
    except IndexMissingError:  # features without their index (copied alone): their own file names
        table = load_features(config.features_dir, name)[1]
    items = [Item(table.paths[i], table.labels[i]) for i in table.live_ids().tolist()]
    embedder = embedder or Embedder(config.weights, model=config.model, engine="onnx-int8", threads=config.threads,
                                    cache_dir=config.cache_dir)
    embedder.calibrate(calibration_files(table.image_root, items, images), source=f"{name}: {table.image_root}")
    embedder.load()
    return {"model": embedder.model.name, "weights_id": embedder.weights_id, "int8_model": str(embedder.int8_model),
            "calibration": embedder.int8_info}


def make_index(vectors: np.ndarray, spec: BuildSpec) -> tuple[Any, IndexConfig, dict[str, Any]]:
    """(index holding ``vectors``, its configuration, the manifest's ``tuning`` record)."""
    if spec.factory:  # trained on a sample of a large collection, filled in batches (no whole copies)
        chosen = IndexConfig(spec.factory, spec.nprobe or 16)
        return filled_index(vectors, chosen, 1).index, chosen, {"fixed": True}
    index, report = choose_index(vectors, target_recall=spec.target_recall, max_ms=spec.max_ms)
    assert report.chosen is not None
    return index, report.chosen.config, report.to_json()


def manifest_fields(spec: BuildSpec, embedder: Embedder, dataset: Dataset, table: FeatureTable,
                    chosen: IndexConfig, tuning: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a build records (save_index adds those it reads from the index file)."""
    name = spec.collection_name
    return {
        "kind": spec.kind,
        "model": embedder.model.name,
        "model_description": embedder.model.description,
        "weights_id": embedder.weights_id,
        "weights_arg": embedder.spec.arg(),
        "engine": embedder.engine,
        "factory": chosen.factory,
        "nprobe": chosen.nprobe,
        "k_factor": chosen.k_factor,
        "dataset_root": str(dataset.root),
        "image_root": str(dataset.image_root),
        "features": vectors_name(name),
        "table": table_name(name),
        # which build of the features this index was made from (checked when loading)
        "features_fingerprint": table.fingerprint,
        "features_created": table.created,
        "limit": spec.limit,
        "include": list(spec.include),
        "skipped": len(table.skipped),
        EXCLUDE_KEY: list(spec.exclude or ()),
        "tuning": tuning,
        # engine onnx-int8: what its INT8 model was calibrated on (kept in Manifest.extra)
        **({"int8_calibration": embedder.int8_info} if getattr(embedder, "int8_info", None) else {}),
    }
